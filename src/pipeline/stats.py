"""Statistics of a pipeline run: what each stage did, and where its threads waited.

A worker thread records its own figures once per batch, with no lock (each worker
writes only its own `WorkerCounters`); `Pipeline.stats()` sums them into a frozen
snapshot whenever asked, during a run or after it. A thread's time splits three ways:
- busy: inside the stage's own code (`process_batch`);
- starved: waiting for input (the stage upstream is slower);
- blocked: waiting for room downstream (backpressure: the stage downstream is slower).

Per-item latency is estimated per batch (batch time / batch size), so no clock is read
per item, and kept in a log-linear histogram, as HdrHistogram does: every power of two
of seconds is split into `SUB_BUCKETS` equal buckets, and each bucket keeps the count
and the sum of its latencies. A percentile is the mean latency of the bucket it falls
in: within 1/SUB_BUCKETS (3%) of the exact percentile, and exact when every item took
the same time. Memory is bounded (at most `LATENCY_BUCKETS` entries per worker) and
only the buckets in use are stored.

Extras count what the core does not know about (a resilient stage's skipped items, for
one) through `WorkerCounters.count(name)`; the counts are summed per stage into
`StageStatistics.extra`, which reports and metrics show by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import frexp
from typing import Final

__all__ = [
    "LATENCY_BUCKETS",
    "LATENCY_BUCKET_BOUNDS",
    "SUB_BUCKETS",
    "BatchEvent",
    "BatchObserver",
    "LatencyBuckets",
    "PipelineStatistics",
    "StageStatistics",
    "WorkerCounters",
    "latency_bucket",
    "latency_percentile",
    "latency_percentiles",
]

SUB_BUCKETS: Final = 32
"""Linear buckets per power of two of seconds: the histogram's relative resolution."""

_LOWEST_EXPONENT: Final = -30  # 2**-30 s, about 0.93 ns: faster items share bucket 0
_HIGHEST_EXPONENT: Final = 11  # 2**11 s = 2048 s: slower items share the overflow bucket
_OCTAVES: Final = _HIGHEST_EXPONENT - _LOWEST_EXPONENT
_OVERFLOW: Final = _OCTAVES * SUB_BUCKETS

LATENCY_BUCKETS: Final = _OVERFLOW + 1
"""How many buckets the latency histogram has, the overflow bucket included."""

LATENCY_BUCKET_BOUNDS: Final = tuple(
    2.0**exponent for exponent in range(_LOWEST_EXPONENT + 1, _HIGHEST_EXPONENT + 1)
)
"""The coarse bucket bounds of `StageStatistics.latency_counts` (and of the Prometheus
histogram): the powers of two from about 1.9 ns to 2048 s, each the upper edge of a
whole power of two of fine buckets, so the coarse counts are exact."""

_FIRST_EXPONENT: Final = _LOWEST_EXPONENT + 1  # frexp's exponent for the first octave
_LOWEST: Final = 2.0**_LOWEST_EXPONENT
_HIGHEST: Final = 2.0**_HIGHEST_EXPONENT

LatencyBuckets = Mapping[int, tuple[int, float]]
"""A latency histogram: bucket number -> (items, their summed latency in seconds)."""


