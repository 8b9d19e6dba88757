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
when the pipeline starts a new run, which Prometheus reads as a counter reset. Every
family comes from one table (`RUN_FIGURES`, `STAGE_FIGURES`): a new statistic is one
more row. The counts extras keep (`StageStatistics.extra`) become counters
`pipeline_stage_<name>_total`; those of `KNOWN_EXTRA_COUNTS` are always present, so a
dashboard finds them before the first failure. Names that would collide after being
made valid metric names are told apart and the renaming logged (`_extra_metric_names`),
so a scrape never holds two families of one name. Two stages of one pipeline with the
same name get distinct `stage` labels (`name`, `name#2`, ...), as in the report, so a
scrape never holds two series with the same labels.

`statistics_to_dict()` and `json_snapshot()` give the same figures as JSON, with the
busy/starved/blocked shares and the bottleneck of `pipeline.observe.report` added.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

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

from pipeline._checks import non_empty_str
from pipeline.observe.report import Shares, diagnose, stage_labels
from pipeline.pipeline import Pipeline
from pipeline.stats import LATENCY_BUCKET_BOUNDS, PipelineStatistics, StageStatistics

__all__ = [
    "KNOWN_EXTRA_COUNTS",
    "RUN_FIGURES",
    "STAGE_FIGURES",
    "Figure",
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
        TypeError: `pipelines` is not a mapping of str names to `Pipeline`s.
        ValueError: `pipelines` is empty, or a name is.
    """

    def __init__(self, pipelines: Mapping[str, Pipeline[Any, Any]]) -> None:
        if not isinstance(pipelines, Mapping):
            raise TypeError(
                f"pipelines must be a mapping of names to Pipelines, got {type(pipelines).__name__}"
            )
        if not pipelines:
            raise ValueError("pipelines must name at least one pipeline")
        for name, pipeline in pipelines.items():
            non_empty_str("pipeline name", name)
            if not isinstance(pipeline, Pipeline):
                raise TypeError(
                    f"pipelines must map names to Pipelines; {name!r} is a "
                    f"{type(pipeline).__name__}"
                )
        self.pipelines = dict(pipelines)

    def collect(self) -> Iterator[Metric]:
        """Return the metric families with a sample per pipeline and stage; runs at scrape."""
        families = _Families()
        for name, pipeline in self.pipelines.items():
            families.add(name, pipeline.stats())  # zeros before the first run
        return iter(families.all())

    def describe(self) -> Iterator[Metric]:
        """Return the metric families without samples, so a registry can reject duplicates."""
        return iter(_Families().all())


def register_metrics(
    pipeline: Pipeline[Any, Any], registry: CollectorRegistry, *, name: str = "pipeline"
) -> PipelineCollector:
    """Register a collector for `pipeline` on `registry` and return it.

    Raises:
        TypeError: `pipeline` is not a `Pipeline`, or `registry` not a `CollectorRegistry`.
        ValueError: `registry` already has metrics of these names (another collector).
    """
    collector = PipelineCollector({name: pipeline})
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a CollectorRegistry, got {type(registry).__name__}")
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
    """Return `pipeline`'s statistics as a JSON object (every figure zero before any run).

    Raises:
        TypeError: `pipeline` is not a `Pipeline`.
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a Pipeline, got {type(pipeline).__name__}")
    stats = pipeline.stats()
    snapshot = {"pipeline": name, "stats": statistics_to_dict(stats)}
    return json.dumps(snapshot)


Kind = Literal["counter", "gauge"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One metric family: its name (without `_total`), kind, help text, and its reading."""

    name: str
    kind: Kind
    help: str
    read: Callable[[Any], float]


RUN_FIGURES: Final[tuple[Figure, ...]] = (
    Figure(
        "pipeline_running",
        "gauge",
        "1 while the pipeline's run is in progress, else 0",
        lambda run: 1.0 if run.running else 0.0,
    ),
    Figure(
        "pipeline_elapsed_seconds",
        "gauge",
        "Seconds since the run started (or its length)",
        lambda run: run.elapsed_seconds,
    ),
    Figure(
        "pipeline_items_read", "counter", "Items read from the source", lambda run: run.items_read
    ),
    Figure(
        "pipeline_items_delivered",
        "counter",
        "Items handed to the caller",
        lambda run: run.items_delivered,
    ),
    Figure(
        "pipeline_source_blocked_seconds",
        "counter",
        "Seconds the source waited for room in the first queue",
        lambda run: run.source_blocked_seconds,
    ),
    Figure(
        "pipeline_results_queue_depth",
        "gauge",
        "Items waiting for the caller",
        lambda run: run.results_queue_depth,
    ),
)
"""The families with one sample per pipeline, read from its `PipelineStatistics`."""

STAGE_FIGURES: Final[tuple[Figure, ...]] = (
    Figure("pipeline_stage_workers", "gauge", "Worker threads of the stage", lambda s: s.workers),
    Figure("pipeline_stage_batches", "counter", "Batches the stage processed", lambda s: s.batches),
    Figure("pipeline_stage_items_in", "counter", "Items the stage took in", lambda s: s.items_in),
    Figure(
        "pipeline_stage_items_out", "counter", "Items the stage passed on", lambda s: s.items_out
    ),
    Figure("pipeline_stage_failed", "counter", "Failures in the stage's code", lambda s: s.failed),
    Figure(
        "pipeline_stage_busy_seconds",
        "counter",
        "Worker seconds spent in the stage's code",
        lambda s: s.busy_seconds,
    ),
    Figure(
        "pipeline_stage_starved_seconds",
        "counter",
        "Worker seconds spent waiting for input",
        lambda s: s.starved_seconds,
    ),
    Figure(
        "pipeline_stage_blocked_seconds",
        "counter",
        "Worker seconds spent waiting for room downstream (backpressure)",
        lambda s: s.blocked_seconds,
    ),
    Figure(
        "pipeline_stage_queue_depth",
        "gauge",
        "Items in the stage's input queue",
        lambda s: s.queue_depth,
    ),
    Figure(
        "pipeline_stage_queue_high_water_mark",
        "gauge",
        "The most items the stage's input queue has held",
        lambda s: s.queue_high_water_mark,
    ),
    Figure(
        "pipeline_stage_queue_maxsize",
        "gauge",
        "The most items the stage's input queue can hold",
        lambda s: s.queue_maxsize,
    ),
)
"""The families with one sample per stage, read from its `StageStatistics`."""

KNOWN_EXTRA_COUNTS: Final[Mapping[str, str]] = {
    "skipped": "Failed items dropped by a 'skip' error policy",
    "dead_lettered": "Failed items sent to dead letters by a 'collect' error policy",
}
"""Extra counts always exported (0 until counted), with their help text."""

LATENCY_FAMILY: Final = "pipeline_stage_item_latency_seconds"

_Family = CounterMetricFamily | GaugeMetricFamily

_NOT_IN_A_NAME: Final = re.compile(r"[^a-zA-Z0-9_]")

_TAKEN_NAMES: Final = frozenset(
    [figure.name for figure in STAGE_FIGURES]
    + [LATENCY_FAMILY + suffix for suffix in ("", "_bucket", "_count", "_sum", "_created")]
)
"""Family and sample names of every stage that an extra count's family must not take."""

logger = logging.getLogger(__name__)

# Guards _warned: the (count name, metric name) renamings logged already.
_warned_lock = threading.Lock()
_warned: set[tuple[str, str]] = set()


class _Families:
    """The metric families a scrape returns, filled pipeline by pipeline."""

    def __init__(self) -> None:
        self.run = [_family(figure, ["pipeline"]) for figure in RUN_FIGURES]
        self.stage = [_family(figure, ["pipeline", "stage"]) for figure in STAGE_FIGURES]
        # The extra counts of each stage, by its labels: their families are made in all(),
        # once every name is known, so that names which collide are told apart.
        self.extra: list[tuple[list[str], dict[str, int]]] = []
        self.latency = HistogramMetricFamily(
            LATENCY_FAMILY,
            "Seconds per item in the stage's code, estimated per batch",
            labels=["pipeline", "stage"],
        )

    def add(self, name: str, stats: PipelineStatistics) -> None:
        """Add the samples of one pipeline's snapshot."""
        for figure, family in zip(RUN_FIGURES, self.run, strict=True):
            family.add_metric([name], figure.read(stats))
        for label, stage in zip(stage_labels(stats), stats.stages, strict=True):
            self._add_stage([name, label], stage)

    def all(self) -> list[Metric]:
        names = list(KNOWN_EXTRA_COUNTS)
        names += [name for _, counts in self.extra for name in counts]
        metrics = _extra_metric_names(dict.fromkeys(names))
        extra = {
            name: CounterMetricFamily(
                metrics[name],
                KNOWN_EXTRA_COUNTS.get(name) or f"Items an extra counted as {name!r}",
                labels=["pipeline", "stage"],
            )
            for name in metrics
        }
        for labels, counts in self.extra:
            for count_name, count in counts.items():
                extra[count_name].add_metric(labels, count)
        return [*self.run, *self.stage, *extra.values(), self.latency]

    def _add_stage(self, labels: list[str], stage: StageStatistics) -> None:
        for figure, family in zip(STAGE_FIGURES, self.stage, strict=True):
            family.add_metric(labels, figure.read(stage))
        self.extra.append((labels, dict.fromkeys(KNOWN_EXTRA_COUNTS, 0) | dict(stage.extra)))
        # Each item's latency is its batch's busy time / batch size, so the latencies of
        # all items sum to the busy time.
        self.latency.add_metric(
            labels, _cumulative_buckets(stage.latency_counts), sum_value=stage.busy_seconds
        )


def _family(figure: Figure, labels: list[str]) -> _Family:
    if figure.kind == "counter":
        return CounterMetricFamily(figure.name, figure.help, labels=labels)
    return GaugeMetricFamily(figure.name, figure.help, labels=labels)


def _extra_metric_names(names: Iterable[str]) -> dict[str, str]:
    """Return a distinct metric name (without `_total`) for each extra count's name.

    A name becomes `pipeline_stage_<name>` with every character not allowed in a metric
    name made `_`, and any trailing `_total` dropped (prometheus_client drops it from a
    counter's name and adds it to the sample's). One that is then a name the collector
    uses already gets `extra_` after the prefix. Of names that still fall together
    (`cache-hit`, `cache.hit`), the one that is the metric name as it is keeps it (or
    else the first in sorted order), and each other gets a suffix from a hash of its own
    name, fixed whatever else is counted; each renaming is logged once as a warning.
    """
    candidates: dict[str, str] = {}
    reasons: dict[str, list[str]] = {}
    for name in names:
        base = _NOT_IN_A_NAME.sub("_", name)
        while base.endswith("_total"):
            base = base.removesuffix("_total")
        metric = "pipeline_stage_" + base
        reasons[name] = []
        if metric in _TAKEN_NAMES:
            reasons[name].append(f"{metric} is a figure of every stage")
            metric = "pipeline_stage_extra_" + base
        candidates[name] = metric
    groups: dict[str, list[str]] = {}
    for name, metric in candidates.items():
        groups.setdefault(metric, []).append(name)
    chosen: dict[str, str] = {}
    for metric, group in groups.items():
        keeper = next((name for name in group if "pipeline_stage_" + name == metric), None)
        keeper = min(group) if keeper is None else keeper
        for name in group:
            chosen[name] = metric
            if name != keeper:
                suffix = hashlib.blake2s(name.encode(errors="surrogatepass"), digest_size=4)
                chosen[name] = f"{metric}_{suffix.hexdigest()}"
                reasons[name].append(f"{keeper!r} becomes {metric} too")
    used = set(candidates.values()) | _TAKEN_NAMES
    for name in sorted(chosen, key=lambda name: (chosen[name] == candidates[name], name)):
        if chosen[name] == candidates[name]:
            continue  # not renamed: its name is in `used` already
        while chosen[name] in used:  # a hash that falls on another name: never seen
            chosen[name] += "_"
        used.add(chosen[name])
    for name, metric in chosen.items():
        if reasons[name]:
            _warn_renamed(name, metric, reasons[name])
    return chosen


def _warn_renamed(name: str, metric: str, reasons: list[str]) -> None:
    """Log, once per process, that the extra count `name` is exported as `metric`."""
    with _warned_lock:
        if (name, metric) in _warned:
            return
        _warned.add((name, metric))
    logger.warning(
        "extra count %r is exported as %s, since %s; give extra counts distinct names of "
        "letters, digits and underscores, not ending in _total",
        name,
        metric,
        " and ".join(reasons),
    )


def _cumulative_buckets(counts: tuple[int, ...]) -> list[tuple[str, float]]:
    """Return Prometheus buckets (`le` bound, items at or below it) from per-bucket counts."""
    bounds = [repr(bound) for bound in LATENCY_BUCKET_BOUNDS] + ["+Inf"]
    buckets: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip(bounds, counts, strict=True):
        seen += count
        buckets.append((bound, seen))
    return buckets
