"""The batch-size policy: how many items a thread takes in one handoff.

A thread (a stage's worker or the source reader) starts by taking one item, then
doubles its take while a batch takes less than `TARGET_BATCH_SECONDS` to process, and
halves it when a batch takes much longer. Fast stages reach the full batch size within
a few batches, so handoffs stay cheap; slow stages take few items at a time, so latency
stays low and the items spread over all workers. Under a byte budget (a pipeline's
`queue_bytes`), `byte_capped` keeps a batch of large items within its share of it.

`AdaptiveBatcher` is the other policy: it sizes batches toward a latency objective
(AIMD), for a sink's writes to a database, and for a stage that must answer in time.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pipeline._checks import int_at_least, number, positive_int

__all__ = [
    "TARGET_BATCH_SECONDS",
    "AdaptiveBatcher",
    "BatcherStatistics",
    "byte_capped",
    "next_batch_size",
]

TARGET_BATCH_SECONDS: Final = 0.002


def next_batch_size(size: int, taken: int, elapsed: float, max_size: int) -> int:
    """Return the next take size, given that `taken` items (of `size` asked) took `elapsed` s."""
    if elapsed > 2 * TARGET_BATCH_SECONDS:
        return max(1, size // 2)
    if taken == size and elapsed < TARGET_BATCH_SECONDS:
        return min(max_size, size * 2)
    return size


def byte_capped(budget: int, taken: int, *batches: Sequence[object]) -> int:
    """Return how many items like the last `taken` fit in `budget` bytes (at least 1).

    Each of `batches` (a batch's inputs, its outputs) weighs its length times
    `sys.getsizeof` of its first item; the heaviest counts, so a stage whose outputs
    are larger than its inputs (a fetch returning pages) is sized by its outputs.
    """
    heaviest = max((len(batch) * sys.getsizeof(batch[0]) for batch in batches if batch), default=0)
    return max(1, taken * budget // max(1, heaviest))


class AdaptiveBatcher:
    """Size write batches so that each one meets a latency objective: AIMD (additive
    increase, multiplicative decrease), as TCP sizes its window (Chiu & Jain, 1989).

    After each batch, `record_batch` compares its latency with the aim, a little under
    `target_seconds` (`target_seconds * headroom`): under the aim, and the batch was full
    size, the size grows by `increase` items; over the aim, it shrinks by the factor
    `decrease`; always clamped to [`minimum`, `maximum`]. Aiming under the objective
    matters: on a workload of 100 us + 2 us per item with a 1 ms objective, aiming at
    the objective itself leaves about a quarter of the batches just over it (24% of
    the last 50 in `tests/core/test_batching.py`'s simulation of that workload). The last
    `window` batches are kept for `statistics()` (mean size and latency, share over
    the objective). Nothing here sleeps or reads a clock: the caller times its writes.

    Use it around a sink's writes:

        batcher = AdaptiveBatcher(target_seconds=0.005)
        while pending:
            size = batcher.plan_batch(len(pending))
            started = time.perf_counter()
            write(pending[:size])
            batcher.record_batch(size, time.perf_counter() - started)
            del pending[:size]

    The engine can drive a stage's take size the same way (one batcher per worker:
    `plan_batch(max_batch)` before taking, `record_batch(taken, busy_seconds)` after
    processing), which is what a stage option `latency_target=` would do.

    Thread-safe: one lock guards the size and the window, so writers in several threads
    may share a batcher (each batch still counts once).

    Args:
        target_seconds: the latency objective of one batch.
        initial: the first batch size (clamped to [minimum, maximum]).
        minimum, maximum: the bounds of the batch size.
        increase: items added after a full batch under the aim (additive increase).
        decrease: the factor applied after a batch over the aim, in (0, 1).
        headroom: the aim as a share of the objective, in (0, 1].
        window: how many recent batches `statistics()` describes.

    Raises:
        TypeError, ValueError: an argument has the wrong type or is out of range.
    """

    def __init__(
        self,
        target_seconds: float,
        *,
        initial: int = 1,
        minimum: int = 1,
        maximum: int = 100_000,
        increase: int = 16,
        decrease: float = 0.9,
        headroom: float = 0.9,
        window: int = 50,
    ) -> None:
        self.target_seconds = number("target_seconds", target_seconds)
        if not self.target_seconds > 0:
            raise ValueError(f"target_seconds must be > 0, got {target_seconds}")
        self.minimum = positive_int("minimum", minimum)
        self.maximum = positive_int("maximum", maximum)
        if self.maximum < self.minimum:
            raise ValueError(f"maximum must be >= minimum ({minimum}), got {maximum}")
        self.increase = positive_int("increase", increase)
        self.decrease = number("decrease", decrease)
        if not 0 < self.decrease < 1:
            raise ValueError(f"decrease must be between 0 and 1 (exclusive), got {decrease}")
        self.headroom = number("headroom", headroom)
        if not 0 < self.headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        self.window = positive_int("window", window)
        initial = positive_int("initial", initial)
        # Guards _size (the next full batch) and _recent ((size, latency) of the last
        # `window` batches, oldest first) and _batches (every batch recorded).
        self._lock = threading.Lock()
        self._size = min(self.maximum, max(self.minimum, initial))
        self._recent: deque[tuple[int, float]] = deque(maxlen=self.window)
        self._batches = 0

    @property
    def aim_seconds(self) -> float:
        """The latency the batcher steers toward: `target_seconds * headroom`."""
        return self.target_seconds * self.headroom

    @property
    def size(self) -> int:
        """The size of the next full batch."""
        with self._lock:
            return self._size

    def plan_batch(self, pending: int) -> int:
        """Return how many of the `pending` items to write now: at most the current size.

        Raises:
            TypeError, ValueError: `pending` is not an int >= 0.
        """
        pending = int_at_least("pending", pending, 0)
        with self._lock:
            return min(pending, self._size)

    def record_batch(self, size: int, latency: float) -> None:
        """Record that a batch of `size` items took `latency` seconds, and adapt the size.

        A batch smaller than the current size (the caller had fewer items) that met the
        aim says nothing about a larger one, so it does not grow the size.

        Raises:
            TypeError, ValueError: `size` is not an int >= 1, or `latency` is negative.
        """
        size = positive_int("size", size)
        latency = number("latency", latency)
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        with self._lock:
            self._batches += 1
            self._recent.append((size, latency))
            if latency > self.aim_seconds:
                self._size = max(self.minimum, int(self._size * self.decrease))
            elif size >= self._size:
                self._size = min(self.maximum, self._size + self.increase)

    def statistics(self) -> BatcherStatistics:
        """Return the current size and figures over the last `window` batches."""
        with self._lock:
            recent = list(self._recent)
            size, batches = self._size, self._batches
        count = len(recent)
        return BatcherStatistics(
            size=size,
            batches=batches,
            window=count,
            mean_size=sum(s for s, _ in recent) / count if count else 0.0,
            mean_latency=sum(latency for _, latency in recent) / count if count else 0.0,
            over_target=(
                sum(latency > self.target_seconds for _, latency in recent) / count
                if count
                else 0.0
            ),
        )

    def __repr__(self) -> str:
        return (
            f"AdaptiveBatcher(target_seconds={self.target_seconds}, size={self.size}, "
            f"+{self.increase} / x{self.decrease})"
        )


@dataclass(frozen=True, slots=True)
class BatcherStatistics:
    """An `AdaptiveBatcher`'s state: `size` now, figures over its last `window` batches.

    `over_target` is the share of those batches slower than the objective itself.
    """

    size: int
    batches: int
    window: int
    mean_size: float
    mean_latency: float
    over_target: float
