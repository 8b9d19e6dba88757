"""Tests for run statistics: counts, busy/starved/blocked time, latency, stop event."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import HOLD_SECONDS, ITEM_SECONDS, WAIT, Held, Slow, filling, share_of_own_time

from pipeline import Pipeline, StageError
from pipeline.stages import FunctionStage, PredicateStage
from pipeline.stats import (
    LATENCY_BUCKET_BOUNDS,
    LATENCY_BUCKETS,
    BatchEvent,
    StageStatistics,
    WorkerCounters,
    latency_bucket,
    latency_percentile,
)
from pipeline.worker import (
    REORDER_BATCHES_PER_WORKER,
    current_stop_event,
    current_worker_counters,
)


def identity(item: Any) -> Any:
    return item


def test_statistics_before_the_first_run_are_zero_for_every_stage() -> None:
    pipeline = Pipeline(FunctionStage(identity, name="copy", workers=3), queue_size=5)
    stats = pipeline.stats()
    assert (stats.running, stats.elapsed_seconds, stats.items_read, stats.items_delivered) == (
        False,
        0.0,
        0,
        0,
    )
    [stage] = stats.stages
    assert (stage.name, stage.workers, stage.items_in, stage.batches) == ("copy", 3, 0, 0)
    assert (stage.queue_depth, stage.queue_high_water_mark, stage.queue_maxsize) == (0, 0, 5)
    assert stage.latency_p50 is None
    assert pipeline.stats() == stats  # the same zeros until a run starts


def test_counts_add_up_after_a_run() -> None:
    pipeline = Pipeline(
        FunctionStage[int, int](lambda x: x * 2, name="double")
        >> PredicateStage[int](lambda x: x % 4 == 0, name="multiples of four", workers=2)
    )
    outputs = pipeline.run(range(1000))
    stats = pipeline.stats()
    assert stats is not None
    assert not stats.running
    assert (stats.items_read, stats.items_delivered) == (1000, len(outputs)) == (1000, 500)
    double, fours = stats.stage("double"), stats.stage("multiples of four")
    assert (double.items_in, double.items_out, double.failed) == (1000, 1000, 0)
    assert (fours.items_in, fours.items_out, fours.workers) == (1000, 500, 2)
    assert double.batches >= 1
    assert stats.elapsed_seconds > 0
    with pytest.raises(KeyError, match="no stage named 'missing'"):
        stats.stage("missing")


def test_a_slow_last_stage_is_busy_and_its_upstream_is_blocked() -> None:
    # Held works HOLD_SECONDS only once fast and its queues are full: for that long it
    # is the only stage working, whatever else runs on the machine.
    held = Held()
    pipeline = Pipeline(
        FunctionStage[int, int](identity, name="fast") >> held, queue_size=2, batch_size=1
    )
    pipeline.run(filling(10, held.full, before=1, queue_size=2))
    assert held.saw_full
    stats = pipeline.stats()
    assert stats is not None
    slow, fast = stats.stage("Held"), stats.stage("fast")
    assert slow.busy_seconds >= HOLD_SECONDS
    # Its starved time after the hold is one hand-over per item, which load stretches:
    # busy is most of its time, not a fixed 80% of it.
    assert share_of_own_time(slow, slow.busy_seconds) > 0.5
    assert fast.blocked_seconds > HOLD_SECONDS / 2
    assert share_of_own_time(fast, fast.blocked_seconds) > 0.6
    assert fast.busy_seconds < slow.busy_seconds / 10
    assert slow.queue_high_water_mark == 2  # its input queue filled up: backpressure


def test_a_slow_first_stage_starves_its_downstream() -> None:
    held = Held()
    pipeline = Pipeline(
        held >> FunctionStage[int, int](identity, name="fast"), queue_size=2, batch_size=1
    )
    pipeline.run(filling(10, held.full, before=0, queue_size=2))
    assert held.saw_full
    stats = pipeline.stats()
    assert stats is not None
    fast = stats.stage("fast")
    assert fast.starved_seconds > HOLD_SECONDS / 2
    assert share_of_own_time(fast, fast.starved_seconds) > 0.6
    assert stats.source_blocked_seconds > HOLD_SECONDS / 2  # and the source waits for room


def test_per_item_latency_reflects_the_work() -> None:
    pipeline = Pipeline(Slow(), batch_size=1)
    pipeline.run(range(20))
    stats = pipeline.stats()
    assert stats is not None
    slow = stats.stage("Slow")
    assert slow.latency_p50 is not None
    assert slow.latency_p99 is not None
    # Each item waited ITEM_SECONDS at least; how much longer depends on the machine.
    assert slow.latency_p50 >= ITEM_SECONDS
    assert slow.latency_p50 <= slow.latency_p99


def test_statistics_can_be_read_during_a_run() -> None:
    seen: list[bool] = []
    pipeline: Pipeline[int, int]

    def look(item: int) -> int:
        if item == 500:
            stats = pipeline.stats()
            assert stats is not None
            seen.append(stats.running)
        return item

    pipeline = Pipeline(FunctionStage(look))
    pipeline.run(range(1000))
    assert seen == [True]


def test_a_failure_is_counted() -> None:
    def fail_on_three(item: int) -> int:
        if item == 3:
            raise ValueError(item)
        return item

    pipeline = Pipeline(FunctionStage(fail_on_three))
    with pytest.raises(StageError):
        pipeline.run(range(10))
    stats = pipeline.stats()
    assert stats is not None
    assert stats.stage("fail_on_three").failed == 1


def test_the_observer_sees_every_batch_in_order_of_its_steps() -> None:
    events: list[BatchEvent] = []
    lock = threading.Lock()

    def observe(event: BatchEvent) -> None:
        with lock:
            events.append(event)

    pipeline = Pipeline(FunctionStage(identity, workers=2), batch_size=8, observer=observe)
    pipeline.run(range(100))
    assert sum(event.items_in for event in events) == 100
    assert {event.worker for event in events} <= {0, 1}
    for event in events:
        assert event.waited_from <= event.started <= event.finished <= event.handed_on


def test_the_observer_must_be_callable() -> None:
    with pytest.raises(TypeError, match="observer must be callable, got int"):
        Pipeline(FunctionStage(identity), observer=3)  # type: ignore[call-overload]


def test_stage_code_sees_the_stop_event_of_its_run() -> None:
    events: list[threading.Event | None] = []

    def capture(item: int) -> int:
        events.append(current_stop_event())
        return item

    assert current_stop_event() is None
    Pipeline(FunctionStage(capture), batch_size=1).run(range(3))
    assert len(events) == 3
    assert all(isinstance(event, threading.Event) for event in events)
    assert events[0] is events[2]
    assert events[0] is not None
    assert events[0].is_set()  # set once the run is over


def test_a_stop_event_wait_ends_as_soon_as_the_pipeline_fails() -> None:
    """A stage waiting on the stop event (a long retry backoff) is released by a failure."""
    waiting = threading.Event()
    released = threading.Event()

    def patient(item: int) -> int:
        stopping = current_stop_event()
        assert stopping is not None
        waiting.set()
        if stopping.wait(60):
            released.set()
        return item

    def source() -> Iterator[int]:
        yield 1
        waiting.wait(WAIT)
        raise ValueError("the source failed while the stage waited")

    # fail_fast: without it the run would let item 1, which comes before the failure,
    # finish first.
    with pytest.raises(StageError, match="the source failed"):
        Pipeline(FunctionStage(patient), batch_size=1, fail_fast=True).run(source())
    assert released.is_set()


def test_latency_percentiles_come_from_the_histogram() -> None:
    counters = WorkerCounters()
    counters.record_batch(10, 10, 0.0, 10 * 1e-3, 0.0)  # 10 items at 1 ms each
    counters.record_batch(1, 1, 0.0, 1.0, 0.0)  # 1 item at 1 s
    stats = StageStatistics.from_workers("x", [counters], 0, 0, 0)
    assert stats.latency_p50 == pytest.approx(1e-3)
    assert stats.latency_p99 == pytest.approx(1.0)
    assert latency_percentile({}, 0.5) is None
    assert latency_percentile({3: (0, 0.0)}, 0.5) is None


def exact_percentile(samples: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile: the smallest sample with `fraction` at or below."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@pytest.mark.parametrize(
    "distribution",
    ["constant", "uniform", "heavy-tailed"],
)
def test_latency_percentiles_are_within_five_percent_of_the_exact_ones(distribution: str) -> None:
    rng = random.Random(1)
    if distribution == "constant":
        samples = [0.020] * 5_000  # once reported as 31.6 ms at p50, p90 and p99
    elif distribution == "uniform":
        samples = [rng.uniform(1e-4, 1e-2) for _ in range(5_000)]
    else:
        samples = [1e-4 * rng.paretovariate(1.2) for _ in range(5_000)]
    counters = [WorkerCounters(), WorkerCounters()]  # two workers, summed
    for index, sample in enumerate(samples):
        counters[index % 2].record_batch(1, 1, 0.0, sample, 0.0)
    stats = StageStatistics.from_workers("x", counters, 0, 0, 0)
    for fraction, reported in (
        (0.5, stats.latency_p50),
        (0.9, stats.latency_p90),
        (0.99, stats.latency_p99),
    ):
        exact = exact_percentile(samples, fraction)
        assert reported is not None
        assert abs(reported - exact) / exact < 0.05, (fraction, reported, exact)
        assert latency_percentile(merged(counters), fraction) == reported


def merged(counters: list[WorkerCounters]) -> dict[int, tuple[int, float]]:
    buckets: dict[int, tuple[int, float]] = {}
    for worker in counters:
        for bucket, (count, seconds) in worker.latency.items():
            seen, total = buckets.get(bucket, (0, 0.0))
            buckets[bucket] = (seen + count, total + seconds)
    return buckets


def test_a_constant_latency_is_reported_exactly() -> None:
    counters = WorkerCounters()
    for _ in range(100):
        counters.record_batch(4, 4, 0.0, 4 * 0.002, 0.0)  # the docs' 2 ms example
    stats = StageStatistics.from_workers("x", [counters], 0, 0, 0)
    assert stats.latency_p50 == stats.latency_p99 == pytest.approx(0.002)


def test_the_histogram_stays_bounded_however_wide_the_latencies() -> None:
    counters = WorkerCounters()
    for exponent in range(-40, 20):
        for step in range(64):
            counters.record_batch(1, 1, 0.0, 2.0**exponent * (1 + step / 64), 0.0)
    counters.record_batch(1, 1, 0.0, 0.0, 0.0)
    counters.record_batch(1, 1, 0.0, math.inf, 0.0)
    assert len(counters.latency) <= LATENCY_BUCKETS
    assert min(counters.latency) == 0
    assert max(counters.latency) == LATENCY_BUCKETS - 1
    assert latency_bucket(float("nan")) == 0
    stats = StageStatistics.from_workers("x", [counters], 0, 0, 0)
    assert sum(stats.latency_counts) == counters.items_in
    assert len(stats.latency_counts) == len(LATENCY_BUCKET_BOUNDS) + 1


def test_the_coarse_counts_are_exact_at_their_bounds() -> None:
    counters = WorkerCounters()
    latencies = [1e-9, 3e-6, 0.5e-3, 0.0011, 0.9, 1.5, 3000.0]
    for latency in latencies:
        counters.record_batch(1, 1, 0.0, latency, 0.0)
    stats = StageStatistics.from_workers("x", [counters], 0, 0, 0)
    bounds = [*LATENCY_BUCKET_BOUNDS, math.inf]
    cumulative = 0
    for bound, count in zip(bounds, stats.latency_counts, strict=True):
        cumulative += count
        assert cumulative == sum(1 for latency in latencies if latency < bound)


def test_extras_count_by_name_once_per_worker_and_the_stage_sums_them() -> None:
    first, second = WorkerCounters(), WorkerCounters()
    first.count("skipped")
    first.count("skipped", 2)
    second.count("skipped")
    second.count("dead_lettered", 5)
    stats = StageStatistics.from_workers("x", [first, second], 0, 0, 0)
    assert stats.extra == {"dead_lettered": 5, "skipped": 4}
    assert not hasattr(stats, "skipped")  # the core names no resilience count
    assert StageStatistics.from_workers("x", [WorkerCounters()], 0, 0, 0).extra == {}


def test_stage_code_counts_through_its_worker_counters() -> None:
    def count_odd(item: int) -> int:
        counters = current_worker_counters()
        assert counters is not None
        if item % 2:
            counters.count("odd")
        return item

    pipeline = Pipeline(FunctionStage(count_odd, name="odd", workers=3), batch_size=4)
    pipeline.run(range(101))
    stats = pipeline.stats()
    assert stats is not None
    assert stats.stage("odd").extra == {"odd": 50}


def test_a_worker_waiting_on_the_reorder_window_is_blocked_all_that_time() -> None:
    # batch_size=1: worker A holds item 0 until worker B has taken every item the
    # reorder window can park behind it, so B then waits for room in the window until A
    # hands item 0 on. The instant A lets go must fall inside one of B's batches (as
    # blocked time, the span from finished to handed_on), not in a gap between them.
    window = REORDER_BATCHES_PER_WORKER * 2
    last_parked = threading.Event()
    let_go: list[float] = []
    events: list[BatchEvent] = []
    lock = threading.Lock()

    def observe(event: BatchEvent) -> None:
        with lock:
            events.append(event)

    def step(item: int) -> int:
        if item == 0:
            assert last_parked.wait(WAIT), "the other worker never took the window's last item"
            let_go.append(time.perf_counter())
        elif item == window:
            last_parked.set()
        return item

    pipeline = Pipeline(
        FunctionStage(step, name="parse", workers=2), batch_size=1, observer=observe
    )
    assert pipeline.run(range(window + 3)) == list(range(window + 3))
    [released] = let_go
    [holder] = {event.worker for event in events if event.started <= released <= event.finished}
    other = [event for event in events if event.worker != holder]
    state = [
        name
        for event in other
        for name, start, end in (
            ("starved", event.waited_from, event.started),
            ("busy", event.started, event.finished),
            ("blocked", event.finished, event.handed_on),
        )
        if start <= released <= end
    ]
    assert state == ["blocked"]
    stats = pipeline.stats()
    assert stats.stage("parse").blocked_seconds > 0
