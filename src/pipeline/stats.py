"""Statistics of a pipeline run: what each stage did, and where its threads waited.

A worker thread records its own figures once per batch, with no lock (each worker
writes only its own `WorkerCounters`); `Pipeline.stats()` sums them into a frozen
snapshot whenever asked, during a run or after it. A thread's time splits three ways:
- busy: inside the stage's own code (`process_batch`);
- starved: waiting for input (the stage upstream is slower);
- blocked: waiting for room downstream (backpressure: the stage downstream is slower).

Per-item latency is estimated per batch (batch time / batch size) and kept in a
histogram of log-spaced buckets, so no clock is read per item.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LATENCY_BUCKET_BOUNDS",
    "BatchEvent",
    "BatchObserver",
    "PipelineStatistics",
    "StageStatistics",
    "WorkerCounters",
    "latency_percentile",
]

# Bucket upper bounds in seconds, four per decade from 100 ns to 100 s.
LATENCY_BUCKET_BOUNDS: Final = tuple(10 ** (exponent / 4) for exponent in range(-28, 9))


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """One batch through one worker, with the `time.perf_counter()` of each step.

    waiting (from `waited_from`) -> processing (from `started`) -> handing the outputs on
    (from `finished`) -> done (`handed_on`).
    """

    stage: str
    worker: int
    waited_from: float
    started: float
    finished: float
    handed_on: float
    items_in: int
    items_out: int


BatchObserver = Callable[[BatchEvent], None]
"""Called in the worker thread after every batch; keep it quick."""


class WorkerCounters:
    """What one worker has done so far; written only by that worker's thread."""

    __slots__ = (
        "batches",
        "blocked_seconds",
        "busy_seconds",
        "dead_lettered",
        "failed",
        "items_in",
        "items_out",
        "latency_counts",
        "skipped",
        "starved_seconds",
    )

    def __init__(self) -> None:
        self.batches = 0
        self.items_in = 0
        self.items_out = 0
        self.failed = 0
        self.skipped = 0  # dropped by a "skip" error policy (pipeline.resilience.resilient)
        self.dead_lettered = 0  # routed to dead letters by a "collect" policy
        self.busy_seconds = 0.0
        self.starved_seconds = 0.0
        self.blocked_seconds = 0.0
        self.latency_counts = [0] * (len(LATENCY_BUCKET_BOUNDS) + 1)

    def record_batch(
        self, items_in: int, items_out: int, starved: float, busy: float, blocked: float
    ) -> None:
        """Add one batch: its sizes and the seconds spent waiting, working and blocked."""
        self.batches += 1
        self.items_in += items_in
        self.items_out += items_out
        self.starved_seconds += starved
        self.busy_seconds += busy
        self.blocked_seconds += blocked
        if items_in:
            self.latency_counts[bisect_left(LATENCY_BUCKET_BOUNDS, busy / items_in)] += items_in


def latency_percentile(counts: Iterable[int], fraction: float) -> float | None:
    """Return the bucket bound below which `fraction` of the items fell, or None if none."""
    counts = list(counts)
    total = sum(counts)
    if not total:
        return None
    wanted = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= wanted:
            return LATENCY_BUCKET_BOUNDS[min(index, len(LATENCY_BUCKET_BOUNDS) - 1)]
    return LATENCY_BUCKET_BOUNDS[-1]


@dataclass(frozen=True, slots=True)
class StageStatistics:
    """One stage's figures, summed over its workers.

    Latencies are per item, in seconds, accurate to the histogram's bucket (a factor of
    about 1.8); None before the stage has processed anything. `latency_counts` is that
    histogram: items per bucket of `LATENCY_BUCKET_BOUNDS`, plus one bucket above them.
    """

    name: str
    workers: int
    batches: int
    items_in: int
    items_out: int
    failed: int
    skipped: int
    dead_lettered: int
    busy_seconds: float
    starved_seconds: float
    blocked_seconds: float
    latency_p50: float | None
    latency_p90: float | None
    latency_p99: float | None
    queue_depth: int
    queue_high_water_mark: int
    queue_maxsize: int
    latency_counts: tuple[int, ...]

    @classmethod
    def from_workers(
        cls,
        name: str,
        counters: list[WorkerCounters],
        queue_depth: int,
        queue_high_water_mark: int,
        queue_maxsize: int,
    ) -> StageStatistics:
        """Sum the counters of a stage's workers; `queue_*` describe the stage's input queue."""
        latency = [
            sum(bucket) for bucket in zip(*(c.latency_counts for c in counters), strict=True)
        ]
        return cls(
            name=name,
            workers=len(counters),
            batches=sum(c.batches for c in counters),
            items_in=sum(c.items_in for c in counters),
            items_out=sum(c.items_out for c in counters),
            failed=sum(c.failed for c in counters),
            skipped=sum(c.skipped for c in counters),
            dead_lettered=sum(c.dead_lettered for c in counters),
            busy_seconds=sum(c.busy_seconds for c in counters),
            starved_seconds=sum(c.starved_seconds for c in counters),
            blocked_seconds=sum(c.blocked_seconds for c in counters),
            latency_p50=latency_percentile(latency, 0.5),
            latency_p90=latency_percentile(latency, 0.9),
            latency_p99=latency_percentile(latency, 0.99),
            queue_depth=queue_depth,
            queue_high_water_mark=queue_high_water_mark,
            queue_maxsize=queue_maxsize,
            latency_counts=tuple(latency),
        )

    def share_of(self, seconds: float, elapsed: float) -> float:
        """Return `seconds` as a share of the time this stage's workers have existed."""
        available = self.workers * elapsed
        return min(1.0, seconds / available) if available > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PipelineStatistics:
    """A snapshot of a whole run: the source, every stage, and the results queue."""

    running: bool
    elapsed_seconds: float
    items_read: int
    items_delivered: int
    source_blocked_seconds: float
    stages: tuple[StageStatistics, ...]
    results_queue_depth: int

    def stage(self, name: str) -> StageStatistics:
        """Return the statistics of the stage called `name`.

        Raises:
            KeyError: no stage has that name.
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")
