"""Tests for the live progress bars: drawn from one monitor thread, joined at the end."""

from __future__ import annotations

import importlib
import io
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

import pipeline
from pipeline import Pipeline
from pipeline.observe import progress as progress_module
from pipeline.observe.progress import Progress
from pipeline.stages import FunctionStage

ITEMS = 60
WAIT = 5.0


class Terminal(io.StringIO):
    """A captured output stream that says it is a terminal, and can watch what is drawn."""

    def __init__(self, on_write: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.on_write = on_write

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.on_write is not None:
            self.on_write(self.getvalue())
        return written


def two_stages() -> Pipeline[int, int]:
    double = FunctionStage[int, int](lambda item: item * 2, name="double")
    evens = FunctionStage[int, int](lambda item: item, name="copy")
    return Pipeline(double >> evens, batch_size=4)


def progress_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name == "pipeline-sampler"]


def final_line(output: str, stage: str) -> str:
    """Return the last drawing of `stage`'s bar (tqdm redraws with carriage returns),
    without the spaces that align it with longer names."""
    parts = [part.lstrip(" ") for part in re.split(r"[\r\n]", output)]  # names are aligned
    drawings = [part for part in parts if part.startswith(f"{stage}:")]
    assert drawings, output
    return drawings[-1]


def test_each_stage_gets_a_bar_with_its_final_count() -> None:
    terminal = Terminal()
    pipeline = two_stages()
    with Progress(pipeline, file=terminal, interval=0.01):
        assert progress_threads() == ["pipeline-sampler"]
        pipeline.run(range(ITEMS))
    assert progress_threads() == []
    output = terminal.getvalue()
    for stage in ("double", "copy"):
        line = final_line(output, stage)
        # Unknown total: a count and a rate, no percentage.
        assert re.match(rf"{stage}: {ITEMS}.0item \[", line), line
        assert "%|" not in line
        assert f"out {ITEMS}" in line
        assert re.search(r"busy \d+%, queue 0/8192", line), line


def test_a_known_total_shows_a_percentage() -> None:
    terminal = Terminal()
    pipeline = two_stages()
    with Progress(pipeline, total=ITEMS, file=terminal):
        pipeline.run(range(ITEMS))
    assert final_line(terminal.getvalue(), "copy").startswith("copy: 100%|")
    assert f"| {ITEMS}.0/{ITEMS}.0 [" in final_line(terminal.getvalue(), "copy")


def test_the_bars_move_while_the_run_is_still_going() -> None:
    """A stage holds item 30 until its bar shows 30 items: only a live monitor can draw that."""
    drawn_at_thirty = threading.Event()

    def watch(output: str) -> None:
        if re.search(r"(^|[\r\n])hold: 30.0item", output):
            drawn_at_thirty.set()

    def hold(item: int) -> int:
        if item == 30:
            drawn_at_thirty.wait(WAIT)
        return item

    terminal = Terminal(on_write=watch)
    pipeline = Pipeline(FunctionStage(hold), batch_size=1)
    with Progress(pipeline, file=terminal, interval=0.005):
        pipeline.run(range(ITEMS))
    assert drawn_at_thirty.is_set()
    assert final_line(terminal.getvalue(), "hold").startswith(f"hold: {ITEMS}.0item")


def test_nothing_is_drawn_and_no_thread_started_when_not_on_a_terminal() -> None:
    log = io.StringIO()  # isatty() is False, as for a log file or CI
    pipeline = two_stages()
    with Progress(pipeline, file=log) as progress:
        assert not progress.enabled
        assert progress_threads() == []
        pipeline.run(range(ITEMS))
    assert log.getvalue() == ""


def test_disable_overrides_the_terminal_check() -> None:
    log = io.StringIO()
    pipeline = two_stages()
    with Progress(pipeline, file=log, disable=False):
        pipeline.run(range(ITEMS))
    assert final_line(log.getvalue(), "double").startswith(f"double: {ITEMS}.0item")
    terminal = Terminal()
    with Progress(pipeline, file=terminal, disable=True):
        pipeline.run(range(ITEMS))
    assert terminal.getvalue() == ""


def test_an_earlier_run_is_not_shown_as_this_one() -> None:
    pipeline = two_stages()
    pipeline.run(range(1000))
    terminal = Terminal()
    with Progress(pipeline, file=terminal, interval=0.005):
        pipeline.run(range(ITEMS))
    assert "1.00kitem" not in terminal.getvalue()
    assert final_line(terminal.getvalue(), "copy").startswith(f"copy: {ITEMS}.0item")


