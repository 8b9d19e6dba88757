"""Tests for the timeline: what the recorder collects, and what the picture shows."""

from __future__ import annotations

import importlib
import re
import sys
import threading
from pathlib import Path

import numpy
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from support import ITEM_SECONDS, Slow

from pipeline import Pipeline
from pipeline import observe as observe_package
from pipeline.observe.plot import COLOURS, TimelineRecorder, draw_timeline, plot_timeline
from pipeline.stages import FunctionStage
from pipeline.stats import BatchEvent

ITEMS = 60
QUEUE_SIZE = 4


def recorded_run() -> tuple[TimelineRecorder, Pipeline[int, int]]:
    """Run fast (2 workers) >> Slow under a recorder: Slow's input queue fills up."""
    recorder = TimelineRecorder(interval=0.002)
    fast = FunctionStage[int, int](lambda item: item, name="fast", workers=2)
    pipeline = Pipeline(fast >> Slow(), queue_size=QUEUE_SIZE, batch_size=1, observer=recorder)
    with recorder.recording(pipeline):
        pipeline.run(range(ITEMS))
    return recorder, pipeline


def seconds_in(events: list[BatchEvent], stage: str, state: str) -> float:
    """Return the seconds the workers of `stage` spent in `state`, summed over its batches."""
    total = 0.0
    for event in events:
        if event.stage == stage:
            total += {
                "starved": event.started - event.waited_from,
                "busy": event.finished - event.started,
                "blocked": event.handed_on - event.finished,
            }[state]
    return total


def test_the_recorder_sees_every_batch_and_samples_the_queues() -> None:
    recorder, pipeline = recorded_run()
    assert [thread.name for thread in threading.enumerate()] == ["MainThread"]
    events, samples = recorder.events, recorder.samples
    for stage in ("fast", "Slow"):
        assert sum(event.items_in for event in events if event.stage == stage) == ITEMS
    assert {(event.stage, event.worker) for event in events} == {
        ("fast", 0),
        ("fast", 1),
        ("Slow", 0),
    }
    assert len(samples) >= 2
    assert [sample.at for sample in samples] == sorted(sample.at for sample in samples)
    assert samples[-1].stats == pipeline.stats()  # the last sample is taken after the run
    assert not samples[-1].stats.running
    # Backpressure, as the picture shows it: Slow's queue reaches its size while the
    # stage before it spends its time blocked, and Slow spends its time busy.
    assert max(sample.stats.stage("Slow").queue_depth for sample in samples) == QUEUE_SIZE
    assert seconds_in(events, "fast", "blocked") > 10 * seconds_in(events, "fast", "busy")
    assert seconds_in(events, "Slow", "busy") >= ITEMS * ITEM_SECONDS * 0.9


def test_the_picture_has_a_row_per_worker_coloured_by_state() -> None:
    recorder, _ = recorded_run()
    figure = draw_timeline(recorder.events, recorder.samples, title="backpressure")
    timeline, depths = figure.axes[:2]
    assert timeline.get_title() == "backpressure"
    labels = [label.get_text() for label in timeline.get_yticklabels()]
    assert labels == ["fast #0", "fast #1", "Slow #0"]
    bars = [
        collection for collection in timeline.collections if isinstance(collection, PolyCollection)
    ]
    assert len(bars) == 3 * len(COLOURS)  # one per row and state
    colours = {to_hex(tuple(numpy.asarray(bar.get_facecolor())[0])) for bar in bars}
    assert colours == set(COLOURS.values())
    spans = sum(len(bar.get_paths()) for bar in bars)
    assert spans == 3 * len(recorder.events)  # each batch: starved, busy, blocked
    lines = {line.get_label(): line for line in depths.get_lines()}
    assert set(lines) >= {"input queue of fast", "input queue of Slow", "results queue"}
    assert numpy.max(numpy.asarray(lines["input queue of Slow"].get_ydata())) == QUEUE_SIZE
    assert depths.get_xlabel() == "seconds since the run started"
    [legend] = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [
        "busy (in the stage's code)",
        "starved (waiting for items)",
        "blocked (waiting for room downstream or in the reorder window)",
    ]


def test_the_picture_is_saved_in_the_format_of_its_extension(tmp_path: Path) -> None:
    recorder, _ = recorded_run()
    png, svg = tmp_path / "run.png", tmp_path / "run.svg"
    plot_timeline(recorder.events, recorder.samples, png)
    recorder.plot(svg)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert svg.read_text().lstrip().startswith("<?xml")


def test_without_samples_the_timeline_is_still_drawn() -> None:
    recorder = TimelineRecorder()
    Pipeline(FunctionStage[int, int](abs), observer=recorder).run(range(10))
    figure = draw_timeline(recorder.events, [])
    assert [text.get_text() for text in figure.axes[1].texts] == ["no queue samples"]


def test_nothing_to_draw_is_an_error() -> None:
    message = "no batches to draw: pass the recorder to Pipeline(observer=...)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        draw_timeline([], [])


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^interval must be > 0 seconds and finite, got 0$"):
        TimelineRecorder(interval=0)


def test_recording_needs_no_matplotlib_and_drawing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    # The fresh import below also becomes an attribute of the package: put both back.
    monkeypatch.setattr(observe_package, "plot", sys.modules["pipeline.observe.plot"])
    monkeypatch.delitem(sys.modules, "pipeline.observe.plot")
    plot = importlib.import_module("pipeline.observe.plot")
    recorder = plot.TimelineRecorder(interval=0.002)
    pipeline = Pipeline(FunctionStage[int, int](abs), observer=recorder)
    with recorder.recording(pipeline):
        pipeline.run(range(10))
    assert recorder.events
    assert recorder.samples
    message = "drawing a timeline needs matplotlib: pip install 'threaded-pipeline[plot]'"
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
        recorder.plot(tmp_path / "run.png")
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
        plot.draw_timeline(recorder.events, recorder.samples)
    assert not (tmp_path / "run.png").exists()


def test_recording_needs_a_pipeline() -> None:
    recorder = TimelineRecorder()
    with (
        pytest.raises(TypeError, match=r"^pipeline must be a Pipeline, got str$"),
        recorder.recording("pipeline"),  # type: ignore[arg-type]
    ):
        pass
