"""A picture of a run: what every worker did over time, and how full the queues were.

`TimelineRecorder` collects the data: pass it to the pipeline as its observer to
record every batch (`BatchEvent`), and run inside `recorder.recording(pipeline)` to
sample the queue depths from the pipeline's monitor thread (`pipeline.observe.sampler`,
shared with progress bars of the same pipeline). `plot_timeline` draws it with matplotlib
(`threaded-pipeline[plot]`, the Agg backend, no window; recording needs only the
standard library, so matplotlib is imported when a picture is drawn): one row per
worker of every stage, coloured busy / starved / blocked, above a plot of each stage's
input queue depth over time. Backpressure shows as a queue that climbs to its maximum
while the rows before it turn red (blocked).

    recorder = TimelineRecorder()
    pipeline = Pipeline(chain, observer=recorder)
    with recorder.recording(pipeline):
        pipeline.run(source)
    recorder.plot("run.png")  # or plot_timeline(recorder.events, recorder.samples, ...)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pipeline._checks import seconds
from pipeline.observe.sampler import subscribe
from pipeline.pipeline import Pipeline
from pipeline.stats import BatchEvent, PipelineStatistics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COLOURS",
    "DEFAULT_SAMPLE_INTERVAL",
    "StatsSample",
    "TimelineRecorder",
    "draw_timeline",
    "plot_timeline",
]

DEFAULT_SAMPLE_INTERVAL: Final = 0.005

COLOURS: Final = {"busy": "#2ca02c", "starved": "#9ecae1", "blocked": "#d62728"}
"""busy: in the stage's code; starved: waiting for items; blocked: waiting for room
downstream, or, in an ordered stage of several workers, in the reorder window (the
worker's finished batches wait there for a sibling's earlier one)."""

_LEGEND: Final = {
    "busy": "busy (in the stage's code)",
    "starved": "starved (waiting for items)",
    "blocked": "blocked (waiting for room downstream or in the reorder window)",
}
"""The legend's label of each state."""


@dataclass(frozen=True, slots=True)
class StatsSample:
    """A statistics snapshot and the `time.perf_counter()` at which it was taken."""

    at: float
    stats: PipelineStatistics


class TimelineRecorder:
    """Record every batch of a run (as its observer) and sample its queues over time.

    Args:
        interval: seconds between samples of `pipeline.stats()` while recording.

    Raises:
        TypeError, ValueError: `interval` is not a finite number of seconds > 0.
    """

    def __init__(self, *, interval: float = DEFAULT_SAMPLE_INTERVAL) -> None:
        self.interval = seconds("interval", interval)
        # Guards events and samples: workers append events, the monitor appends samples.
        self._lock = threading.Lock()
        self._events: list[BatchEvent] = []
        self._samples: list[StatsSample] = []

    def __call__(self, event: BatchEvent) -> None:
        """Record one batch; the pipeline calls this in the worker thread."""
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[BatchEvent]:
        """Return a copy of the batches recorded so far, in the order they ended."""
        with self._lock:
            return list(self._events)

    @property
    def samples(self) -> list[StatsSample]:
        """Return a copy of the statistics samples taken so far, oldest first."""
        with self._lock:
            return list(self._samples)

    @contextlib.contextmanager
    def recording(self, pipeline: Pipeline[Any, Any]) -> Iterator[TimelineRecorder]:
        """Sample `pipeline.stats()` every `interval` seconds while the block runs.

        The pipeline's monitor thread takes the samples; this block leaves it when it
        ends (the thread is joined if nothing else uses it), and one last sample is
        taken then.

        Raises:
            TypeError: `pipeline` is not a `Pipeline`.
        """
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"pipeline must be a Pipeline, got {type(pipeline).__name__}")
        stale = pipeline.stats()  # an earlier run, reported until this block's run starts

        def sample(at: float, stats: PipelineStatistics | None) -> None:
            if stats is not None and stats != stale:
                with self._lock:
                    self._samples.append(StatsSample(at, stats))

        subscription = subscribe(pipeline, self.interval, sample)
        try:
            yield self
        finally:
            subscription.close()
            sample(time.perf_counter(), pipeline.stats())

    def plot(self, path: str | os.PathLike[str], *, title: str = "pipeline run") -> None:
        """Draw what was recorded with `plot_timeline` and save it to `path`.

        Raises:
            ValueError: nothing was recorded.
            ImportError: matplotlib is not installed.
        """
        plot_timeline(self.events, self.samples, path, title=title)


