"""Tests for the Prometheus collector and the JSON snapshot of a pipeline's statistics."""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys
from collections.abc import Callable

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from support import HOLD_SECONDS, Held, Slow, filling

from pipeline import Pipeline, StageError
from pipeline.observe.metrics import (
    KNOWN_EXTRA_COUNTS,
    RUN_FIGURES,
    STAGE_FIGURES,
    PipelineCollector,
    json_snapshot,
    register_metrics,
    statistics_to_dict,
)
from pipeline.resilience import ResilientStage
from pipeline.stages import FunctionStage
from pipeline.stats import PipelineStatistics, StageStatistics, WorkerCounters

ITEMS = 50

RUN_METRICS = {
    "pipeline_running": "gauge",
    "pipeline_elapsed_seconds": "gauge",
    "pipeline_items_read": "counter",
    "pipeline_items_delivered": "counter",
    "pipeline_source_blocked_seconds": "counter",
    "pipeline_results_queue_depth": "gauge",
}
STAGE_METRICS = {
    "pipeline_stage_workers": "gauge",
    "pipeline_stage_batches": "counter",
    "pipeline_stage_items_in": "counter",
    "pipeline_stage_items_out": "counter",
    "pipeline_stage_failed": "counter",
    "pipeline_stage_skipped": "counter",
    "pipeline_stage_dead_lettered": "counter",
    "pipeline_stage_busy_seconds": "counter",
    "pipeline_stage_starved_seconds": "counter",
    "pipeline_stage_blocked_seconds": "counter",
    "pipeline_stage_item_latency_seconds": "histogram",
    "pipeline_stage_queue_depth": "gauge",
    "pipeline_stage_queue_high_water_mark": "gauge",
    "pipeline_stage_queue_maxsize": "gauge",
}


def slow_last_pipeline() -> Pipeline[int, int]:
    fast = FunctionStage[int, int](lambda item: item, name="fast")
    return Pipeline(fast >> Slow(), queue_size=2, batch_size=1)


def held_last_pipeline() -> tuple[Pipeline[int, int], Held]:
    """Return a pipeline whose last stage holds item 0 for HOLD_SECONDS, and that stage.

    Run it with `run_held`: the stage holds once `fast` and the queues are full, so for
    HOLD_SECONDS it is provably the only one working, however loaded the machine is.
    """
    held = Held()
    fast = FunctionStage[int, int](lambda item: item, name="fast")
    return Pipeline(fast >> held, queue_size=2, batch_size=1), held


def run_held(pipeline: Pipeline[int, int], held: Held) -> None:
    pipeline.run(filling(ITEMS, held.full, before=1, queue_size=2))
    assert held.saw_full


