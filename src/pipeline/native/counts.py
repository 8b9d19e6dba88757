"""The counts one transform reports, shared by the C and the Python implementation.

Both ``pipeline.native.compiled`` and ``pipeline.native.reference`` return this
one type, so code that switches implementation (``DataPipeline``, the tests)
compares and adds counts without knowing which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["TransformCounts"]


@dataclass(frozen=True, slots=True)
class TransformCounts:
    """How the items of one transform were classified.

    Every input item lands in exactly one field, so ``total`` equals the
    number of items transformed. Counts of consecutive batches add with ``+``.
    """

    ZERO: ClassVar[TransformCounts]

    kept: int
    negative: int
    invalid_input: int
    invalid_output: int

    @property
    def total(self) -> int:
        """Return the number of input items these counts describe."""
        return self.kept + self.negative + self.invalid_input + self.invalid_output

    def __add__(self, other: TransformCounts) -> TransformCounts:
        """Return the counts of two batches taken together."""
        if not isinstance(other, TransformCounts):
            return NotImplemented
        return TransformCounts(
            kept=self.kept + other.kept,
            negative=self.negative + other.negative,
            invalid_input=self.invalid_input + other.invalid_input,
            invalid_output=self.invalid_output + other.invalid_output,
        )


TransformCounts.ZERO = TransformCounts(kept=0, negative=0, invalid_input=0, invalid_output=0)
