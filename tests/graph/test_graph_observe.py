"""A graph run has the chain's face: report, progress bars, metrics and the dashboard work on it."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import urllib.request
from importlib import resources

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import WAIT

from pipeline.graph import Graph, GraphPipeline, GraphStatistics, SequenceJoin
from pipeline.observe.dashboard import Dashboard
from pipeline.observe.metrics import json_snapshot, register_metrics
from pipeline.observe.progress import Progress
from pipeline.observe.report import format_report
from pipeline.stages import FunctionStage, PredicateStage


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


FAKE_DOM = """
class Element {
  constructor(tag) { this.tag = tag; this.children = []; this.dataset = {}; this.style = {};
                     this.textContent = ""; this.className = ""; }
  appendChild(child) { this.children.push(child); return child; }
  replaceChildren(...children) { this.children = children; }
}
const elements = {};
globalThis.document = {
  createElement: (tag) => new Element(tag),
  getElementById: (id) => (elements[id] = elements[id] || new Element(id)),
};
globalThis.fetch = () => new Promise(() => {});
globalThis.setInterval = () => 0;
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_the_dashboard_page_lists_each_nodes_successors_and_the_joins_live() -> None:
    pipeline = diamond()
    pipeline.run(range(40))
    page = resources.files("pipeline.observe").joinpath("dashboard.html").read_text("utf-8")
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    program = (
        FAKE_DOM
        + script
        + f"\nrender({json_snapshot(pipeline, name='diamond')});\n"
        + "for (const line of elements.graph.children.slice(1)) console.log(line.textContent);\n"
    )
    shown = subprocess.run(
        ["node", "-e", program], capture_output=True, text=True, timeout=WAIT * 6, check=True
    ).stdout.splitlines()
    stats = pipeline.stats()
    assert isinstance(stats, GraphStatistics)
    assert shown == [
        "a (40 in, 40 out) \u2192 b, c",
        "b (40 in, 40 out) \u2192 d",
        "c (40 in, 40 out) \u2192 d",
        "d (80 in, 20 out) \u2192 output",
        f"join d: 0 buffered, peak {stats.joins[0].high_water_mark}, 20 dropped",
    ]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_the_dashboard_page_groups_digits_and_writes_microseconds() -> None:
    page = resources.files("pipeline.observe").joinpath("dashboard.html").read_text("utf-8")
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    program = FAKE_DOM + script + "\nconsole.log(grouped(1234567), duration(0.000005));\n"
    shown = subprocess.run(
        ["node", "-e", program], capture_output=True, text=True, timeout=WAIT * 6, check=True
    ).stdout.strip()
    assert shown == "1,234,567 5.00 \u00b5s"