def test_the_monitor_is_joined_when_the_run_fails() -> None:
    def fail(item: int) -> int:
        raise ValueError(item)

    terminal = Terminal()
    pipeline = Pipeline(FunctionStage(fail))
    with pytest.raises(Exception, match="stage 'fail' failed"), Progress(pipeline, file=terminal):
        pipeline.run(range(ITEMS))
    assert progress_threads() == []
    assert final_line(terminal.getvalue(), "fail").startswith("fail: 0.00item")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"interval": 0}, ValueError, "interval must be > 0 seconds and finite, got 0"),
        ({"interval": -0.5}, ValueError, "interval must be > 0 seconds and finite, got -0.5"),
        (
            {"interval": float("nan")},
            ValueError,
            "interval must be > 0 seconds and finite, got nan",
        ),
        (
            {"interval": float("inf")},
            ValueError,
            "interval must be > 0 seconds and finite, got inf",
        ),
        ({"interval": "a"}, TypeError, "interval must be a number, got str"),
        ({"interval": True}, TypeError, "interval must be a number, got bool"),
        ({"total": -1}, ValueError, "total must be >= 0 or None, got -1"),
        ({"total": 1.5}, TypeError, "total must be an int or None, got float"),
        ({"total": "a"}, TypeError, "total must be an int or None, got str"),
        ({"total": True}, TypeError, "total must be an int or None, got bool"),
        (
            {"file": "out.txt"},
            TypeError,
            "file must be a text stream with a write() method or None, got str",
        ),
        ({"disable": 0}, TypeError, "disable must be a bool or None, got int"),
        ({"disable": "no"}, TypeError, "disable must be a bool or None, got str"),
    ],
)
def test_bad_arguments_are_refused(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Progress(two_stages(), **arguments)


def test_only_a_pipeline_can_be_shown() -> None:
    with pytest.raises(TypeError, match=r"^pipeline must be a Pipeline, got str$"):
        Progress("x")  # type: ignore[arg-type]


def test_a_missing_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "tqdm"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "pipeline.observe.progress")
    message = "pipeline.observe.progress needs tqdm: pip install 'threaded-pipeline[progress]'"
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
        importlib.import_module("pipeline.observe.progress")


def test_bars_off_for_lack_of_a_terminal_are_announced_once_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress_module, "_told_not_a_terminal", False)
    pipeline = two_stages()
    for _ in range(3):
        with Progress(pipeline, file=io.StringIO()):
            pipeline.run(range(ITEMS))
    assert capsys.readouterr().err == (
        "pipeline: progress bars are off because the output is not a terminal; "
        "pass Progress(..., disable=False) to draw them anyway\n"
    )


def test_bars_turned_off_on_purpose_are_not_announced(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress_module, "_told_not_a_terminal", False)
    pipeline = two_stages()
    with Progress(pipeline, file=io.StringIO(), disable=True):
        pipeline.run(range(ITEMS))
    assert capsys.readouterr().err == ""


def test_the_bars_of_stages_with_names_of_different_lengths_line_up() -> None:
    short = FunctionStage[int, int](lambda item: item, name="a")
    long = FunctionStage[int, int](lambda item: item, name="a much longer name")
    terminal = Terminal()
    pipeline = Pipeline(short >> long)
    with Progress(pipeline, file=terminal):
        pipeline.run(range(ITEMS))
    drawings = [part for part in re.split(r"[\r\n]", terminal.getvalue()) if ": " in part]
    columns = {part.index(": ") for part in drawings}
    assert len(columns) == 1, drawings
    assert any(part.startswith(" " * 17 + "a: ") for part in drawings)


def test_progress_and_a_timeline_recorder_share_one_monitor_thread() -> None:
    from pipeline.observe.plot import TimelineRecorder

    seen: list[list[str]] = []
    release = threading.Event()

    def look(item: int) -> int:
        if item == 0:
            seen.append(progress_threads())
            release.set()
        return item

    recorder = TimelineRecorder(interval=0.005)
    pipeline = Pipeline(FunctionStage(look), observer=recorder)
    with Progress(pipeline, file=Terminal(), interval=0.01), recorder.recording(pipeline):
        pipeline.run(range(ITEMS))
    assert release.is_set()
    assert seen == [["pipeline-sampler"]]
    assert progress_threads() == []
    assert recorder.samples  # the recorder got its samples from the shared thread


@pytest.mark.parametrize(
    ("name", "module", "hidden", "extra"),
    [
        ("Progress", "pipeline.observe.progress", "tqdm", "progress"),
        ("register_metrics", "pipeline.observe.metrics", "prometheus_client", "metrics"),
        ("Dashboard", "pipeline.observe.dashboard", "prometheus_client", "metrics"),
    ],
)
def test_a_name_of_a_missing_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, hidden: str, extra: str
) -> None:
    for loaded in [loaded for loaded in sys.modules if loaded.split(".")[0] == hidden]:
        monkeypatch.setitem(sys.modules, loaded, None)
    monkeypatch.setitem(sys.modules, hidden, None)
    for stale in ("pipeline.observe.dashboard", "pipeline.observe.metrics", module):
        monkeypatch.delitem(sys.modules, stale, raising=False)
    monkeypatch.delitem(vars(pipeline.observe), name, raising=False)
    with pytest.raises(ImportError, match=re.escape(f"pip install 'threaded-pipeline[{extra}]'")):
        getattr(pipeline.observe, name)