def scrape(registry: CollectorRegistry) -> dict[str, list[Sample]]:
    """Return the samples of every family, parsed by prometheus_client's own parser."""
    text = generate_latest(registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    (match,) = [sample for sample in samples if sample.name == name and sample.labels == labels]
    return match.value


def finished_stats(pipeline: Pipeline[int, int]) -> PipelineStatistics:
    stats = pipeline.stats()
    assert stats is not None
    return stats


def test_the_text_parses_and_follows_the_naming_rules() -> None:
    pipeline = slow_last_pipeline()
    pipeline.run(range(ITEMS))
    registry = CollectorRegistry()
    register_metrics(pipeline, registry, name="demo")
    text = generate_latest(registry).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert {name: family.type for name, family in families.items()} == {
        **RUN_METRICS,
        **STAGE_METRICS,
    }
    for name, family in families.items():
        assert name.startswith("pipeline_")
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name == f"{name}_total"
            allowed = {"pipeline"} if name in RUN_METRICS else {"pipeline", "stage"}
            assert set(sample.labels) - {"le"} == allowed
            assert sample.labels["pipeline"] == "demo"
    times = [name for name in families if "seconds" in name]
    assert all(name.endswith("_seconds") for name in times)


def test_every_figure_matches_the_statistics_of_a_known_run() -> None:
    pipeline, held = held_last_pipeline()
    run_held(pipeline, held)
    stats = finished_stats(pipeline)
    registry = CollectorRegistry()
    register_metrics(pipeline, registry)
    samples = scrape(registry)
    run = {"pipeline": "pipeline"}
    assert value(samples["pipeline_running"], "pipeline_running", **run) == 0
    assert value(samples["pipeline_items_read"], "pipeline_items_read_total", **run) == ITEMS
    delivered = samples["pipeline_items_delivered"]
    assert value(delivered, "pipeline_items_delivered_total", **run) == ITEMS
    elapsed = value(samples["pipeline_elapsed_seconds"], "pipeline_elapsed_seconds", **run)
    assert elapsed == pytest.approx(stats.elapsed_seconds)
    assert elapsed >= HOLD_SECONDS
    source_blocked = value(
        samples["pipeline_source_blocked_seconds"], "pipeline_source_blocked_seconds_total", **run
    )
    assert source_blocked == pytest.approx(stats.source_blocked_seconds)
    for stage in stats.stages:
        labels = {"pipeline": "pipeline", "stage": stage.name}
        gauges: list[tuple[str, float]] = [
            ("pipeline_stage_workers", stage.workers),
            ("pipeline_stage_queue_depth", stage.queue_depth),
            ("pipeline_stage_queue_high_water_mark", stage.queue_high_water_mark),
            ("pipeline_stage_queue_maxsize", stage.queue_maxsize),
        ]
        for family, figure in gauges:
            assert value(samples[family], family, **labels) == figure
        counters: list[tuple[str, float]] = [
            ("pipeline_stage_batches", stage.batches),
            ("pipeline_stage_items_in", stage.items_in),
            ("pipeline_stage_items_out", stage.items_out),
            ("pipeline_stage_failed", stage.failed),
            ("pipeline_stage_skipped", stage.extra.get("skipped", 0)),
            ("pipeline_stage_dead_lettered", stage.extra.get("dead_lettered", 0)),
            ("pipeline_stage_busy_seconds", stage.busy_seconds),
            ("pipeline_stage_starved_seconds", stage.starved_seconds),
            ("pipeline_stage_blocked_seconds", stage.blocked_seconds),
        ]
        for family, figure in counters:
            assert value(samples[family], f"{family}_total", **labels) == pytest.approx(figure)
        latency = samples["pipeline_stage_item_latency_seconds"]
        name = "pipeline_stage_item_latency_seconds"
        assert value(latency, f"{name}_count", **labels) == stage.items_in
        assert value(latency, f"{name}_sum", **labels) == pytest.approx(stage.busy_seconds)
        assert value(latency, f"{name}_bucket", **labels, le="+Inf") == stage.items_in
        buckets = [sample for sample in latency if sample.name == f"{name}_bucket"]
        assert len(buckets) == len(stage.latency_counts) * len(stats.stages)
    # The known work: the held stage is busy HOLD_SECONDS on item 0 while its upstream
    # waits for room in its full input queue.
    slow = {"pipeline": "pipeline", "stage": "Held"}
    fast = {"pipeline": "pipeline", "stage": "fast"}
    busy = value(
        samples["pipeline_stage_busy_seconds"], "pipeline_stage_busy_seconds_total", **slow
    )
    assert busy >= HOLD_SECONDS
    blocked = samples["pipeline_stage_blocked_seconds"]
    assert value(blocked, "pipeline_stage_blocked_seconds_total", **fast) > HOLD_SECONDS / 2
    peak = samples["pipeline_stage_queue_high_water_mark"]
    assert value(peak, "pipeline_stage_queue_high_water_mark", **slow) == 2
    # Item 0 took HOLD_SECONDS, the others passed at once: all but one lie below it.
    below = [
        sample
        for sample in samples["pipeline_stage_item_latency_seconds"]
        if sample.name == "pipeline_stage_item_latency_seconds_bucket"
        and sample.labels["stage"] == "Held"
        and sample.labels["le"] != "+Inf"
        and float(sample.labels["le"]) < HOLD_SECONDS
    ]
    assert below[-1].value == ITEMS - 1


def test_a_scrape_during_the_run_sees_it_running() -> None:
    registry = CollectorRegistry()
    scraped: list[dict[str, list[Sample]]] = []

    def look(item: int) -> int:
        if item == 5:
            scraped.append(scrape(registry))
        return item

    pipeline = Pipeline(FunctionStage(look), batch_size=1)
    register_metrics(pipeline, registry)
    pipeline.run(range(10))
    (samples,) = scraped
    assert value(samples["pipeline_running"], "pipeline_running", pipeline="pipeline") == 1
    items_in = value(
        samples["pipeline_stage_items_in"],
        "pipeline_stage_items_in_total",
        pipeline="pipeline",
        stage="look",
    )
    assert items_in == 5  # the batch holding item 5 is still being processed


def test_a_failure_is_counted() -> None:
    def fail_on_three(item: int) -> int:
        if item == 3:
            raise ValueError(item)
        return item

    pipeline = Pipeline(FunctionStage(fail_on_three), batch_size=1)
    with pytest.raises(StageError):
        pipeline.run(range(10))
    registry = CollectorRegistry()
    register_metrics(pipeline, registry)
    failed = scrape(registry)["pipeline_stage_failed"]
    labels = {"pipeline": "pipeline", "stage": "fail_on_three"}
    assert value(failed, "pipeline_stage_failed_total", **labels) == 1


def test_before_any_run_every_sample_is_zero() -> None:
    registry = CollectorRegistry()
    register_metrics(Pipeline(FunctionStage[int, int](abs)), registry)
    samples = scrape(registry)
    assert set(samples) == set(RUN_METRICS) | set(STAGE_METRICS)
    assert all(family for family in samples.values())
    counts = [
        sample.value
        for family in samples.values()
        for sample in family
        if sample.name.endswith(("_total", "_count", "_sum", "_bucket"))
    ]
    assert counts
    assert set(counts) == {0.0}


def test_one_collector_exposes_several_pipelines_by_label() -> None:
    first = Pipeline(FunctionStage[int, int](abs))
    second = Pipeline(FunctionStage[int, int](abs))
    first.run(range(3))
    second.run(range(7))
    registry = CollectorRegistry()
    registry.register(PipelineCollector({"first": first, "second": second}))
    read = scrape(registry)["pipeline_items_read"]
    assert value(read, "pipeline_items_read_total", pipeline="first") == 3
    assert value(read, "pipeline_items_read_total", pipeline="second") == 7


def test_the_global_registry_is_left_alone() -> None:
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    register_metrics(Pipeline(FunctionStage[int, int](abs)), CollectorRegistry())
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before
    assert not any(name.startswith("pipeline_") for name in before)


def test_registering_two_collectors_on_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    register_metrics(Pipeline(FunctionStage[int, int](abs)), registry, name="a")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register_metrics(Pipeline(FunctionStage[int, int](abs)), registry, name="b")


def test_a_collector_needs_a_pipeline() -> None:
    with pytest.raises(ValueError, match=r"^pipelines must name at least one pipeline$"):
        PipelineCollector({})


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: PipelineCollector({"a": "not a pipeline"}),  # type: ignore[dict-item]
            TypeError,
            "pipelines must map names to Pipelines; 'a' is a str",
        ),
        (
            lambda: PipelineCollector({"": Pipeline(FunctionStage[int, int](abs))}),
            ValueError,
            "pipeline name must not be empty",
        ),
        (
            lambda: PipelineCollector([Pipeline(FunctionStage[int, int](abs))]),  # type: ignore[arg-type]
            TypeError,
            "pipelines must be a mapping of names to Pipelines, got list",
        ),
        (
            lambda: register_metrics("x", CollectorRegistry()),  # type: ignore[arg-type]
            TypeError,
            "pipelines must map names to Pipelines; 'pipeline' is a str",
        ),
        (
            lambda: register_metrics(Pipeline(FunctionStage[int, int](abs)), {}),  # type: ignore[arg-type]
            TypeError,
            "registry must be a CollectorRegistry, got dict",
        ),
        (
            lambda: json_snapshot("x"),  # type: ignore[arg-type]
            TypeError,
            "pipeline must be a Pipeline, got str",
        ),
    ],
)
def test_bad_arguments_are_refused_at_once(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    # Before, a collector of a str failed at the first scrape, with an AttributeError.
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call()


def test_the_json_snapshot_holds_the_same_figures() -> None:
    pipeline, held = held_last_pipeline()
    before = json.loads(json_snapshot(pipeline, name="demo"))
    assert before["stats"]["running"] is False
    assert [stage["items_in"] for stage in before["stats"]["stages"]] == [0] * len(pipeline.stages)
    run_held(pipeline, held)
    stats = finished_stats(pipeline)
    snapshot = json.loads(json_snapshot(pipeline, name="demo"))
    assert snapshot["pipeline"] == "demo"
    figures = snapshot["stats"]
    assert figures == json.loads(json.dumps(statistics_to_dict(stats)))
    assert figures["items_read"] == figures["items_delivered"] == ITEMS
    assert figures["running"] is False
    assert figures["elapsed_seconds"] == stats.elapsed_seconds
    assert figures["source_blocked_seconds"] == stats.source_blocked_seconds
    assert figures["results_queue_depth"] == 0
    slow = figures["stages"][1]
    expected = stats.stage("Held")
    for field in expected.__slots__:
        assert slow[field] == json.loads(json.dumps(getattr(expected, field)))  # tuples: lists
    # The shares are the snapshot's own, and show the known work.
    elapsed = stats.elapsed_seconds
    assert slow["busy_share"] == expected.share_of(expected.busy_seconds, elapsed)
    first = stats.stage("fast")
    assert figures["stages"][0]["blocked_share"] == first.share_of(first.blocked_seconds, elapsed)
    assert expected.busy_seconds >= HOLD_SECONDS
    assert first.blocked_seconds > HOLD_SECONDS / 2
    assert figures["bottleneck"]["culprit"] == "Held"
    assert figures["bottleneck"]["kind"] == "stage"
    assert figures["bottleneck"]["reason"].startswith("Held is busy")


def test_a_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "pipeline.observe.metrics")
    message = (
        "pipeline.observe.metrics needs prometheus_client: pip install 'threaded-pipeline[metrics]'"
    )
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
        importlib.import_module("pipeline.observe.metrics")


