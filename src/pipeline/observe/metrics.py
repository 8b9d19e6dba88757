"""Prometheus metrics and a JSON snapshot of a pipeline's statistics (`threaded-pipeline[metrics]`).

`PipelineCollector` is a custom collector: it holds no metric objects of its own and
reads `Pipeline.stats()` each time the registry is scraped, so the worker threads pay
nothing for metrics. Register it on a registry you own; nothing here touches
prometheus_client's global registry:

    registry = CollectorRegistry()
    register_metrics(pipeline, registry, name="etl")
    text = generate_latest(registry)

Names follow Prometheus conventions: a `pipeline_` prefix, `_total` on counters,
`_seconds` on times, labels `pipeline` and `stage` only. Counters restart from zero
when the pipeline starts a new run, which Prometheus reads as a counter reset.

`statistics_to_dict()` and `json_snapshot()` give the same figures as JSON, with the
busy/starved/blocked shares and the bottleneck of `pipeline.observe.report` added.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise ImportError(
        "pipeline.observe.metrics needs prometheus_client: pip install 'threaded-pipeline[metrics]'"
    ) from exc

from pipeline.observe.report import Shares, diagnose
from pipeline.pipeline import Pipeline
from pipeline.stats import LATENCY_BUCKET_BOUNDS, PipelineStatistics, StageStatistics

__all__ = [
    "PipelineCollector",
    "json_snapshot",
    "register_metrics",
    "statistics_to_dict",
]


class PipelineCollector(Collector):
    """Expose the statistics of one or more pipelines, read at scrape time.

    Args:
        pipelines: the pipelines to expose, by the value of their `pipeline` label.

    Raises:
        ValueError: `pipelines` is empty.
    """

    def __init__(self, pipelines: Mapping[str, Pipeline[Any, Any]]) -> None:
        if not pipelines:
            raise ValueError("pipelines must name at least one pipeline")
        self.pipelines = dict(pipelines)

    def collect(self) -> Iterator[Metric]:
        """Return the metric families with a sample per pipeline and stage; runs at scrape."""
        families = _Families()
        for name, pipeline in self.pipelines.items():
            stats = pipeline.stats()
            if stats is not None:
                families.add(name, stats)
        return iter(families.all())

    def describe(self) -> Iterator[Metric]:
        """Return the metric families without samples, so a registry can reject duplicates."""
        return iter(_Families().all())


def register_metrics(
    pipeline: Pipeline[Any, Any], registry: CollectorRegistry, *, name: str = "pipeline"
) -> PipelineCollector:
    """Register a collector for `pipeline` on `registry` and return it.

    Raises:
        ValueError: `registry` already has metrics of these names (another collector).
    """
    collector = PipelineCollector({name: pipeline})
    registry.register(collector)
    return collector


def statistics_to_dict(stats: PipelineStatistics) -> dict[str, Any]:
    """Return the figures of `stats` as plain data, with each stage's shares and the bottleneck."""
    snapshot = dataclasses.asdict(stats)
    for stage, stage_dict in zip(stats.stages, snapshot["stages"], strict=True):
        shares = Shares.of(stage, stats.elapsed_seconds)
        stage_dict["busy_share"] = shares.busy
        stage_dict["starved_share"] = shares.starved
        stage_dict["blocked_share"] = shares.blocked
    diagnosis = diagnose(stats)
    snapshot["bottleneck"] = None if diagnosis is None else dataclasses.asdict(diagnosis)
    return snapshot


def json_snapshot(pipeline: Pipeline[Any, Any], *, name: str = "pipeline") -> str:
    """Return `pipeline`'s statistics as a JSON object (`"stats": null` before any run)."""
    stats = pipeline.stats()
    snapshot = {"pipeline": name, "stats": None if stats is None else statistics_to_dict(stats)}
    return json.dumps(snapshot)


