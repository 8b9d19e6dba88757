"""Stages: the units of work a pipeline chains together.

A user subclasses one of three classes and fills in one per-item hook:
- `PipelineStage.process(item) -> output` maps each item to one output;
- `FilteringStage.keep(item) -> bool` keeps or drops each item;
- `FlatMapStage.expand(item) -> iterable` turns each item into zero or more outputs.

The framework calls `process_batch(items)` on a list of items at a time, because
handing items between threads one by one costs far more than the work in a simple
stage; the default `process_batch` of each class applies the per-item hook in one
tight loop. A vectorised stage overrides `process_batch` itself.

The worker loop that calls these hooks lives in `pipeline.worker`; `map_items`,
`filter_items` and `flat_map_items` are those loops, shared with the function stages.
They are plain `for` loops that append to the output list, so that when a hook fails
the outputs of the items before it survive (a failure reaches the consumer at its
position, after them), and so that a `StopIteration` escaping from a hook is an error
like any other, never the silent end of a shorter batch as in `list(map(...))`.
"""

from __future__ import annotations

import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from operator import length_hint
from typing import Any, Generic, TypeVar, overload

from pipeline._checks import positive_int

__all__ = ["FilteringStage", "FlatMapStage", "PipelineStage", "StageChain", "own_queue_size"]

In = TypeVar("In")
Out = TypeVar("Out")
Next = TypeVar("Next")
T = TypeVar("T")


class ItemFailed(Exception):
    """Carries the failing item, its index in the batch, and the outputs made before it.

    The worker loop turns it into a `StageError` naming the stage and the item, chained
    to the original exception (this exception's `__cause__`). `outputs` are the batch's
    outputs for the items before the failing one, so a run that reports a failure at its
    position still delivers them. A wrapper that tolerates failures can use `index` to
    carry on with the items after it.
    """

    def __init__(self, item: object, index: int, outputs: list[Any] | None = None) -> None:
        super().__init__(item, index, outputs)
        self.item = item
        self.index = index
        self.outputs: list[Any] = [] if outputs is None else outputs


class PipelineStage(ABC, Generic[In, Out]):
    """A unit of work run by `workers` threads; subclass it and override `process`.

    Args:
        name: shown in logs and errors; defaults to the class name.
        workers: how many threads run this stage (each calls `setup` once, then
            processes batches, then calls `teardown` once).
        latency_target: the seconds one batch should take; each worker then sizes its
            batches with an `AdaptiveBatcher` (AIMD toward it) instead of the default
            policy of doubling while fast. Useful for I/O-bound stages whose calls
            come back late, and for sinks with a latency objective.
        queue_size: the most items this stage's inbox holds, instead of the
            pipeline's `queue_size`: a short queue in front of an expensive stage.

    Raises:
        TypeError: the subclass overrides neither `process` nor `process_batch`, or an
            argument has the wrong type.
        ValueError: `workers` or `queue_size` is less than 1, or `name` is empty.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        workers: int = 1,
        latency_target: float | None = None,
        queue_size: int | None = None,
    ) -> None:
        cls = type(self)
        if (
            cls.process is PipelineStage.process
            and cls.process_batch is PipelineStage.process_batch
        ):
            raise TypeError(f"{cls.__name__} must override process() or process_batch()")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        if name == "":
            raise ValueError("name must not be empty")
        if inspect.isgeneratorfunction(cls.process):
            raise TypeError(
                f"{cls.__name__}.process() uses yield, so it would pass generator objects "
                "downstream; to turn each item into zero or more outputs, subclass "
                "FlatMapStage and return them from expand()"
            )
        self.workers = positive_int("workers", workers)
        if latency_target is not None and (
            isinstance(latency_target, bool)
            or not isinstance(latency_target, int | float)
            or not latency_target > 0
        ):
            raise ValueError(
                f"latency_target must be a number of seconds > 0, got {latency_target!r}"
            )
        self.latency_target = latency_target
        """Seconds a batch should take: sizes the takes with an `AdaptiveBatcher` if given."""
        self.name = name or cls.__name__
        self.queue_size = own_queue_size(self.name, queue_size)
        """The most items this stage's inbox holds; None: the pipeline's `queue_size`."""
        self.named_by_user = name is not None
        """Whether `name` was given; a pipeline derives distinct names only for the others."""
        self.local = threading.local()
        """Per-worker storage: attributes set here in `setup` are seen only by that worker."""

    def setup(self) -> None:
        """Prepare one worker (open a connection, allocate a buffer); runs in that worker's thread.

        Keep per-worker resources on `self.local`, which each worker thread sees separately.
        """

    def teardown(self) -> None:
        """Release what `setup` acquired; runs once in each worker's thread, even after failures."""

    def flush(self) -> list[Out]:
        """Return the outputs still held once the input has ended; runs in each worker's thread.

        Called once per worker after the last batch of a stream that ended (not after a
        stop, nor after a failure upstream, which ends the run at that item), before
        `teardown`; its outputs follow every other output of the stage. A
        stage that keeps state across items (a window, a running aggregate) emits what
        it still holds here. The default holds nothing.
        """
        return []

    def process(self, item: In) -> Out:
        """Map one item to one output; runs in a worker thread."""
        raise NotImplementedError(f"{type(self).__name__}.process() is not implemented")

    def process_batch(self, items: list[In]) -> list[Out]:
        """Map a batch of items to their outputs; runs in a worker thread.

        The default applies `process` to each item. Override it for a vectorised stage;
        it may return fewer or more outputs than inputs.
        """
        return map_items(self.process, items)

    def __rshift__(
        self, other: PipelineStage[Out, Next] | StageChain[Out, Next]
    ) -> StageChain[In, Next]:
        """Chain this stage before `other`: `a >> b >> c`."""
        return StageChain(self) >> other

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} workers={self.workers}>"