def test_items_skipped_and_dead_lettered_by_error_policies_are_exported() -> None:
    def fail_on_odd(item: int) -> int:
        if item % 2:
            raise ValueError(item)
        return item

    skipping = ResilientStage(FunctionStage(fail_on_odd, name="skipping"), on_error="skip")
    collecting = ResilientStage(
        FunctionStage[int, int](lambda x: 1 // (x % 4), name="collecting"), on_error="collect"
    )
    pipeline = Pipeline(skipping >> collecting)
    # The odd items are skipped; of the even ones, multiples of four divide by zero.
    assert pipeline.run(range(20)) == [0] * 5
    registry = CollectorRegistry()
    register_metrics(pipeline, registry, name="policies")
    samples = scrape(registry)
    skipped = value(
        samples["pipeline_stage_skipped"],
        "pipeline_stage_skipped_total",
        pipeline="policies",
        stage="skipping",
    )
    dead = value(
        samples["pipeline_stage_dead_lettered"],
        "pipeline_stage_dead_lettered_total",
        pipeline="policies",
        stage="collecting",
    )
    assert (skipped, dead) == (10, 5)


class Replay(Pipeline[int, int]):
    """A pipeline whose statistics are a given snapshot."""

    def __init__(self, snapshot: PipelineStatistics) -> None:
        super().__init__(FunctionStage[int, int](abs))
        self.snapshot = snapshot

    def stats(self) -> PipelineStatistics:
        return self.snapshot


def snapshot_of(*stages: StageStatistics) -> PipelineStatistics:
    return PipelineStatistics(
        running=False,
        elapsed_seconds=1.0,
        items_read=3,
        items_delivered=3,
        source_blocked_seconds=0.0,
        stages=stages,
        results_queue_depth=0,
    )


def test_stages_with_the_same_name_get_distinct_series() -> None:
    counters = WorkerCounters()
    counters.record_batch(3, 3, 0.0, 0.003, 0.0)
    same = [StageStatistics.from_workers("<lambda>", [counters], 0, 0, 8) for _ in range(3)]
    registry = CollectorRegistry()
    register_metrics(Replay(snapshot_of(*same)), registry)
    samples = scrape(registry)
    stages = [sample.labels["stage"] for sample in samples["pipeline_stage_items_in"]]
    assert stages == ["<lambda>", "<lambda>#2", "<lambda>#3"]
    text = generate_latest(registry).decode()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) == len(set(lines))