def latency_bucket(seconds: float) -> int:
    """Return the number of the histogram bucket that holds a latency of `seconds`."""
    if not seconds >= _LOWEST:  # also 0 and NaN
        return 0
    if seconds >= _HIGHEST:  # also infinity
        return _OVERFLOW
    mantissa, exponent = frexp(seconds)  # seconds = mantissa * 2**exponent, 0.5 <= m < 1
    octave = exponent - 1 - _LOWEST_EXPONENT
    return octave * SUB_BUCKETS + int((mantissa - 0.5) * 2 * SUB_BUCKETS)


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
    """What one worker has done so far; written only by that worker's thread.

    Readers in other threads copy the two dicts (`dict.copy()` is one step under the
    GIL, and each entry is replaced whole), so they never see a half-written entry.
    """

    __slots__ = (
        "batches",
        "blocked_seconds",
        "busy_seconds",
        "extra",
        "failed",
        "items_in",
        "items_out",
        "latency",
        "starved_seconds",
    )

    def __init__(self) -> None:
        self.batches = 0
        self.items_in = 0
        self.items_out = 0
        self.failed = 0
        self.busy_seconds = 0.0
        self.starved_seconds = 0.0
        self.blocked_seconds = 0.0
        self.latency: dict[int, tuple[int, float]] = {}
        self.extra: dict[str, int] = {}

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
            per_item = busy / items_in
            if _LOWEST <= per_item < _HIGHEST:  # latency_bucket(), inlined: once per batch
                mantissa, exponent = frexp(per_item)
                bucket = (exponent - _FIRST_EXPONENT) * SUB_BUCKETS + int(
                    (mantissa - 0.5) * 2 * SUB_BUCKETS
                )
            else:
                bucket = latency_bucket(per_item)
            seen = self.latency.get(bucket)
            self.latency[bucket] = (
                (items_in, busy) if seen is None else (seen[0] + items_in, seen[1] + busy)
            )

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to the extra count `name`, such as "skipped"; call from the worker's thread.

        The counts are summed per stage into `StageStatistics.extra`.
        """
        self.extra[name] = self.extra.get(name, 0) + n


def latency_percentile(buckets: LatencyBuckets, fraction: float) -> float | None:
    """Return the latency below which `fraction` of the items fell, or None if none.

    It is the mean latency of the bucket holding that item, so within 1/SUB_BUCKETS of
    the exact (nearest-rank) percentile.
    """
    return latency_percentiles(buckets, (fraction,))[0]


def latency_percentiles(
    buckets: LatencyBuckets, fractions: tuple[float, ...]
) -> list[float | None]:
    """Return `latency_percentile` for each of `fractions` (ascending), in one pass."""
    total = sum(count for count, _ in buckets.values())
    if not total:
        return [None] * len(fractions)
    found: list[float | None] = []
    seen = 0
    for bucket in sorted(buckets):
        count, seconds = buckets[bucket]
        seen += count
        while count and len(found) < len(fractions) and seen >= fractions[len(found)] * total:
            found.append(seconds / count)
    return found


@dataclass(frozen=True, slots=True)
class StageStatistics:
    """One stage's figures, summed over its workers.

    Latencies are per item, in seconds, within about 3% (see the module docstring);
    None before the stage has processed anything. `latency_counts` is a coarse view of
    the histogram: items per bucket of `LATENCY_BUCKET_BOUNDS`, plus one bucket above
    them. `extra` holds the counts extras keep by name (`WorkerCounters.count`), such as
    "skipped" and "dead_lettered" for a resilient stage.
    """

    name: str
    workers: int
    batches: int
    items_in: int
    items_out: int
    failed: int
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
    extra: Mapping[str, int]

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
        latency: dict[int, tuple[int, float]] = {}
        extra: dict[str, int] = {}
        for worker in counters:
            for bucket, (count, seconds) in worker.latency.copy().items():
                seen = latency.get(bucket)
                latency[bucket] = (
                    (count, seconds) if seen is None else (seen[0] + count, seen[1] + seconds)
                )
            for key, value in worker.extra.copy().items():
                extra[key] = extra.get(key, 0) + value
        p50, p90, p99 = latency_percentiles(latency, (0.5, 0.9, 0.99))
        coarse = [0] * (len(LATENCY_BUCKET_BOUNDS) + 1)
        for bucket, (count, _) in latency.items():
            coarse[bucket // SUB_BUCKETS] += count
        return cls(
            name=name,
            workers=len(counters),
            batches=sum(c.batches for c in counters),
            items_in=sum(c.items_in for c in counters),
            items_out=sum(c.items_out for c in counters),
            failed=sum(c.failed for c in counters),
            busy_seconds=sum(c.busy_seconds for c in counters),
            starved_seconds=sum(c.starved_seconds for c in counters),
            blocked_seconds=sum(c.blocked_seconds for c in counters),
            latency_p50=p50,
            latency_p90=p90,
            latency_p99=p99,
            queue_depth=queue_depth,
            queue_high_water_mark=queue_high_water_mark,
            queue_maxsize=queue_maxsize,
            latency_counts=tuple(coarse),
            extra=dict(sorted(extra.items())),
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