class FilteringStage(PipelineStage[T, T]):
    """A stage that passes on the items for which `keep(item)` is true."""

    @abstractmethod
    def keep(self, item: T) -> bool:
        """Return whether to pass `item` on; runs in a worker thread."""

    def process_batch(self, items: list[T]) -> list[T]:
        return filter_items(self.keep, items)


class FlatMapStage(PipelineStage[In, Out]):
    """A stage that turns each item into zero or more outputs with `expand(item)`."""

    @abstractmethod
    def expand(self, item: In) -> Iterable[Out]:
        """Return the outputs for `item` (a list, a generator...); runs in a worker thread."""

    def process_batch(self, items: list[In]) -> list[Out]:
        return flat_map_items(self.expand, items)


class StageChain(Generic[In, Out]):
    """An ordered sequence of stages whose item types line up; made with `>>`."""

    @overload
    def __init__(self: StageChain[In, Out], first: PipelineStage[In, Out]) -> None: ...
    @overload
    def __init__(
        self: StageChain[Any, Any], first: PipelineStage[Any, Any], *rest: PipelineStage[Any, Any]
    ) -> None: ...
    def __init__(self, first: PipelineStage[Any, Any], *rest: PipelineStage[Any, Any]) -> None:
        self.stages: tuple[PipelineStage[Any, Any], ...] = (first, *rest)
        for stage in self.stages:
            _check_stage(stage)

    def __rshift__(
        self, other: PipelineStage[Out, Next] | StageChain[Out, Next]
    ) -> StageChain[In, Next]:
        """Append `other` (a stage or a chain) to this chain, returning a new chain."""
        if isinstance(other, StageChain):
            return StageChain(*self.stages, *other.stages)
        if isinstance(other, PipelineStage):
            return StageChain(*self.stages, other)
        _refuse_to_chain(other)
        return NotImplemented

    def __iter__(self) -> Iterator[PipelineStage[Any, Any]]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        return " >> ".join(stage.name for stage in self.stages)


def _refuse_to_chain(other: object) -> None:
    """Raise a TypeError saying what to do when `other` is a stage class or a function.

    Anything else is left to `other.__rrshift__`, and then to Python's own TypeError.
    """
    if isinstance(other, type) and issubclass(other, PipelineStage):
        raise TypeError(
            f"cannot chain the class {other.__name__} with >>: make a stage of it, "
            f"{other.__name__}()"
        )
    if callable(other) and not hasattr(type(other), "__rrshift__"):
        name = getattr(other, "__name__", type(other).__name__)
        raise TypeError(
            f"cannot chain the function {name} with >>: wrap it in a stage, "
            f"FunctionStage({name}) (or PredicateStage, FlatMapFunctionStage)"
        )


def _check_stage(stage: object) -> None:
    if not isinstance(stage, PipelineStage):
        raise TypeError(f"expected a PipelineStage, got {type(stage).__name__}")
    if not hasattr(stage, "workers"):
        raise TypeError(
            f"{type(stage).__name__}.__init__ did not call PipelineStage.__init__(); "
            "add super().__init__() to it"
        )


def own_queue_size(name: str, queue_size: object) -> int | None:
    """Return stage `name`'s own `queue_size` (None: unset); raise naming the stage if bad."""
    if queue_size is None:
        return None
    try:
        return positive_int("queue_size", queue_size)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"stage {name!r}: {exc}") from exc


def map_items(function: Callable[[In], Out], items: list[In]) -> list[Out]:
    """Return `[function(item) for item in items]`; a failure raises `ItemFailed`."""
    outputs: list[Out] = []
    append = outputs.append
    pending = iter(items)
    try:
        for item in pending:
            append(function(item))
    except BaseException as exc:
        raise item_failure(items, pending, outputs) from exc
    return outputs


def filter_items(predicate: Callable[[T], bool], items: list[T]) -> list[T]:
    """Return the items for which `predicate` is true; a failure raises `ItemFailed`."""
    outputs: list[T] = []
    append = outputs.append
    pending = iter(items)
    try:
        for item in pending:
            if predicate(item):
                append(item)
    except BaseException as exc:
        raise item_failure(items, pending, outputs) from exc
    return outputs


def flat_map_items(function: Callable[[In], Iterable[Out]], items: list[In]) -> list[Out]:
    """Return the items of each `function(item)`, in order; a failure raises `ItemFailed`."""
    outputs: list[Out] = []
    extend = outputs.extend
    pending = iter(items)
    made = 0  # outputs of the items before the current one
    try:
        for item in pending:
            extend(function(item))
            made = len(outputs)
    except BaseException as exc:
        del outputs[made:]  # what the failing item began to give is not its output
        raise item_failure(items, pending, outputs) from exc
    return outputs


def item_failure(
    items: list[Any], pending: Iterator[Any], outputs: list[Any] | None = None
) -> ItemFailed:
    """Return the `ItemFailed` for a loop over `pending` that has just raised.

    `pending` must be `iter(items)`. It has just yielded the failing item, so the items
    left in it tell which one that was, without any per-item bookkeeping on the fast
    path. `outputs` are those made before the failure. Raise the result `from` the
    exception caught.
    """
    index = len(items) - length_hint(pending) - 1
    return ItemFailed(items[index], index, outputs)
