"""A graph run has the chain's face: report, progress bars, metrics and the dashboard work on it."""

from __future__ import annotations

import io
import json
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import WAIT

from pipeline import FunctionStage, PredicateStage
from pipeline.graph import Graph, GraphPipeline, SequenceJoin
from pipeline.observe.dashboard import Dashboard
from pipeline.observe.metrics import json_snapshot, register_metrics
from pipeline.observe.progress import Progress
from pipeline.observe.report import format_report


def diamond() -> GraphPipeline[int, tuple[int, int]]:
    graph = (
        Graph()
        .add(FunctionStage(lambda item: item, name="a"))
        .add(FunctionStage(lambda item: item + 1, name="b"), after="a")
        .add(PredicateStage(lambda item: item % 2 == 0, name="c"), after="a")
        .add(SequenceJoin(name="d"), after=["b", "c"])
    )
    return graph.build(queue_size=4, batch_size=4)


def test_the_report_has_a_line_per_node() -> None:
    pipeline = diamond()
    pipeline.run(range(40))
    stats = pipeline.stats()
    assert stats is not None
    report = format_report(stats)
    rows = [line.split()[0] for line in report.splitlines()[3:7]]
    assert rows == ["a", "b", "c", "d"]


def test_progress_draws_a_bar_per_node() -> None:
    pipeline = diamond()
    output = io.StringIO()
    with Progress(pipeline, file=output, disable=False, interval=0.01):
        pipeline.run(range(40))
    drawn = output.getvalue()
    for name in ("a", "b", "c", "d"):
        assert f"{name}: " in drawn


def test_metrics_have_a_sample_per_node_and_the_snapshot_has_the_joins_and_edges() -> None:
    pipeline = diamond()
    registry = CollectorRegistry()
    register_metrics(pipeline, registry, name="diamond")
    pipeline.run(range(40))
    families = {
        family.name: family
        for family in text_string_to_metric_families(generate_latest(registry).decode())
    }
    stages = {sample.labels["stage"] for sample in families["pipeline_stage_items_in"].samples}
    assert stages == {"a", "b", "c", "d"}
    snapshot = json.loads(json_snapshot(pipeline, name="diamond"))
    assert snapshot["stats"]["joins"] == [
        {
            "name": "d",
            "buffered": 0,
            "high_water_mark": snapshot["stats"]["joins"][0]["high_water_mark"],
            "dropped": 20,
        }
    ]
    assert ["a", "b"] in snapshot["stats"]["edges"]


def test_the_dashboard_serves_a_graphs_statistics() -> None:
    pipeline = diamond()
    pipeline.run(range(40))
    with Dashboard(pipeline, name="diamond") as dashboard:
        served = json.loads(_read(dashboard.url + "stats"))
    assert [stage["name"] for stage in served["stats"]["stages"]] == ["a", "b", "c", "d"]
    assert served["stats"]["joins"][0]["dropped"] == 20


def _read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        body: bytes = response.read()
    return body
