"""The production transform in plain Python, and the counts both versions report.

This module is the readable statement of what ``csrc/transform.c`` computes,
item by item; ``pipeline.native.compiled`` runs the same transform in C. The tests
compare the two bit for bit, so a learner can read this loop and know exactly
what the fast path does:

    validation       drop x if it is NaN or +/-Inf        -> invalid_input
    business filter  drop x if x < 0                      -> negative
    transform        y = sqrt(x) * 2
    post-validation  drop y if it is NaN or +/-Inf        -> invalid_output
    output           keep y, in input order               -> kept

-0.0 is not negative (``-0.0 < 0`` is false), so it is kept and gives -0.0.
``math.sqrt`` and the C ``sqrt`` are both correctly rounded (IEEE-754), which
is why the results agree to the last bit. For IEEE doubles the
post-validation never drops anything (the largest result is
``sqrt(DBL_MAX) * 2``, about 2.7e154); it is kept because the stage's
contract names it.

The reference is about 50 times slower than the C core; select it explicitly
(``DataPipeline(implementation="reference")``) where the C extension cannot be
built. Nothing falls back to it silently.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["TransformCounts", "transform_reference"]


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


def transform_reference(values: Iterable[float]) -> tuple[array.array[float], TransformCounts]:
    """Transform ``values`` one item at a time, exactly as the C core does.

    Args:
        values: the input items, read once, in order.

    Returns:
        The kept results as a fresh ``array('d')`` in input order, and the counts.

    Raises:
        TypeError: if an item is not a real number.
    """
    output: array.array[float] = array.array("d")
    negative = invalid_input = invalid_output = 0
    for value in values:
        if not math.isfinite(value):
            invalid_input += 1
            continue
        if value < 0.0:
            negative += 1
            continue
        result = math.sqrt(value) * 2.0
        if not math.isfinite(result):
            invalid_output += 1
            continue
        output.append(result)
    counts = TransformCounts(
        kept=len(output),
        negative=negative,
        invalid_input=invalid_input,
        invalid_output=invalid_output,
    )
    return output, counts
