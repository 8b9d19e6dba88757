"""What happens to an item that fails: the error policies, dead letters, a failure budget.

A stage's error policy says what to do with an item that still fails after its retries:
- "raise" (the default, as the core does): stop the whole pipeline with a `StageError`;
- "skip": drop the item, count it, and log every so often;
- "collect": drop the item from the flow and put it, with its exception, in a
  `DeadLetters` sink that the caller can read during the run and after it.

A `FailureBudget`, shared by the stages of a pipeline, stops the run once too many items
have been skipped or collected, by count or by fraction, with a `FailureBudgetExceeded`
that says which limit was crossed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pipeline._checks import int_at_least, number, positive_int
from pipeline.resilience.errors import FailureBudgetExceeded

__all__ = ["DeadLetter", "DeadLetters", "ErrorPolicy", "FailureBudget", "check_error_policy"]

ErrorPolicy = Literal["raise", "skip", "collect"]
"""What a stage does with an item that fails: stop the run, drop it, or dead-letter it."""


def check_error_policy(value: object) -> ErrorPolicy:
    """Return `value` if it names an error policy.

    Raises:
        ValueError: it does not.
    """
    if value == "raise" or value == "skip" or value == "collect":
        return value
    raise ValueError(f"on_error must be 'raise', 'skip' or 'collect', got {value!r}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An item a stage gave up on: where, what, why, and after how many attempts."""

    stage: str
    item: object
    error: BaseException
    attempts: int


class DeadLetters:
    """A thread-safe sink of dead letters, readable while the pipeline runs and after.

    Stages append from their worker threads; the caller reads from any thread, with
    `snapshot()` (a copy, leaving the letters in place) or `drain()` (takes them out, for
    a long run that hands its failures on as it goes).
    """

    def __init__(self) -> None:
        # Guards _letters and _total (every letter ever appended, drained or not).
        self._lock = threading.Lock()
        self._letters: list[DeadLetter] = []
        self._total = 0

    def append(self, letter: DeadLetter) -> None:
        """Add a letter; called by a stage's worker thread."""
        with self._lock:
            self._letters.append(letter)
            self._total += 1

    def snapshot(self) -> list[DeadLetter]:
        """Return a copy of the letters held now, oldest first."""
        with self._lock:
            return list(self._letters)

    def drain(self) -> list[DeadLetter]:
        """Remove and return the letters held now, oldest first."""
        with self._lock:
            letters, self._letters = self._letters, []
            return letters

    @property
    def total(self) -> int:
        """How many letters were ever appended, including drained ones."""
        with self._lock:
            return self._total

    def __len__(self) -> int:
        """Return how many letters are held now (not counting drained ones)."""
        with self._lock:
            return len(self._letters)

    def __iter__(self) -> Iterator[DeadLetter]:
        """Iterate over a snapshot."""
        return iter(self.snapshot())

    def __repr__(self) -> str:
        return f"<DeadLetters held={len(self)}>"


class FailureBudget:
    """Stop the run once failed items exceed `max_failures`, or `max_fraction` of the items.

    Share one budget among the stages of a pipeline to make it pipeline-wide. It counts
    the items its stages processed and those they skipped or collected; the fraction is
    judged only once `min_items` have been processed, so one early failure does not stop
    a run. The counts accumulate over runs: use a new budget, or `reset()`, for each run.

    Args:
        max_failures: the most failed items tolerated; one more stops the run.
        max_fraction: the largest tolerated share of failed items, in (0, 1].
        min_items: items to process before the fraction is judged.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range, or
            neither limit is given.
    """

    def __init__(
        self,
        max_failures: int | None = None,
        *,
        max_fraction: float | None = None,
        min_items: int = 100,
    ) -> None:
        if max_failures is None and max_fraction is None:
            raise ValueError("a FailureBudget needs max_failures, max_fraction or both")
        if max_failures is not None:
            int_at_least("max_failures", max_failures, 0)
        if max_fraction is not None and not 0 < number("max_fraction", max_fraction) <= 1:
            raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
        self.max_failures = max_failures
        self.max_fraction = max_fraction
        self.min_items = positive_int("min_items", min_items)
        # Guards _items (items processed) and _failures (items skipped or collected).
        self._lock = threading.Lock()
        self._items = 0
        self._failures = 0

    @property
    def items(self) -> int:
        """Items processed by the stages sharing this budget, failed ones included."""
        with self._lock:
            return self._items

    @property
    def failures(self) -> int:
        """Items those stages skipped or collected."""
        with self._lock:
            return self._failures

    def record_items(self, count: int) -> None:
        """Count `count` more items as processed (once per batch), then judge the fraction.

        Raises:
            FailureBudgetExceeded: the failures are now too large a fraction.
        """
        with self._lock:
            self._items += count
            message = self._judge()
        if message:
            raise FailureBudgetExceeded(message)

    def record_failure(self) -> None:
        """Count one failed item, then judge both limits.

        Raises:
            FailureBudgetExceeded: a limit is exceeded; the message names it.
        """
        with self._lock:
            self._failures += 1
            message = self._judge()
        if message:
            raise FailureBudgetExceeded(message)

    def reset(self) -> None:
        """Forget the counts, to reuse the budget for another run."""
        with self._lock:
            self._items = self._failures = 0

    def __repr__(self) -> str:
        return (
            f"FailureBudget(max_failures={self.max_failures}, max_fraction={self.max_fraction}, "
            f"min_items={self.min_items})"
        )

    def _judge(self) -> str:
        """Return why the budget is exceeded, or ""; called with the lock held."""
        failures, items = self._failures, self._items
        if self.max_failures is not None and failures > self.max_failures:
            return f"{failures} items failed, more than max_failures={self.max_failures}"
        if (
            self.max_fraction is not None
            and items >= self.min_items
            and failures > self.max_fraction * items
        ):
            return (
                f"{failures} of {items} items failed "
                f"({failures / items:.1%}), more than max_fraction={self.max_fraction}"
            )
        return ""
