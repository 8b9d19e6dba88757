"""Tests for the bottleneck report: the rule in constructed cases, and the table's figures."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest
from support import HOLD_SECONDS, WAIT, Held, filling, share_of_own_time

from pipeline import Pipeline, StageError
from pipeline.observe.report import (
    CONSUMER,
    SOURCE,
    bottleneck,
    diagnose,
    format_report,
    stage_labels,
)
from pipeline.stages import FunctionStage
from pipeline.stats import PipelineStatistics, StageStatistics, WorkerCounters

ITEMS = 12


def fast(name: str) -> FunctionStage[int, int]:
    return FunctionStage[int, int](lambda item: item, name=name)


# The engine-level tests below hold one part of the run (a `Held` stage, the source or
# the consumer) for HOLD_SECONDS once every queue before it is full, so the rest of the
# run provably waits on it however loaded the machine is; the wording and the table are
# checked on snapshots built by hand (see `snapshot`), where every figure is known.


def run_to_end(pipeline: Pipeline[int, int], source: Iterator[int] | range) -> PipelineStatistics:
    pipeline.run(source)
    stats = pipeline.stats()
    assert stats is not None
    return stats


def shares(stats: PipelineStatistics, name: str) -> tuple[float, float, float]:
    """Return the busy, starved and blocked shares of the time the stage recorded."""
    stage = stats.stage(name)
    return (
        share_of_own_time(stage, stage.busy_seconds),
        share_of_own_time(stage, stage.starved_seconds),
        share_of_own_time(stage, stage.blocked_seconds),
    )


def test_a_slow_first_stage_is_the_bottleneck_and_starves_the_rest() -> None:
    held = Held()
    pipeline = Pipeline(held >> fast("middle") >> fast("last"), queue_size=2, batch_size=1)
    stats = run_to_end(pipeline, filling(ITEMS, held.full, before=0, queue_size=2))
    assert held.saw_full
    assert shares(stats, "middle")[1] > 0.6
    assert shares(stats, "last")[1] > 0.6
    diagnosis = diagnose(stats)
    assert diagnosis is not None
    assert (diagnosis.culprit, diagnosis.kind) == ("Held", "stage")
    assert re.fullmatch(
        r"Held is busy \d+% of the time; the source waits for room in Held's input queue "
        r"\d+% of the time; middle, after it, waits for items \d+% of the time",
        diagnosis.reason,
    )


def test_a_slow_middle_stage_blocks_upstream_and_starves_downstream() -> None:
    held = Held()
    pipeline = Pipeline(fast("first") >> held >> fast("last"), queue_size=2, batch_size=1)
    stats = run_to_end(pipeline, filling(ITEMS, held.full, before=1, queue_size=2))
    assert held.saw_full
    assert shares(stats, "Held")[0] > 0.5  # its hand-overs after the hold stretch with load
    assert stats.stage("Held").busy_seconds >= HOLD_SECONDS
    assert shares(stats, "first")[2] > 0.6
    assert shares(stats, "last")[1] > 0.6
    assert bottleneck(stats) == "Held"
    reason = format_report(stats).splitlines()[-1]
    assert re.match(r"bottleneck: Held: Held is busy \d+% of the time; ", reason)
    assert "first, before it, waits for room in Held's input queue" in reason
    assert "full" not in reason
    assert "last, after it, waits for items" in reason


def test_a_slow_last_stage_blocks_every_stage_before_it() -> None:
    held = Held()
    pipeline = Pipeline(fast("first") >> fast("second") >> held, queue_size=2, batch_size=1)
    stats = run_to_end(pipeline, filling(ITEMS, held.full, before=2, queue_size=2))
    assert held.saw_full
    assert shares(stats, "first")[2] > 0.6
    assert shares(stats, "second")[2] > 0.6
    assert stats.source_blocked_seconds > HOLD_SECONDS / 2
    assert bottleneck(stats) == "Held"


def test_a_slow_stage_with_several_workers_is_still_named() -> None:
    # Each of Held's three workers holds one of the first three items. The pipeline is
    # full at item 12: one item more leaves little to drain after the hold.
    held = Held(workers=3)
    pipeline = Pipeline(fast("first") >> held >> fast("last"), queue_size=4, batch_size=1)
    stats = run_to_end(pipeline, filling(13, held.full, before=1, queue_size=4, workers=3))
    assert held.saw_full
    assert bottleneck(stats) == "Held"


def held_source(count: int, released: threading.Event) -> Iterator[int]:
    """Yield range(count), taking HOLD_SECONDS before the second item: a slow source."""
    for item in range(count):
        if item == 1:
            released.wait(HOLD_SECONDS)
        yield item


def test_a_slow_source_is_named_when_every_stage_waits_for_items() -> None:
    pipeline = Pipeline(fast("first") >> fast("second"), queue_size=2, batch_size=1)
    stats = run_to_end(pipeline, held_source(ITEMS, threading.Event()))
    assert shares(stats, "first")[1] > 0.6
    diagnosis = diagnose(stats)
    assert diagnosis is not None
    assert (diagnosis.culprit, diagnosis.kind) == (SOURCE, "source")
    assert re.fullmatch(
        r"the source is the bottleneck: the first stage, first, waits for items \d+% of the "
        r"time, and no stage is busy more than \d+% of the time",
        diagnosis.reason,
    )


def test_a_slow_consumer_is_named_when_every_stage_is_blocked() -> None:
    # The consumer stands where a Held stage would after the two stages: it holds item 0
    # once the results queue and everything before it is full.
    pipeline = Pipeline(fast("first") >> fast("second"), queue_size=2, batch_size=1)
    full, pause = threading.Event(), threading.Event()
    saw_full = False
    for item in pipeline.stream(filling(ITEMS, full, before=2, queue_size=2)):
        if item == 0:
            saw_full = full.wait(WAIT)
            pause.wait(HOLD_SECONDS)
    assert saw_full
    stats = pipeline.stats()
    assert stats is not None
    assert shares(stats, "second")[2] > 0.6
    diagnosis = diagnose(stats)
    assert diagnosis is not None
    assert (diagnosis.culprit, diagnosis.kind) == (CONSUMER, "consumer")
    assert diagnosis.reason.startswith(
        "the consumer of the results is the bottleneck: the last stage, second, waits for "
        "room in the full results queue "
    )


def test_there_is_no_bottleneck_before_anything_was_processed() -> None:
    stage = StageStatistics.from_workers("idle", [WorkerCounters()], 0, 0, 8)
    stats = PipelineStatistics(
        running=True,
        elapsed_seconds=0.5,
        items_read=0,
        items_delivered=0,
        source_blocked_seconds=0.0,
        stages=(stage,),
        results_queue_depth=0,
    )
    assert diagnose(stats) is None
    assert format_report(stats).endswith("bottleneck: none yet: no stage has processed a batch")


def test_the_table_shows_every_figure_of_a_known_run() -> None:
    held = Held()
    pipeline = Pipeline(fast("first") >> held, queue_size=2, batch_size=1)
    stats = run_to_end(pipeline, filling(ITEMS, held.full, before=1, queue_size=2))
    assert held.saw_full
    report = format_report(stats)
    lines = report.splitlines()
    assert re.fullmatch(
        rf"pipeline finished in {stats.elapsed_seconds:.3f} s: {ITEMS} items read, {ITEMS} "
        rf"delivered; the source waited for room {stats.source_blocked_seconds:.3f} s "
        r"\(\d+%\)",
        lines[0],
    )
    assert lines[2].split() == [
        "stage",
        "workers",
        "in",
        "out",
        "failed",
        "busy",
        "starved",
        "blocked",
        "p50",
        "p90",
        "p99",
        "queue",
        "now/peak/max",
    ]
    slow = stats.stage("Held")
    row = lines[4].split()
    assert row[:5] == ["Held", "1", str(ITEMS), str(ITEMS), "0"]
    assert row[5] == f"{slow.busy_seconds:.3f}s"
    assert row[6] == f"{slow.share_of(slow.busy_seconds, stats.elapsed_seconds):.0%}"
    assert slow.busy_seconds >= HOLD_SECONDS
    assert row[7] == f"{slow.starved_seconds:.3f}s"
    assert row[9] == f"{slow.blocked_seconds:.3f}s"
    assert row[-1] == f"{slow.queue_depth}/2/2"  # its input queue filled: backpressure
    first_row = lines[3].split()
    assert first_row[0] == "first"
    first = stats.stage("first")
    assert first_row[10] == f"{first.share_of(first.blocked_seconds, stats.elapsed_seconds):.0%}"
    assert first.blocked_seconds > HOLD_SECONDS / 2  # the stage before waited for room


def test_the_latency_columns_show_the_percentiles_in_their_unit() -> None:
    # 19 items of 2 ms and one of 300 ms: the median and p90 land in the 2 ms bucket.
    counters = WorkerCounters()
    for _ in range(19):
        counters.record_batch(1, 1, 0.0, 0.002, 0.0)
    counters.record_batch(1, 1, 0.0, 0.3, 0.0)
    row = format_report(snapshot(StageStatistics.from_workers("slow", [counters], 0, 1, 8)))
    cells = row.splitlines()[3].split()
    assert cells[0] == "slow"
    p50, p90, p99 = (float(cells[index]) for index in (11, 13, 15))
    assert [cells[index] for index in (12, 14, 16)] == ["ms", "ms", "ms"]
    assert 2.0 <= p50 <= 2.2
    assert 2.0 <= p90 <= 2.2
    assert 300 <= p99 <= 330


def test_the_report_counts_a_failure() -> None:
    def fail_on_five(item: int) -> int:
        if item == 5:
            raise ValueError(item)
        return item

    pipeline = Pipeline(FunctionStage(fail_on_five), batch_size=1)
    with pytest.raises(StageError):
        pipeline.run(range(10))
    stats = pipeline.stats()
    assert stats is not None
    row = format_report(stats).splitlines()[3].split()
    assert row[:5] == ["fail_on_five", "1", "5", "5", "1"]


def test_the_report_can_be_read_during_a_run() -> None:
    reports: list[str] = []
    pipeline: Pipeline[int, int]

    def look(item: int) -> int:
        if item == 10:
            stats = pipeline.stats()
            assert stats is not None
            reports.append(format_report(stats))
        return item

    pipeline = Pipeline(FunctionStage(look), batch_size=1)
    pipeline.run(range(20))
    assert len(reports) == 1
    assert reports[0].startswith("pipeline running for ")
    assert re.search(r"\d+ items read, \d+ delivered", reports[0])
    assert "\nlook " in reports[0]


def test_a_run_stopped_early_is_reported_as_stopped_with_what_it_did() -> None:
    pipeline = Pipeline(fast("first") >> fast("second"), batch_size=1, queue_size=2)
    with pipeline:
        for count, _ in enumerate(pipeline.stream(iter(range(10_000)))):
            if count == 20:
                break  # the loop stops the run, as Ctrl-C would
    stats = pipeline.stats()
    assert stats is not None
    assert not stats.running
    report = format_report(stats)
    assert re.match(r"pipeline stopped after [\d.]+ s: [\d,]+ items read, \d+ delivered", report)
    assert "\nfirst " in report
    assert "\nsecond " in report


def test_a_failed_run_is_reported_as_stopped() -> None:
    def fail_on_five(item: int) -> int:
        if item == 5:
            raise ValueError(item)
        return item

    pipeline = Pipeline(FunctionStage(fail_on_five), batch_size=1)
    with pytest.raises(StageError):
        pipeline.run(range(10))
    stats = pipeline.stats()
    assert stats is not None
    assert format_report(stats).startswith("pipeline stopped after ")


def test_extra_counts_get_a_column_each_when_a_stage_has_them() -> None:
    plain = WorkerCounters()
    plain.record_batch(10, 10, 0.0, 0.01, 0.0)
    counting = WorkerCounters()
    counting.record_batch(10, 7, 0.0, 0.01, 0.0)
    counting.count("skipped", 2)
    counting.count("dead_lettered", 1)
    stats = snapshot(
        StageStatistics.from_workers("plain", [plain], 0, 1, 8),
        StageStatistics.from_workers("counting", [counting], 0, 1, 8),
    )
    lines = format_report(stats).splitlines()
    assert lines[2].split()[:7] == [
        "stage",
        "workers",
        "in",
        "out",
        "failed",
        "dead_lettered",
        "skipped",
    ]
    assert lines[3].split()[:7] == ["plain", "1", "10", "10", "0", "0", "0"]
    assert lines[4].split()[:7] == ["counting", "1", "10", "7", "0", "1", "2"]
    # A run without extra counts keeps the plain table.
    without = snapshot(StageStatistics.from_workers("plain", [plain], 0, 1, 8))
    assert format_report(without).splitlines()[2].split()[5] == "busy"


def test_stages_with_the_same_name_are_told_apart() -> None:
    counters = WorkerCounters()
    counters.record_batch(10, 10, 0.0, 0.01, 0.0)
    same = [StageStatistics.from_workers("<lambda>", [counters], 0, 1, 8) for _ in range(3)]
    rows = format_report(snapshot(*same)).splitlines()[3:6]
    assert [row.split()[0] for row in rows] == ["<lambda>", "<lambda>#2", "<lambda>#3"]
    assert stage_labels(snapshot(*same)) == ["<lambda>", "<lambda>#2", "<lambda>#3"]


def snapshot(*stages: StageStatistics) -> PipelineStatistics:
    """Return the snapshot of a finished run whose items went through `stages`."""
    return PipelineStatistics(
        running=False,
        elapsed_seconds=1.0,
        items_read=stages[0].items_in,
        items_delivered=stages[-1].items_out,
        source_blocked_seconds=0.0,
        stages=stages,
        results_queue_depth=0,
    )


def test_the_queue_peak_does_not_count_the_end_of_stream_marker() -> None:
    pipeline = Pipeline(fast("only"))
    pipeline.run([])  # nothing but the marker ever enters the queue
    stats = pipeline.stats()
    assert stats is not None
    assert stats.stage("only").queue_high_water_mark == 0
