"""Prometheus metrics for task graphs: tasks running now, and how long tasks took.

`register_task_metrics(task_graph, registry)` adds a collector that reads
`TaskGraph.statistics()` at each scrape, so the workers pay nothing per task beyond
the counters they keep anyway:
- `pipeline_tasks_active` (gauge): tasks running now;
- `pipeline_tasks_finished` (counter, label `outcome`): succeeded, failed, skipped;
- `pipeline_task_latency_seconds` (histogram): each task's time, retries included.

Needs `prometheus_client` (`pip install 'threaded-pipeline[metrics]'`); a streaming graph's
figures are a `PipelineStatistics`, exported by `pipeline.observe.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "pipeline.graph.metrics needs prometheus_client: pip install 'threaded-pipeline[metrics]'"
    ) from exc

from pipeline._checks import non_empty_str
from pipeline.graph.tasks import TaskGraph, TaskStatistics
from pipeline.stats import LATENCY_BUCKET_BOUNDS

__all__ = ["TaskGraphCollector", "register_task_metrics"]


class TaskGraphCollector(Collector):
    """A Prometheus collector for one task graph, labelled `graph=<name>`."""

    def __init__(self, task_graph: TaskGraph, name: str = "tasks") -> None:
        if not isinstance(task_graph, TaskGraph):
            raise TypeError(f"task_graph must be a TaskGraph, got {type(task_graph).__name__}")
        self.task_graph = task_graph
        self.name = non_empty_str("name", name)  # a label value: refused now, not at a scrape

    def collect(self) -> Iterator[Metric]:
        """Return the metric families for the run in progress or the last; runs at scrape."""
        families = _families()
        stats = self.task_graph.statistics()
        if stats is not None:
            _fill(families, self.name, stats)
        return iter(families)

    def describe(self) -> Iterator[Metric]:
        """Return the metric families without samples, so a registry can reject duplicates."""
        return iter(_families())


def register_task_metrics(
    task_graph: TaskGraph, registry: CollectorRegistry, *, name: str = "tasks"
) -> TaskGraphCollector:
    """Register a collector for `task_graph` on `registry` and return it.

    Raises:
        ValueError: `registry` already has metrics of these names.
    """
    collector = TaskGraphCollector(task_graph, name)
    registry.register(collector)
    return collector


def _families() -> list[Metric]:
    return [
        GaugeMetricFamily("pipeline_tasks_active", "Tasks running now.", labels=["graph"]),
        CounterMetricFamily(
            "pipeline_tasks_finished",
            "Tasks settled, by outcome (succeeded, failed, skipped).",
            labels=["graph", "outcome"],
        ),
        HistogramMetricFamily(
            "pipeline_task_latency_seconds",
            "Each task's time from start to end, retries included.",
            labels=["graph"],
        ),
    ]


def _fill(families: list[Metric], name: str, stats: TaskStatistics) -> None:
    active, finished, latency = families
    assert isinstance(active, GaugeMetricFamily)
    assert isinstance(finished, CounterMetricFamily)
    assert isinstance(latency, HistogramMetricFamily)
    active.add_metric([name], stats.active)
    finished.add_metric([name, "succeeded"], stats.succeeded)
    finished.add_metric([name, "failed"], stats.failed)
    finished.add_metric([name, "skipped"], stats.skipped)
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip(LATENCY_BUCKET_BOUNDS, stats.latency_counts, strict=False):
        total += count
        buckets.append((repr(bound), total))
    buckets.append(("+Inf", sum(stats.latency_counts)))
    latency.add_metric([name], buckets, stats.latency_sum_seconds)