def test_any_extra_count_is_exported_by_its_name() -> None:
    counters = WorkerCounters()
    counters.record_batch(3, 3, 0.0, 0.003, 0.0)
    counters.count("late items", 2)
    counters.count("failed", 1)  # a name the core uses already gets a prefix
    stage = StageStatistics.from_workers("s", [counters], 0, 0, 8)
    registry = CollectorRegistry()
    register_metrics(Replay(snapshot_of(stage)), registry)
    samples = scrape(registry)
    labels = {"pipeline": "pipeline", "stage": "s"}
    late = samples["pipeline_stage_late_items"]
    assert value(late, "pipeline_stage_late_items_total", **labels) == 2
    extra_failed = samples["pipeline_stage_extra_failed"]
    assert value(extra_failed, "pipeline_stage_extra_failed_total", **labels) == 1
    assert value(samples["pipeline_stage_failed"], "pipeline_stage_failed_total", **labels) == 0
    assert value(samples["pipeline_stage_skipped"], "pipeline_stage_skipped_total", **labels) == 0


COLLIDING_COUNTS = {
    "cache-hit": 1001,
    "cache.hit": 1002,
    "items_in_total": 1003,  # prometheus_client strips _total: the core's items_in
    "skipped_total": 1004,
    "hits_total_total": 1005,
    "item_latency_seconds_count": 1006,  # a sample name of the latency histogram
    "failed": 1007,  # a figure of every stage: exported as extra_failed
    "extra_failed": 1008,
}


