"""Live progress bars, one per stage, for a pipeline run (`threaded-pipeline[progress]`, tqdm).

    with Progress(pipeline):
        pipeline.run(source)

The pipeline's monitor thread (`pipeline.observe.sampler`, shared with a timeline
recorder of the same pipeline) samples `pipeline.stats()` every `interval` seconds and
moves each stage's bar to the number of items that stage has processed; nothing wraps
the source or the stages, so the worker threads do no extra work. Each bar also shows
how busy the stage is and how full its input queue is, so a stalled bar next to a full
queue points at backpressure. The bars count without a total unless given one
(`total=len(data)`); stage names are right-aligned to one width, so the bars line up.

When the output stream is not a terminal (a log file, CI), no bars are drawn and no
thread is started, unless `disable=False` asks for them anyway; the first time that
happens in a process, one line on stderr says so, so that missing bars are not a
mystery.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import IO, Any, Final

try:
    from tqdm import tqdm  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise ImportError(
        "pipeline.observe.progress needs tqdm: pip install 'threaded-pipeline[progress]'"
    ) from exc

from pipeline._checks import seconds
from pipeline.observe.sampler import Subscription, subscribe
from pipeline.pipeline import Pipeline
from pipeline.stats import PipelineStatistics

__all__ = ["DEFAULT_INTERVAL", "Progress"]

DEFAULT_INTERVAL: Final = 0.1

NOT_A_TERMINAL: Final = (
    "pipeline: progress bars are off because the output is not a terminal; "
    "pass Progress(..., disable=False) to draw them anyway\n"
)
"""The line written to stderr, once per process, when bars are left off."""

# Guards _told_not_a_terminal: whether NOT_A_TERMINAL was written in this process.
_told_lock = threading.Lock()
_told_not_a_terminal = False


class Progress:
    """Show a live bar per stage while the `with` block runs; the bars stay at the end.

    Args:
        pipeline: the pipeline whose run to show (the run started inside the block).
        total: the number of items expected, if known; bars then show a percentage.
        interval: seconds between samples.
        file: where to draw; default `sys.stderr`.
        disable: True never draws; False always draws; None (the default) draws only
            when `file` is a terminal.

    Raises:
        TypeError: an argument is of the wrong type; the message names it.
        ValueError: `interval` is not a finite number of seconds > 0, or `total` is
            negative.
    """

    def __init__(
        self,
        pipeline: Pipeline[Any, Any],
        *,
        total: int | None = None,
        interval: float = DEFAULT_INTERVAL,
        file: IO[str] | None = None,
        disable: bool | None = None,
    ) -> None:
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"pipeline must be a Pipeline, got {type(pipeline).__name__}")
        if total is not None:
            if not isinstance(total, int) or isinstance(total, bool):
                raise TypeError(f"total must be an int or None, got {type(total).__name__}")
            if total < 0:
                raise ValueError(f"total must be >= 0 or None, got {total}")
        seconds("interval", interval)
        if file is not None and not callable(getattr(file, "write", None)):
            raise TypeError(
                f"file must be a text stream with a write() method or None, "
                f"got {type(file).__name__}"
            )
        if disable is not None and not isinstance(disable, bool):
            raise TypeError(f"disable must be a bool or None, got {type(disable).__name__}")
        self.pipeline = pipeline
        self.total = total
        self.interval = interval
        self.file = sys.stderr if file is None else file
        self.disable = disable
        self.enabled = _is_terminal(self.file) if disable is None else not disable
        self._bars: list[_StageBar] = []
        self._subscription: Subscription | None = None
        self._stale: PipelineStatistics | None = None

    def __enter__(self) -> Progress:
        """Draw the bars and subscribe to the monitor thread (neither when disabled)."""
        if not self.enabled:
            if self.disable is None:
                _tell_not_a_terminal()
            return self
        if self._subscription is not None:
            return self
        # A finished earlier run is what stats() returns until this block's run starts.
        self._stale = self.pipeline.stats()
        width = max((len(stage.name) for stage in self.pipeline.stages), default=0)
        self._bars = [
            _StageBar(
                desc=stage.name.rjust(width),
                total=self.total,
                unit="item",
                unit_scale=True,
                position=position,
                leave=True,
                file=self.file,
                dynamic_ncols=True,
                # Every sample draws: tqdm's default skips draws by a rate estimate,
                # which left a stuck stage's bar showing an old count.
                mininterval=0,
                miniters=1,
            )
            for position, stage in enumerate(self.pipeline.stages)
        ]
        self._subscription = subscribe(self.pipeline, self.interval, self._sample)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Leave the monitor thread, draw the final figures, and close the bars."""
        subscription = self._subscription
        if subscription is None:
            return
        subscription.close()
        self._subscription = None
        self._update(self.pipeline.stats())
        for bar in self._bars:
            bar.close()
        self._bars = []

    def _sample(self, at: float, stats: PipelineStatistics) -> None:
        """Take one sample; runs in the monitor thread."""
        self._update(stats)

    def _update(self, stats: PipelineStatistics | None) -> None:
        """Move each bar to the items its stage has taken in; in the monitor, and at the end."""
        if stats is None or stats == self._stale:
            return
        for bar, stage in zip(self._bars, stats.stages, strict=True):
            busy = stage.share_of(stage.busy_seconds, stats.elapsed_seconds)
            queue = f"{stage.queue_depth}/{stage.queue_maxsize}"
            bar.set_postfix_str(
                f"out {stage.items_out}, busy {busy:.0%}, queue {queue}", refresh=False
            )
            bar.update(stage.items_in - bar.n)


class _StageBar(tqdm):  # type: ignore[misc]  # tqdm ships no type hints
    """A tqdm bar without tqdm's own monitor thread.

    tqdm otherwise starts a daemon thread that lives until the interpreter exits; the
    bars here are refreshed by our monitor thread, which is joined.
    """

    monitor_interval = 0


def _is_terminal(file: IO[str]) -> bool:
    isatty = getattr(file, "isatty", None)
    return bool(isatty is not None and isatty())


def _tell_not_a_terminal() -> None:
    """Write `NOT_A_TERMINAL` to stderr, the first time only."""
    global _told_not_a_terminal
    with _told_lock:
        if _told_not_a_terminal:
            return
        _told_not_a_terminal = True
    sys.stderr.write(NOT_A_TERMINAL)
