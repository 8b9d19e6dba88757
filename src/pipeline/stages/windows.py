"""Windows over a stream: one result per window of items, by count or by time.

A window stage groups the items it sees into windows and emits one result per window,
made by a function of the window (`summarize` and `anomalies` are ready-made ones):

- `CountWindows(function, size, step=None)`: windows of `size` consecutive items,
  starting every `step` items (tumbling when `step == size`, the default; sliding when
  smaller). Window k holds items k*step .. k*step+size-1, numbered from 0.
- `TimeWindows(function, size, step=None, event_time=None, allowed_lateness=0.0)`:
  windows of `size` seconds, [k*step, k*step + size). The time of an item is its
  event time, `event_time(item)`, or else its arrival time (`clock()` when the stage
  processes it); a time that is not a finite number stops the run with a `ValueError`
  (`TypeError` for one that is not a number) naming the item and the time.

When windows close. A count window closes with its last item. A time window closes
when the watermark, the latest event time seen minus `allowed_lateness`, reaches its
end; with arrival time that is when a later item arrives (there is no timer: a stream
that pauses holds its open window until the next item, or the end). Results come out in
the order windows end. At end of stream every window still open that holds an item is
emitted, with `complete=False`: every window that received an item gives exactly one
result. A window that received no item gives none.

Late items. An item whose time falls only in windows already closed is late: its
windows have been emitted. `on_late` says what happens to it: "drop" (the default)
counts it in `late_items` (and the stage's skipped count) and logs the first and every
1000th; "raise" stops the run with a `LateItem` error naming the item; a callable
receives the item (for example a dead-letter list's `append`). An item that still has
an open window goes into the open ones only. A `Watermark(t)` in the stream says no
item earlier than t follows: it closes the windows ending by t (see `Watermark`).

Memory. A count window stage holds the items of its open windows once (at most
`size` plus a batch). A time window holds its items, and an item is held once per
window it belongs to, `ceil(size / step)` windows. That is at most
`MAX_WINDOWS_PER_ITEM` (10,000: denser windows are refused when the stage is made,
count windows too: each window is a slice of `size` items).
Time windows open at once span `size + allowed_lateness` seconds of the stream, and
`max_window_items` (default 1,000,000) bounds each one: an item beyond it stops the run with a
`WindowFull` error, rather than memory growing without bound or items being dropped.

One worker. Windows need the items in stream order and in one place, so a window stage
has exactly one worker, its state kept on `self.local` (set up afresh for each run).
The last windows are emitted by `flush()`, the engine's end-of-stream hook: called once
per worker after the last batch of a stream that ended (not after a stop), before
`teardown()`, its results passed downstream. A bounded source can also end with
`Watermark(math.inf)`, which emits them at once. If a stream ends with windows still
open (an engine without the hook, and no such watermark), `teardown()` logs a warning
with their number, so none vanishes silently; after a stop (a failure, Ctrl-C) the
open windows are discarded with the run.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import time
from abc import abstractmethod
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar

from pipeline import _checks
from pipeline._checks import positive_int
from pipeline.errors import PipelineError, short_repr
from pipeline.stage import PipelineStage
from pipeline.worker import current_stop_event, current_worker_counters

__all__ = [
    "DEFAULT_MAX_WINDOW_ITEMS",
    "MAX_WINDOWS_PER_ITEM",
    "Anomaly",
    "CountWindows",
    "LateItem",
    "RunningStats",
    "TimeWindows",
    "Watermark",
    "Window",
    "WindowAnomalies",
    "WindowFull",
    "WindowSummary",
    "anomalies",
    "percentile",
    "summarize",
]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_WINDOW_ITEMS: Final = 1_000_000
MAX_WINDOWS_PER_ITEM: Final = 10_000
"""The most windows one item may fall in, ceil(size / step): each costs a step per item."""
LOG_LATE_EVERY: Final = 1000
_UNIT_ROUNDOFF: Final = sys.float_info.epsilon / 2
MIN_BLOCK: Final = 8
"""Sliding count windows of `summarize` share blocks of gcd(size, step) items at least this
long; below it, combining so many blocks per window costs more than summing the window."""

LatePolicy = Literal["drop", "raise"] | Callable[[Any], object]

logger = logging.getLogger(__name__)


class LateItem(PipelineError):
    """Raised by a time window stage with `on_late="raise"` for an item after its windows."""

    def __init__(self, item: object, time: float, watermark: float) -> None:
        super().__init__(item, time, watermark)
        self.item = item
        self.time = time
        self.watermark = watermark

    def __str__(self) -> str:
        return (
            f"late item at time {self.time:g}: every window it belongs to closed at "
            f"watermark {self.watermark:g}"
        )


class WindowFull(PipelineError):
    """Raised when a time window would hold more than its stage's `max_window_items`."""

    def __init__(self, start: float, end: float, limit: int) -> None:
        super().__init__(start, end, limit)
        self.start = start
        self.end = end
        self.limit = limit

    def __str__(self) -> str:
        return (
            f"window [{self.start:g}, {self.end:g}) would hold more than "
            f"max_window_items={self.limit} items"
        )