def test_extra_counts_whose_names_collide_get_unique_families_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters = WorkerCounters()
    counters.record_batch(3, 3, 0.0, 0.003, 0.0)
    for name, count in COLLIDING_COUNTS.items():
        counters.count(name, count)
    stage = StageStatistics.from_workers("s", [counters], 0, 0, 8)
    registry = CollectorRegistry()
    register_metrics(Replay(snapshot_of(stage, stage)), registry)
    with caplog.at_level(logging.WARNING, logger="pipeline.observe.metrics"):
        text = generate_latest(registry).decode()
        generate_latest(registry)  # a second scrape names them the same, and warns no more
    families = [family.name for family in text_string_to_metric_families(text)]
    assert len(families) == len(set(families)), sorted(families)
    samples = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.startswith("pipeline_stage_item_latency_seconds")
    ]
    keys = [(sample.name, tuple(sorted(sample.labels.items()))) for sample in samples]
    assert len(keys) == len(set(keys))
    # Every count is there once per stage (s and s#2), with its own value.
    for name, count in COLLIDING_COUNTS.items():
        found = [
            (sample.name, sample.labels["stage"]) for sample in samples if sample.value == count
        ]
        assert len({metric for metric, _ in found}) == 1, name
        assert sorted(stage for _, stage in found) == ["s", "s#2"], name
    renamed = [record.getMessage() for record in caplog.records]
    assert len(renamed) == len(set(renamed)) == 5, renamed
    assert any(
        "extra count 'cache.hit' is exported as pipeline_stage_cache_hit_" in message
        and "'cache-hit' becomes pipeline_stage_cache_hit too" in message
        for message in renamed
    ), renamed
    assert any(
        message.startswith("extra count 'items_in_total' is exported as ") for message in renamed
    )


def test_every_family_comes_from_the_table() -> None:
    names = {figure.name for figure in (*RUN_FIGURES, *STAGE_FIGURES)}
    names |= {f"pipeline_stage_{name}" for name in KNOWN_EXTRA_COUNTS}
    names.add("pipeline_stage_item_latency_seconds")
    assert names == set(RUN_METRICS) | set(STAGE_METRICS)