class _Families:
    """The metric families a scrape returns, filled pipeline by pipeline."""

    def __init__(self) -> None:
        run = ["pipeline"]
        stage = ["pipeline", "stage"]
        self.running = GaugeMetricFamily(
            "pipeline_running", "1 while the pipeline's run is in progress, else 0", labels=run
        )
        self.elapsed = GaugeMetricFamily(
            "pipeline_elapsed_seconds", "Seconds since the run started (or its length)", labels=run
        )
        self.read = CounterMetricFamily(
            "pipeline_items_read_total", "Items read from the source", labels=run
        )
        self.delivered = CounterMetricFamily(
            "pipeline_items_delivered_total", "Items handed to the caller", labels=run
        )
        self.source_blocked = CounterMetricFamily(
            "pipeline_source_blocked_seconds_total",
            "Seconds the source waited for room in the first queue",
            labels=run,
        )
        self.results_depth = GaugeMetricFamily(
            "pipeline_results_queue_depth", "Items waiting for the caller", labels=run
        )
        self.workers = GaugeMetricFamily(
            "pipeline_stage_workers", "Worker threads of the stage", labels=stage
        )
        self.batches = CounterMetricFamily(
            "pipeline_stage_batches_total", "Batches the stage processed", labels=stage
        )
        self.items_in = CounterMetricFamily(
            "pipeline_stage_items_in_total", "Items the stage took in", labels=stage
        )
        self.items_out = CounterMetricFamily(
            "pipeline_stage_items_out_total", "Items the stage passed on", labels=stage
        )
        self.failed = CounterMetricFamily(
            "pipeline_stage_failed_total", "Failures in the stage's code", labels=stage
        )
        self.skipped = CounterMetricFamily(
            "pipeline_stage_skipped_total",
            "Failed items dropped by a 'skip' error policy",
            labels=stage,
        )
        self.dead_lettered = CounterMetricFamily(
            "pipeline_stage_dead_lettered_total",
            "Failed items sent to dead letters by a 'collect' error policy",
            labels=stage,
        )
        self.busy = CounterMetricFamily(
            "pipeline_stage_busy_seconds_total",
            "Worker seconds spent in the stage's code",
            labels=stage,
        )
        self.starved = CounterMetricFamily(
            "pipeline_stage_starved_seconds_total",
            "Worker seconds spent waiting for input",
            labels=stage,
        )
        self.blocked = CounterMetricFamily(
            "pipeline_stage_blocked_seconds_total",
            "Worker seconds spent waiting for room downstream (backpressure)",
            labels=stage,
        )
        self.latency = HistogramMetricFamily(
            "pipeline_stage_item_latency_seconds",
            "Seconds per item in the stage's code, estimated per batch",
            labels=stage,
        )
        self.queue_depth = GaugeMetricFamily(
            "pipeline_stage_queue_depth", "Items in the stage's input queue", labels=stage
        )
        self.queue_high_water_mark = GaugeMetricFamily(
            "pipeline_stage_queue_high_water_mark",
            "The most items the stage's input queue has held",
            labels=stage,
        )
        self.queue_maxsize = GaugeMetricFamily(
            "pipeline_stage_queue_maxsize",
            "The most items the stage's input queue can hold",
            labels=stage,
        )

    def add(self, name: str, stats: PipelineStatistics) -> None:
        """Add the samples of one pipeline's snapshot."""
        run = [name]
        self.running.add_metric(run, 1.0 if stats.running else 0.0)
        self.elapsed.add_metric(run, stats.elapsed_seconds)
        self.read.add_metric(run, stats.items_read)
        self.delivered.add_metric(run, stats.items_delivered)
        self.source_blocked.add_metric(run, stats.source_blocked_seconds)
        self.results_depth.add_metric(run, stats.results_queue_depth)
        for stage in stats.stages:
            self._add_stage([name, stage.name], stage)

    def all(self) -> list[Metric]:
        return [value for value in vars(self).values() if isinstance(value, Metric)]

    def _add_stage(self, labels: list[str], stage: StageStatistics) -> None:
        self.workers.add_metric(labels, stage.workers)
        self.batches.add_metric(labels, stage.batches)
        self.items_in.add_metric(labels, stage.items_in)
        self.items_out.add_metric(labels, stage.items_out)
        self.failed.add_metric(labels, stage.failed)
        self.skipped.add_metric(labels, stage.skipped)
        self.dead_lettered.add_metric(labels, stage.dead_lettered)
        self.busy.add_metric(labels, stage.busy_seconds)
        self.starved.add_metric(labels, stage.starved_seconds)
        self.blocked.add_metric(labels, stage.blocked_seconds)
        # Each item's latency is its batch's busy time / batch size, so the latencies of
        # all items sum to the busy time.
        self.latency.add_metric(
            labels, _cumulative_buckets(stage.latency_counts), sum_value=stage.busy_seconds
        )
        self.queue_depth.add_metric(labels, stage.queue_depth)
        self.queue_high_water_mark.add_metric(labels, stage.queue_high_water_mark)
        self.queue_maxsize.add_metric(labels, stage.queue_maxsize)


def _cumulative_buckets(counts: tuple[int, ...]) -> list[tuple[str, float]]:
    """Return Prometheus buckets (`le` bound, items at or below it) from per-bucket counts."""
    bounds = [repr(bound) for bound in LATENCY_BUCKET_BOUNDS] + ["+Inf"]
    buckets: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip(bounds, counts, strict=True):
        seen += count
        buckets.append((bound, seen))
    return buckets