@dataclass(frozen=True, slots=True)
class Watermark:
    """A marker a source may put in the stream: no item with an earlier time will follow.

    A time window stage closes every window ending at or before `time` when it meets
    one, and passes nothing on for it. A bounded source ends with `Watermark(math.inf)`
    to close every window without waiting for the engine's end-of-stream flush (count
    windows take that one too, and ignore others), and an idle source can send one to
    close its windows while no item arrives.

    Raises:
        TypeError, ValueError: `time` is not a number, or is NaN (infinities are fine).
    """

    time: float

    def __post_init__(self) -> None:
        if not isinstance(self.time, int | float) or isinstance(self.time, bool):
            raise TypeError(f"a Watermark's time must be a number, got {type(self.time).__name__}")
        if math.isnan(self.time):
            raise ValueError(
                "a Watermark's time must not be NaN: it would say nothing about the items to follow"
            )


@dataclass(frozen=True, slots=True)
class Window(Generic[T]):
    """The items of one window, in arrival order, and its bounds.

    `start` and `end` are item numbers for count windows ([start, end), from 0), seconds
    for time windows. `complete` is False for a window emitted at end of stream before
    it was full (count) or before the watermark passed its end (time).
    """

    start: float
    end: float
    items: list[T]
    complete: bool = True


class _WindowStage(PipelineStage[T, R]):
    """What count and time windows share: one worker, the function, and the flush."""

    def __init__(
        self, function: Callable[[Window[T]], R], *, name: str | None, workers: int
    ) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        if workers != 1:
            raise ValueError(
                f"a window stage keeps the stream's order in one place, so workers must be 1, "
                f"got {workers}"
            )
        super().__init__(name, workers=workers)
        self.function = function

    def process_batch(self, items: list[T]) -> list[R]:
        try:
            return self._process(items)
        except BaseException:
            self.local.failed = True  # for teardown(): the windows left open are no mystery
            raise

    def flush(self) -> list[R]:
        """Emit the windows still open after the last batch, each with `complete=False`.

        The engine calls it once per worker when the input has ended, in the worker's
        thread, and passes the results downstream after the last batch's.
        """
        try:
            return self._flush()
        except BaseException:
            self.local.failed = True
            raise

    def teardown(self) -> None:
        left = self._open_count()
        stopping = current_stop_event()
        if not left:
            return
        if getattr(self.local, "failed", False):
            logger.debug("%s: failed with %d window(s) open", self.name, left)
        elif stopping is not None and stopping.is_set():
            logger.debug("%s: the run stopped with %d window(s) open", self.name, left)
        else:
            logger.warning(
                "%s: %d window(s) still open at the end of the stream were not emitted: "
                "the engine did not call flush()",
                self.name,
                left,
            )

    @abstractmethod
    def _open_count(self) -> int:
        """Return how many windows are open in this worker."""

    @abstractmethod
    def _process(self, items: list[T]) -> list[R]:
        """Take a batch into the windows; return the results of the windows it closed."""

    @abstractmethod
    def _flush(self) -> list[R]:
        """Emit the windows still open, each with `complete=False`; see `flush`."""