def plot_timeline(
    events: Sequence[BatchEvent],
    samples: Sequence[StatsSample],
    path: str | os.PathLike[str],
    *,
    title: str = "pipeline run",
) -> None:
    """Draw the run with `draw_timeline` and save the picture to `path`.

    The file type follows the extension of `path` (.png, .svg, .pdf).

    Raises:
        ValueError: there are no events to draw.
        ImportError: matplotlib is not installed.
    """
    draw_timeline(events, samples, title=title).savefig(path, dpi=110)


def draw_timeline(
    events: Sequence[BatchEvent], samples: Sequence[StatsSample], *, title: str = "pipeline run"
) -> Figure:
    """Return a figure: the workers' timeline above the queue depths over time.

    Raises:
        ValueError: there are no events to draw.
        ImportError: matplotlib is not installed; the message says how to install it.
    """
    if not events:
        raise ValueError("no batches to draw: pass the recorder to Pipeline(observer=...)")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as exc:  # exercised by a test that hides the module
        raise ImportError(
            "drawing a timeline needs matplotlib: pip install 'threaded-pipeline[plot]'"
        ) from exc
    origin = min([event.waited_from for event in events] + [sample.at for sample in samples])
    rows = _worker_rows(events, samples)
    figure = Figure(figsize=(11, 1.6 + 0.42 * len(rows) + 2.6), layout="constrained")
    FigureCanvasAgg(figure)
    timeline, depths = figure.subplots(
        2, 1, sharex=True, height_ratios=[max(1.0, 0.42 * len(rows)), 2.6]
    )
    spans: dict[tuple[str, int], dict[str, list[tuple[float, float]]]] = {
        row: {state: [] for state in COLOURS} for row in rows
    }
    for event in events:
        row = spans[(event.stage, event.worker)]
        row["starved"].append((event.waited_from - origin, event.started - event.waited_from))
        row["busy"].append((event.started - origin, event.finished - event.started))
        row["blocked"].append((event.finished - origin, event.handed_on - event.finished))
    for index, row_key in enumerate(rows):
        for state, colour in COLOURS.items():
            timeline.broken_barh(spans[row_key][state], (index - 0.4, 0.8), facecolors=colour)
    timeline.set_yticks(range(len(rows)), [f"{stage} #{worker}" for stage, worker in rows])
    timeline.invert_yaxis()
    timeline.set_title(title)
    figure.legend(
        handles=[Patch(color=colour, label=_LEGEND[state]) for state, colour in COLOURS.items()],
        loc="outside upper center",
        ncols=3,
        fontsize="small",
        frameon=False,
    )
    _draw_depths(depths, samples, origin)
    return figure


def _worker_rows(
    events: Sequence[BatchEvent], samples: Sequence[StatsSample]
) -> list[tuple[str, int]]:
    """Return the (stage, worker) rows in pipeline order, then by worker."""
    order: dict[str, int] = {}
    if samples:
        for index, stage in enumerate(samples[-1].stats.stages):
            order.setdefault(stage.name, index)
    for event in events:
        order.setdefault(event.stage, len(order))
    keys = {(event.stage, event.worker) for event in events}
    return sorted(keys, key=lambda key: (order[key[0]], key[1]))


def _draw_depths(axes: Any, samples: Sequence[StatsSample], origin: float) -> None:
    """Plot each stage's input queue depth over time, with the queues' size as a line."""
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("items queued")
    if not samples:
        axes.text(0.5, 0.5, "no queue samples", ha="center", va="center", transform=axes.transAxes)
        return
    times = [sample.at - origin for sample in samples]
    names = [stage.name for stage in samples[-1].stats.stages]
    for index, name in enumerate(names):
        depths = [sample.stats.stages[index].queue_depth for sample in samples]
        axes.step(times, depths, where="post", label=f"input queue of {name}")
    results = [sample.stats.results_queue_depth for sample in samples]
    axes.step(times, results, where="post", label="results queue", linestyle=":")
    maxsize = max(stage.queue_maxsize for stage in samples[-1].stats.stages)
    axes.axhline(maxsize, color="grey", linestyle="--", linewidth=1, label="queue size")
    axes.set_ylim(0, maxsize * 1.1)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    axes.set_title("queue depth: a queue at its size means the stage before it is blocked")