class CountWindows(_WindowStage[T, R]):
    """Emit `function(window)` for windows of `size` items starting every `step` items.

    Args:
        function: makes the result of one window; runs in the stage's worker thread.
        size: items per window.
        step: items between window starts; `size` (tumbling) by default, smaller for
            sliding windows, larger to sample.
        name, workers: as for any stage; workers must be 1.

    The stage keeps the items of its open windows once, in one list, and cuts each
    window out of it by slicing when its last item arrives. With `summarize` and
    sliding windows, the windows share blocks of gcd(size, step) items (when that is at
    least `MIN_BLOCK`): each block's figures are made once, and each window combines
    those of its blocks, instead of reading each item once per window it falls in.

    Raises:
        TypeError, ValueError: an argument has the wrong type or is out of range.
    """

    def __init__(
        self,
        function: Callable[[Window[T]], R],
        size: int,
        step: int | None = None,
        *,
        name: str | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(function, name=name, workers=workers)
        self.size = positive_int("size", size)
        self.step = self.size if step is None else positive_int("step", step)
        _check_windows_per_item(self.size, self.step)

    def setup(self) -> None:
        self.local.failed = False  # a batch or the flush raised
        self.local.seen = 0  # items seen this run
        self.local.next = 0  # the number of the first window not yet emitted
        self.local.held = []  # the items from number `base` on: those of the open windows
        self.local.base = 0
        self.local.blocks = {}  # a block's first item number -> its figures (`summarize`)
        block = math.gcd(self.size, self.step)
        blocked = isinstance(self.function, _Summary) and MIN_BLOCK <= block < self.size
        self.local.block = block if blocked else 0  # items per block; 0: windows whole

    def _process(self, items: list[T]) -> list[R]:
        if not _may_hold_watermark(items):
            return self._take(items)
        outputs: list[R] = []
        run: list[T] = []
        for item in items:
            if isinstance(item, Watermark):
                outputs.extend(self._take(run))
                run = []
                if item.time == math.inf:  # the end of the stream: emit what is open
                    outputs.extend(self.flush())
            else:
                run.append(item)
        outputs.extend(self._take(run))
        return outputs

    def _take(self, items: list[T]) -> list[R]:
        """Take items into the windows; return the results of the windows they complete."""
        local, size, step = self.local, self.size, self.step
        held: list[T] = local.held
        held += items
        local.seen += len(items)
        outputs: list[R] = []
        number: int = local.next
        while number * step + size <= local.seen:
            outputs.append(self._emit(number * step, number * step + size, True))
            number += 1
        local.next = number
        # Items before the next window's start belong to no open window.
        drop = min(number * step, local.seen) - local.base
        if drop > 0:
            del held[:drop]
            local.base += drop
        return outputs

    def _emit(self, start: int, stop: int, complete: bool) -> R:
        """Return the result of the window from item `start`, holding items up to `stop`."""
        local = self.local
        held: list[T] = local.held
        if not local.block:
            items = held[start - local.base : stop - local.base]
            return self.function(Window(start, start + self.size, items, complete))
        summary: _Summary = self.function  # type: ignore[assignment]
        size, blocks = local.block, local.blocks
        parts = []
        for first in range(start, stop, size):
            part = blocks.get(first)
            if part is None:
                end = min(first + size, stop)
                part = summary.block(held[first - local.base : end - local.base], shared=True)
                if end == first + size:  # whole: the next windows share it
                    blocks[first] = part
            parts.append(part)
        for first in [first for first in blocks if first < start + self.step]:
            del blocks[first]  # the windows still to come start later
        return summary.combine(start, start + self.size, complete, parts)  # type: ignore[return-value]

    def _flush(self) -> list[R]:
        local, step = self.local, self.step
        outputs = []
        number: int = local.next
        while number * step < local.seen:
            outputs.append(self._emit(number * step, local.seen, False))
            number += 1
        local.next = -(-local.seen // step)  # windows from here on start after the flush
        local.held.clear()
        local.base = local.seen
        local.blocks.clear()
        return outputs

    def _open_count(self) -> int:
        seen = getattr(self.local, "seen", 0)
        return max(0, -(-seen // self.step) - getattr(self.local, "next", 0))


class TimeWindows(_WindowStage[T, R]):
    """Emit `function(window)` for windows of `size` seconds starting every `step` seconds.

    Args:
        function: makes the result of one window; runs in the stage's worker thread.
        size: seconds per window.
        step: seconds between window starts; `size` (tumbling) by default.
        event_time: returns an item's event time in seconds; None uses arrival time.
        allowed_lateness: how far behind the latest event time an item may be and still
            join its windows; windows close this much later.
        on_late: "drop", "raise" or a callable taking the late item (see the module).
        max_window_items: the most items one window may hold.
        clock: arrival time, when `event_time` is None.
        name, workers: as for any stage; workers must be 1.

    Raises:
        TypeError, ValueError: an argument has the wrong type or is out of range.
    """

    def __init__(
        self,
        function: Callable[[Window[T]], R],
        size: float,
        step: float | None = None,
        *,
        event_time: Callable[[T], float] | None = None,
        allowed_lateness: float = 0.0,
        on_late: LatePolicy = "drop",
        max_window_items: int = DEFAULT_MAX_WINDOW_ITEMS,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(function, name=name, workers=workers)
        self.size = _positive_number("size", size)
        self.step = self.size if step is None else _positive_number("step", step)
        _check_windows_per_item(self.size, self.step)
        if event_time is not None and not callable(event_time):
            raise TypeError(f"event_time must be callable or None, got {type(event_time).__name__}")
        self.event_time = event_time
        self.allowed_lateness = _checks.number("allowed_lateness", allowed_lateness)
        if not self.allowed_lateness >= 0:  # NaN too
            raise ValueError(f"allowed_lateness must be >= 0, got {allowed_lateness}")
        if on_late not in ("drop", "raise") and not callable(on_late):
            raise ValueError(f"on_late must be 'drop', 'raise' or a callable, got {on_late!r}")
        self.on_late = on_late
        self.max_window_items = positive_int("max_window_items", max_window_items)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self.clock = clock
        self.late_items = 0
        """Late items of the current or last run (all policies); read it after the run."""

    def setup(self) -> None:
        self.local.failed = False  # a batch or the flush raised
        self.local.open = {}  # window number -> items, for windows not yet emitted
        self.local.latest = -math.inf  # the latest time seen
        self.local.closed_below = -math.inf  # windows numbered below this are emitted
        self.late_items = 0

    def _process(self, items: list[T]) -> list[R]:
        windows: dict[int, list[T]] = self.local.open
        size, step, limit = self.size, self.step, self.max_window_items
        outputs: list[R] = []
        for item in items:
            if isinstance(item, Watermark):
                if item.time > self.local.latest:
                    self.local.latest = item.time
                outputs.extend(self._close_until(item.time))
                continue
            at = self._time_of(item)
            first = math.floor((at - size) / step) + 1  # the windows [k*step, k*step+size) ∋ at
            last = math.floor(at / step)
            first = max(first, self.local.closed_below)
            if first > last:
                self._late(item, at)
                continue
            for number in range(int(first), last + 1):
                held = windows.setdefault(number, [])
                if len(held) >= limit:
                    raise WindowFull(number * step, number * step + size, limit)
                held.append(item)
            if at > self.local.latest:
                self.local.latest = at
                outputs.extend(self._close_until(at - self.allowed_lateness))
        return outputs

    def _flush(self) -> list[R]:
        windows: dict[int, list[T]] = self.local.open
        outputs = [self._result(number, windows.pop(number), False) for number in sorted(windows)]
        self.local.closed_below = math.inf
        return outputs

    def _time_of(self, item: T) -> float:
        """Return the item's event or arrival time, refusing one that is not a finite number."""
        if self.event_time is None:
            returned, kind, source = self.clock(), "arrival time", "clock"
        else:
            returned, kind, source = self.event_time(item), "event time", "event_time"
        try:
            at = float(returned)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{self.name}: {source} returned {short_repr(returned)} for item "
                f"{short_repr(item)}, not a number of seconds"
            ) from exc
        if not math.isfinite(at):  # no window holds it, and no watermark follows from it
            raise ValueError(
                f"{self.name}: item {short_repr(item)} has {kind} {at!r}; "
                "a time must be a finite number of seconds"
            )
        return at

    def _close_until(self, watermark: float) -> list[R]:
        """Emit, in order, the windows that end at or before `watermark`."""
        # Window k ends at k*step + size <= watermark.
        if math.isinf(watermark):
            below: float = watermark
        else:
            below = math.floor((watermark - self.size) / self.step) + 1
        if below <= self.local.closed_below:
            return []
        self.local.closed_below = below
        windows: dict[int, list[T]] = self.local.open
        ready = sorted(number for number in windows if number < below)
        return [self._result(number, windows.pop(number), True) for number in ready]

    def _result(self, number: int, items: list[T], complete: bool) -> R:
        start = number * self.step
        return self.function(Window(start, start + self.size, items, complete))

    def _late(self, item: T, at: float) -> None:
        self.late_items += 1
        watermark = self.local.latest - self.allowed_lateness
        if self.on_late == "raise":
            raise LateItem(item, at, watermark)
        if self.on_late == "drop":
            counters = current_worker_counters()
            if counters is not None:
                counters.count("skipped")
            if self.late_items == 1 or self.late_items % LOG_LATE_EVERY == 0:
                logger.warning(
                    "%s: dropped late item at time %g (watermark %g); %d late so far",
                    self.name,
                    at,
                    watermark,
                    self.late_items,
                )
        else:
            self.on_late(item)

    def _open_count(self) -> int:
        return len(getattr(self.local, "open", ()))


class RunningStats:
    """Count, mean and variance of numbers seen one at a time: Welford's algorithm.

    Numerically stable where the textbook `sum(x*x)/n - mean**2` is not: for values
    like 1e9 + small noise that formula loses every significant digit of the variance.
    """

    __slots__ = ("_sum_squares", "count", "max", "mean", "min")

    def __init__(self, values: Iterable[float] = ()) -> None:
        self.count = 0
        self.mean = 0.0
        self._sum_squares = 0.0  # of differences from the current mean
        self.min = math.inf
        self.max = -math.inf
        for value in values:
            self.add(value)

    def add(self, value: float) -> None:
        """Take one value into the figures."""
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self._sum_squares += delta * (value - self.mean)
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    @property
    def variance(self) -> float:
        """The population variance (divided by n); 0.0 for fewer than two values."""
        return self._sum_squares / self.count if self.count > 1 else 0.0

    @property
    def sample_variance(self) -> float:
        """The sample variance (divided by n - 1); 0.0 for fewer than two values."""
        return self._sum_squares / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        """The population standard deviation."""
        return math.sqrt(self.variance)


def percentile(ordered: Sequence[float], percent: float) -> float:
    """Return the `percent` percentile of sorted values, interpolating linearly.

    The same definition as NumPy's default: position `percent / 100 * (n - 1)`.

    Raises:
        ValueError: no values, or `percent` is outside [0, 100].
    """
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    position = percent / 100 * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    fraction = position - below
    return ordered[below] + (ordered[above] - ordered[below]) * fraction


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """The statistics of one window (`std` is the population standard deviation).

    The figures are over the window's finite values, `count` of them; `non_finite`
    counts the NaN and infinite ones, left out (one would make every figure NaN).
    """

    start: float
    end: float
    complete: bool
    count: int
    mean: float
    std: float
    min: float
    max: float
    percentiles: dict[float, float] = field(default_factory=dict)
    key_counts: dict[Hashable, int] = field(default_factory=dict)
    non_finite: int = 0


def summarize(
    value: Callable[[Any], float] | None = None,
    *,
    percentiles: Sequence[float] = (50, 90, 99),
    key: Callable[[Any], Hashable] | None = None,
) -> Callable[[Window[Any]], WindowSummary]:
    """Return a window function giving count, mean, std, min, max, percentiles, key counts.

    The figures are those of `statistics.fmean` and `statistics.pstdev` to rounding,
    min and max exactly: the squares of the values' differences from the mean are
    summed with `math.dist` (two passes, so an offset like 1e9 + noise costs no
    digits). Values are sorted only for the percentiles asked, none for `()`.
    Given to `CountWindows` with sliding windows, each value is read and summed once,
    in blocks that the overlapping windows share (see `CountWindows`).

    Args:
        value: the number to summarise in each item; the item itself by default.
        percentiles: which percentiles to give (each in [0, 100]).
        key: counts items per `key(item)` when given.

    Raises:
        TypeError: `value` or `key` is neither callable nor None.
        ValueError: a percentile is outside [0, 100].
    """
    _callable_or_none("value", value)
    _callable_or_none("key", key)
    wanted = tuple(float(percent) for percent in percentiles)
    for percent in wanted:
        if not 0 <= percent <= 100:
            raise ValueError(f"percentiles must be in [0, 100], got {percent:g}")
    return _Summary(value, wanted, key)


class _Block:
    """The figures of a run of consecutive items, from which windows' figures combine.

    `squares` and `residual` are the sums of (x - mean)^2 and of x - mean about `mean`,
    a point near the values' mean (not quite it: the residual says how far).
    """

    __slots__ = (
        "count",
        "high",
        "keys",
        "low",
        "mean",
        "non_finite",
        "ordered",
        "residual",
        "squares",
    )

    def __init__(
        self,
        items: list[Any],
        value: Callable[[Any], float] | None,
        *,
        ordered: bool,
        shared: bool,
        keys: dict[Hashable, int] | None,
    ) -> None:
        readings = items if value is None else list(map(value, items))
        values, total = _finite(items, readings)
        self.non_finite = len(readings) - len(values)
        figures = _figures(values, total, shared)
        self.count, self.mean, self.squares, self.residual, self.low, self.high = figures
        self.ordered = sorted(map(float, values)) if ordered else None
        self.keys = keys


class _Summary:
    """What `summarize` returns: a window function that also combines blocks of a window.

    `CountWindows` calls `block` once per block of items that its windows share, and
    `combine` per window; called on a `Window`, it is one block's figures.
    """

    __slots__ = ("key", "value", "wanted")

    def __init__(
        self,
        value: Callable[[Any], float] | None,
        wanted: tuple[float, ...],
        key: Callable[[Any], Hashable] | None,
    ) -> None:
        self.value = value
        self.wanted = wanted
        self.key = key

    def __call__(self, window: Window[Any]) -> WindowSummary:
        # The figures of one block, as `combine` would give them, with fewer steps.
        items = window.items
        readings = items if self.value is None else list(map(self.value, items))
        values, total = _finite(items, readings)
        count, point, squares, residual, low, high = _figures(values, total, False)
        ordered = sorted(map(float, values)) if self.wanted else None
        counts = {} if self.key is None else dict(collections.Counter(map(self.key, items)))
        mean, std = _mean_and_std(count, point, squares, residual)
        return WindowSummary(
            start=window.start,
            end=window.end,
            complete=window.complete,
            count=count,
            mean=mean,
            std=std,
            min=low,
            max=high,
            percentiles=self._percentiles(ordered),
            key_counts=counts,
            non_finite=len(readings) - count,
        )

    def block(self, items: list[Any], shared: bool = False) -> _Block:
        """Return the figures of `items`: each read once, and sorted only for percentiles.

        `shared`: windows will combine it with other blocks, which needs its residual.
        """
        keys = None if self.key is None else dict(collections.Counter(map(self.key, items)))
        return _Block(items, self.value, ordered=bool(self.wanted), shared=shared, keys=keys)

    def combine(
        self, start: float, end: float, complete: bool, blocks: Sequence[_Block]
    ) -> WindowSummary:
        """Return the summary of the window made of `blocks`, consecutive and in order."""
        filled = [block for block in blocks if block.count]
        count = sum([block.count for block in filled])
        if len(filled) == 1:
            (block,) = filled
            point, squares, residual = block.mean, block.squares, block.residual
            low, high, ordered = block.low, block.high, block.ordered
        elif filled:
            # Move each block's sums to one point near the window's mean, m:
            # sum (x - m)^2 = sum (x - b)^2 + 2 (b - m) sum (x - b) + n (b - m)^2.
            point = sum([block.count * block.mean for block in filled]) / count
            offsets = [block.mean - point for block in filled]
            squares = math.fsum(
                [
                    block.squares + offset * (2 * block.residual + block.count * offset)
                    for block, offset in zip(filled, offsets, strict=True)
                ]
            )
            residual = math.fsum(
                [
                    block.residual + block.count * offset
                    for block, offset in zip(filled, offsets, strict=True)
                ]
            )
            low = min([block.low for block in filled])
            high = max([block.high for block in filled])
            ordered = None
            if self.wanted:
                ordered = []
                for block in filled:
                    ordered += block.ordered or ()
                ordered = sorted(ordered)  # a merge of sorted runs
        else:
            point = squares = residual = 0.0
            low, high, ordered = math.inf, -math.inf, None
        counts: dict[Hashable, int] = {}
        if self.key is not None:
            for block in blocks:
                for name, number in (block.keys or {}).items():
                    counts[name] = counts.get(name, 0) + number
        mean, std = _mean_and_std(count, point, squares, residual)
        return WindowSummary(
            start=start,
            end=end,
            complete=complete,
            count=count,
            mean=mean,
            std=std,
            min=low,
            max=high,
            percentiles=self._percentiles(ordered),
            key_counts=counts,
            non_finite=sum([block.non_finite for block in blocks]),
        )

    def _percentiles(self, ordered: list[float] | None) -> dict[float, float]:
        if not ordered:
            return {}
        return {percent: percentile(ordered, percent) for percent in self.wanted}


@dataclass(frozen=True, slots=True)
class Anomaly:
    """An item whose value lies more than k standard deviations from its window's mean.

    A NaN or infinite value is always one: its `deviations` is NaN or a signed infinity.
    """

    item: Any
    value: float
    deviations: float  # (value - mean) / std, signed


@dataclass(frozen=True, slots=True)
class WindowAnomalies:
    """A window's mean and (population) standard deviation, and the items far from it.

    `count`, `mean` and `std` are over the window's finite values; `non_finite` counts
    the NaN and infinite ones, left out of them and each flagged as an anomaly.
    """

    start: float
    end: float
    complete: bool
    count: int
    mean: float
    std: float
    anomalies: tuple[Anomaly, ...]
    non_finite: int = 0


def anomalies(
    value: Callable[[Any], float] | None = None, *, k: float = 3.0
) -> Callable[[Window[Any]], WindowAnomalies]:
    """Return a window function flagging values more than `k` standard deviations out.

    Mean and standard deviation are the window's own (population, as `summarize`). In a window
    of n values, no value can lie more than sqrt(n - 1) deviations out, so with k = 3
    a window needs at least 11 values to flag anything: size windows accordingly. A
    window whose values are all equal flags nothing. A NaN or infinite value is always
    flagged, and left out of the mean and deviation, so that one cannot blind the
    detector to the rest of its window.

    Raises:
        TypeError: `value` is neither callable nor None.
        ValueError: `k` is not positive.
    """
    _callable_or_none("value", value)
    threshold = _checks.number("k", k)
    if not threshold > 0:
        raise ValueError(f"k must be > 0, got {k}")

    def detect(window: Window[Any]) -> WindowAnomalies:
        readings = _readings(window.items, value)
        values, total = _finite(window.items, readings)
        count, point, squares, residual, _, _ = _figures(values, total, False)
        mean, std = _mean_and_std(count, point, squares, residual)
        found: list[Anomaly] = []
        for item, observed in zip(window.items, readings, strict=True):
            if not math.isfinite(observed):
                found.append(Anomaly(item, observed, observed))  # NaN, or a signed infinity
            elif std > 0:
                deviations = (observed - mean) / std
                if abs(deviations) > threshold:
                    found.append(Anomaly(item, observed, deviations))
        return WindowAnomalies(
            window.start,
            window.end,
            window.complete,
            count,
            mean,
            std,
            tuple(found),
            len(readings) - count,
        )

    return detect


def _readings(items: list[Any], value: Callable[[Any], float] | None) -> list[float]:
    """Return the number of each item: the item itself, or `value(item)`, as a float.

    Raises:
        TypeError: one is not a number; the message names the item.
    """
    return _floats(items, items if value is None else list(map(value, items)))


def _floats(items: list[Any], readings: list[Any]) -> list[float]:
    """Return `readings` (those of `items`) as floats, naming the item of one that is none."""
    try:
        return list(map(float, readings))
    except (TypeError, ValueError):
        pass  # find which item, below
    for item, number in zip(items, readings, strict=True):
        try:
            float(number)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"the value of item {short_repr(item)} is {short_repr(number)}, not a number"
            ) from exc
    raise AssertionError("unreachable: float() failed on no item")  # pragma: no cover


def _finite(items: list[Any], readings: list[Any]) -> tuple[list[Any], float]:
    """Return the finite readings and their sum (inf if it overflows).

    Numbers (int, float, any with `__float__`) are taken as they are, as `float()` would
    read them; anything else (a numeric string) is read with `float()`.

    Raises:
        TypeError: a reading is not a number; the message names the item.
    """
    try:
        total = float(sum(readings))  # NaN or infinite when a reading is
    except TypeError:  # not a number as it is: read each with float(), or say which
        readings = _floats(items, readings)
        return _finite(readings, readings)
    except OverflowError:  # integers beyond floats
        total = math.inf
    if math.isfinite(total):
        return readings, total
    values = list(filter(math.isfinite, readings))
    try:
        return values, float(sum(values))
    except OverflowError:
        return values, math.inf


def _figures(
    values: list[Any], total: float, shared: bool
) -> tuple[int, float, float, float, float, float]:
    """Return count, a point b near the mean, the sums of (x - b)^2 and of x - b, min, max.

    No digit is lost to a large common offset (1e9 + noise): the differences from b are
    exact where the values are close to it, and `math.dist` sums their squares in one
    C loop without rounding each. The plain sum that gives b may be off by a few units
    in the last place of the offset; the sum of the differences, x - b, says by how
    much: it follows from the squares about b and about a second point b + h,
    sum (x - b - h)^2 = sum (x - b)^2 - 2 h sum (x - b) + n h^2.
    That second pass is skipped for a block no other combines with (`shared` False)
    when the sum's rounding cannot matter: |sum (x - b)| is at most n (n + 1) u max|x|
    (u the unit roundoff), which moves the mean by at most that over n and the squares
    by its square over n; both must stay below 1e-11 of the mean and 1e-12 of the
    squares.
    """
    count = len(values)
    if not count:
        return 0, 0.0, 0.0, 0.0, math.inf, -math.inf
    if math.isinf(total):  # a finite sum overflowed: Welford keeps to the values' scale
        stats = RunningStats(map(float, values))
        return count, stats.mean, stats.variance * count, 0.0, stats.min, stats.max
    points = tuple(values)
    point = total / count
    squares = math.dist(points, (point,) * count) ** 2
    low, high = float(min(points)), float(max(points))
    residual = 0.0
    rounding = count * (count + 1) * _UNIT_ROUNDOFF * max(-low, high)
    negligible = rounding <= 1e-11 * count * abs(point) and rounding <= 1e-6 * math.sqrt(
        count * squares
    )
    if squares > 0 and (shared or not negligible):
        # A standard deviation or so away, and at least one unit in the last place.
        other = point + max(math.sqrt(squares / count), math.ulp(point))
        shift = other - point
        shifted = math.dist(points, (other,) * count) ** 2
        residual = (squares - shifted + count * shift * shift) / (2 * shift)
    return count, point, squares, residual, low, high


def _mean_and_std(count: int, point: float, squares: float, residual: float) -> tuple[float, float]:
    """Return the mean and the population std, from the sums about `point` (see `_figures`).

    0.0 and 0.0 without values; a std of 0.0 for one value.
    """
    if not count:
        return 0.0, 0.0
    variance = (squares - residual * residual / count) / count if count > 1 else 0.0
    return point + residual / count, math.sqrt(max(0.0, variance))


def _may_hold_watermark(items: list[Any]) -> bool:
    """Return whether `items` may hold a `Watermark`, cheaply for a batch of numbers.

    Plain numbers sum in one C loop, a few nanoseconds each, and a Watermark is no
    number (adding one raises TypeError): an int or float total says there is none.
    Other batches (the first item not a plain number) are scanned by type, so that no
    item's own `__add__` runs.
    """
    if items and type(items[0]) in (float, int):
        try:
            total = sum(items)
        except TypeError:
            pass
        else:
            if type(total) in (float, int):
                return False
    return any(issubclass(kind, Watermark) for kind in set(map(type, items)))


def _check_windows_per_item(size: float, step: float) -> None:
    """Refuse windows so dense that each item would take an unbounded time to place."""
    windows = math.ceil(size / step)
    if windows > MAX_WINDOWS_PER_ITEM:
        raise ValueError(
            f"an item would fall in {windows} windows of size {size:g} every {step:g}; "
            f"size / step must be at most {MAX_WINDOWS_PER_ITEM}"
        )


def _callable_or_none(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")


def _positive_number(name: str, value: object) -> float:
    checked = _checks.number(name, value)
    if not checked > 0 or math.isinf(checked):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return checked
