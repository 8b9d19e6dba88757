"""Pipeline: wire stages together with bounded queues, run them, and surface failures.

A run has one source thread that reads the input, `workers` threads per stage, a
supervisor thread that carries out stops asked for from inside the run, and the
caller's thread, which takes results from the last queue. Every link is a bounded
queue (a `SafeQueue` unless `queue_factory` says otherwise), so the items in flight
never exceed a stated bound however long the input: per link its `queue_size` (the
stage's own, if it sets one), per stage `(workers + window) * batch_size` (the window
is the ordered reorder window, `REORDER_BATCHES_PER_WORKER * workers` batches for an
ordered stage with several workers, else 0), plus the source's chunk and the
consumer's batch, each at most `batch_size`. The bytes are bounded too: each link,
each stage's batches, the source's chunk and the consumer's batch hold at most
`queue_bytes` each (by `sys.getsizeof`, one item per batch standing for the batch), so
large items are held by the budget long before the counts matter.

Failures: by default an ordered run reports a failure at its position: every output
that comes before the failing item still reaches the consumer, in order, and then the
`StageError` is raised, as a plain loop would; everything upstream of the failure
stops at once, while the stages after it finish the items before it. With
`fail_fast=True`, with `ordered=False` (outputs have no position then), and for
failures that have no position (setup, teardown, the observer), the first failure
stops the whole run at once: every queue is shut down immediately, which wakes every
blocked thread, and no work is spent on items the consumer will not receive (a teardown
or observer failing after a failure at its position does not: the outputs before that
failure still arrive). Either way the caller
receives the `StageError` once all threads have been joined; the same stop happens,
without an error, when the caller stops early, calls `close()`, presses Ctrl-C, or the
interpreter exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from functools import partial
from itertools import islice
from queue import SimpleQueue
from types import TracebackType
from typing import Any, Generic, TypeAlias, TypedDict, TypeVar, Unpack, overload

from pipeline._checks import int_at_least, positive_int
from pipeline._interrupts import Presses, ctrl_c_held, wait_slice
from pipeline.batching import byte_capped, next_batch_size
from pipeline.errors import PipelineClosed, PipelineError, ShutDown, StageError
from pipeline.safequeue import LinkQueue, SafeQueue
from pipeline.stage import PipelineStage, StageChain, own_queue_size
from pipeline.stats import BatchObserver, PipelineStatistics, StageStatistics, WorkerCounters
from pipeline.worker import (
    END_OF_STREAM,
    StageRun,
    ToQueue,
    UpstreamFailed,
    adopt_run_context,
    current_run_owner,
    is_end_marker,
    put_all,
    reorder_window,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_QUEUE_BYTES",
    "DEFAULT_QUEUE_SIZE",
    "Pipeline",
    "QueueFactory",
]

In = TypeVar("In")
Out = TypeVar("Out")
Snapshot = TypeVar("Snapshot", bound=PipelineStatistics)
# The types between the stages of a tuple, in the typed overloads of `Pipeline`.
_B = TypeVar("_B")
_C = TypeVar("_C")
_D = TypeVar("_D")

DEFAULT_QUEUE_SIZE = 8192
DEFAULT_BATCH_SIZE = 4096
DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024

QueueFactory = Callable[[str, int], LinkQueue[Any]]
"""Makes the queue of one link: called with the name of the stage that reads it
("results" for the last link) and its size (the stage's `queue_size`, or the pipeline's)."""

logger = logging.getLogger(__name__)


class _Options(TypedDict, total=False):
    """The keyword arguments of `Pipeline`, for its typed overloads."""

    queue_size: int
    batch_size: int
    queue_bytes: int
    ordered: bool
    fail_fast: bool
    observer: BatchObserver | None
    queue_factory: QueueFactory | None


_AnyStage: TypeAlias = "PipelineStage[Any, Any]"
_FiveOrMoreStages: TypeAlias = (
    "tuple[_AnyStage, _AnyStage, _AnyStage, _AnyStage, _AnyStage, *tuple[_AnyStage, ...]]"
)


class Pipeline(Generic[In, Out]):
    """A chain of stages run by threads and joined by bounded queues.

    Build the chain with `>>`: mypy then checks that each stage's output type is the next
    one's input type, and types the pipeline `Pipeline[first input, last output]`. A
    tuple of up to four stages is checked the same way; a list is typed only when every
    stage maps a type to itself (its items share one type, so their order is unknown).

    Args:
        stages: a stage, a chain made with `>>`, or a sequence of stages. Stages given
            a name must have distinct names; unnamed stages get distinct ones
            ("FunctionStage", "FunctionStage-2", ...).
        queue_size: the most items each link between stages holds (backpressure); a
            stage's own `queue_size` overrides it for that stage's inbox.
        batch_size: the most items a thread moves in one handoff. Threads start with
            one item and grow their batches while the work is fast, so a slow source or
            stage is not held back; but a source that waits for its own previous
            outputs before yielding more (request/response) needs `batch_size=1`.
        queue_bytes: the most bytes each link, each stage's batches, the source's chunk
            and the consumer's batch hold, by `sys.getsizeof` of one item per batch
            (shallow: a tuple holding a page weighs the tuple); 0: count items only. A
            single item larger than this still moves, alone.
        ordered: deliver outputs in input order (the default), or as they complete.
        fail_fast: stop the whole run at the first failure, delivering nothing more;
            by default an ordered run first delivers every output that comes before
            the failing item (an unordered run always fails fast).
        observer: called in the worker thread after every batch with a `BatchEvent`
            (for timelines and live displays); keep it quick.
        queue_factory: makes each link's queue (any `LinkQueue`); `SafeQueue` by default.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range, or two
            stages were given the same name.
    """

    # The types of the stages line up for `a >> b`, and for a tuple of up to four stages;
    # a list cannot say which stage comes where, so it is typed only when every stage
    # maps a type to itself, and is Pipeline[Any, Any] otherwise.
    @overload
    def __init__(
        self: Pipeline[In, Out],
        stages: PipelineStage[In, Out] | StageChain[In, Out] | tuple[PipelineStage[In, Out]],
        **options: Unpack[_Options],
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[In, Out],
        stages: tuple[PipelineStage[In, _B], PipelineStage[_B, Out]],
        **options: Unpack[_Options],
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[In, Out],
        stages: tuple[PipelineStage[In, _B], PipelineStage[_B, _C], PipelineStage[_C, Out]],
        **options: Unpack[_Options],
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[In, Out],
        stages: tuple[
            PipelineStage[In, _B],
            PipelineStage[_B, _C],
            PipelineStage[_C, _D],
            PipelineStage[_D, Out],
        ],
        **options: Unpack[_Options],
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[In, In], stages: Sequence[PipelineStage[In, In]], **options: Unpack[_Options]
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        stages: list[PipelineStage[Any, Any]] | _FiveOrMoreStages,
        **options: Unpack[_Options],
    ) -> None: ...
    def __init__(
        self,
        stages: PipelineStage[Any, Any] | StageChain[Any, Any] | Sequence[PipelineStage[Any, Any]],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        ordered: bool = True,
        fail_fast: bool = False,
        observer: BatchObserver | None = None,
        queue_factory: QueueFactory | None = None,
    ) -> None:
        if isinstance(stages, PipelineStage):
            chain = StageChain(stages)
        elif isinstance(stages, StageChain):
            chain = stages
        elif isinstance(stages, Sequence) and not isinstance(stages, str) and stages:
            chain = StageChain(*stages)
        else:
            raise TypeError(
                "stages must be a PipelineStage, a chain made with >>, or a non-empty "
                f"sequence of stages, got {stages!r}"
            )
        self.stages: tuple[PipelineStage[Any, Any], ...] = chain.stages
        self.names: tuple[str, ...] = distinct_names(self.stages)
        self.queue_size = positive_int("queue_size", queue_size)
        self.inbox_sizes = tuple(
            own_queue_size(name, stage.queue_size) or self.queue_size
            for name, stage in zip(self.names, self.stages, strict=True)
        )
        """The size of each stage's inbox: its own `queue_size`, or the pipeline's."""
        self.batch_size = positive_int("batch_size", batch_size)
        self.queue_bytes = int_at_least("queue_bytes", queue_bytes, 0)
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered must be a bool, got {type(ordered).__name__}")
        self.ordered = ordered
        if not isinstance(fail_fast, bool):
            raise TypeError(f"fail_fast must be a bool, got {type(fail_fast).__name__}")
        self.fail_fast = fail_fast
        if observer is not None and not callable(observer):
            raise TypeError(f"observer must be callable, got {type(observer).__name__}")
        self.observer = observer
        if queue_factory is not None and not callable(queue_factory):
            raise TypeError(f"queue_factory must be callable, got {type(queue_factory).__name__}")
        self.queue_factory = queue_factory
        # Guards _active (the run in progress, if any: one at a time per Pipeline) and
        # _latest (the run in progress or the last one, for stats()). A run stays
        # active until every one of its threads has been joined.
        self._lock = threading.Lock()
        self._active: _Run | None = None
        self._latest: _Run | None = None

    @property
    def max_items_in_flight(self) -> int:
        """The most items a run holds between reading them and delivering them.

        The source's chunk, every link's `queue_size`, each stage's workers' batches and
        its reorder window, and the consumer's batch (for stages that emit at most one
        output per item; a flat-map stage multiplies what follows it).
        """
        held_by_stages = sum(
            (stage.workers + reorder_window(stage.workers, self.ordered)) * self.batch_size
            for stage in self.stages
        )
        links = sum(self.inbox_sizes) + self.queue_size
        return self.batch_size + links + held_by_stages + self.batch_size

    @property
    def max_bytes_in_flight(self) -> int:
        """The most bytes a run holds, as `queue_bytes` weighs them (0: no byte budget).

        `queue_bytes` for every link, every stage, the source's chunk and the consumer's batch.
        """
        return (2 * len(self.stages) + 3) * self.queue_bytes

    def run(self, source: Iterable[In]) -> list[Out]:
        """Run every item of `source` through the stages and return the outputs as a list.

        Blocks until the run ends. A Ctrl-C meanwhile stops the run; the
        `KeyboardInterrupt` is raised once every thread has been joined (the run holds
        Ctrl-C, `pipeline._interrupts`: no code of the caller's runs on this thread
        until it returns).

        Raises:
            StageError: a stage or the source failed; the original exception is chained.
            PipelineError: the pipeline is already running.
        """
        outputs: list[Out] = []
        with contextlib.closing(self._batches(iter(source), holding_ctrl_c=True)) as batches:
            for batch in batches:
                outputs.extend(batch)
        return outputs

    def stream(self, source: Iterable[In]) -> Generator[Out]:
        """Return an iterator over the outputs, produced while the run goes on.

        The run starts at the first `next()`. Stopping early (`break`, or closing the
        iterator) stops every thread and joins them; so does `close()` on the pipeline
        or leaving its `with` block, which is the way to stop an iterator you keep.
        After `close()` returns, the iterator yields nothing more. A failure the run met
        ahead of an early stop is logged, not raised. Runs still going at interpreter
        exit are stopped and joined, so the process exits.

        A stop waits for calls already running to return: a stage's `process_batch`, and
        the source's `next()`, which runs in a thread of the run (so a source bound to
        its thread, such as a sqlite3 cursor, cannot be used). That thread then closes
        the source, if it has a `close()` (a file too: pass `(line for line in file)`
        to keep one open), before the stop returns. Stop a loop with
        `with pipeline:` or `contextlib.closing(...)` rather than a bare `break` if a
        Ctrl-C during that wait must reach you: after a bare `break` the stop runs
        while the iterator is being collected, where Python can only print an exception.

        Raises (from the iterator):
            StageError: a stage or the source failed; the original exception is chained.
            PipelineClosed: `close()` stopped the run before the iterator had delivered
                every output (even if the input had ended).
        """
        return self._items(self._batches(iter(source)))

    def stats(self) -> PipelineStatistics:
        """Return a snapshot of the run in progress, or of the last run; zeros before any run.

        Before the first run every stage is there with zero counts, `running` False and
        `elapsed_seconds` 0, so code reading the statistics (a report, a monitor started
        before the run) needs no case for "no run yet". Safe to call from any thread at
        any time; the figures are summed from counters the workers update once per
        batch, without a lock, so a snapshot taken during a run may be one batch behind.
        """
        with self._lock:
            run = self._latest
        return self._before_any_run() if run is None else run.statistics()

    def _before_any_run(self) -> PipelineStatistics:
        """Return the statistics of a run that has not started: every stage at zero."""
        stages = tuple(
            StageStatistics.from_workers(
                name, [WorkerCounters() for _ in range(stage.workers)], 0, 0, self.queue_size
            )
            for name, stage in zip(self.names, self.stages, strict=True)
        )
        return PipelineStatistics(
            running=False,
            elapsed_seconds=0.0,
            items_read=0,
            items_delivered=0,
            source_blocked_seconds=0.0,
            stages=stages,
            results_queue_depth=0,
        )

    def close(self) -> None:
        """Stop the run in progress, if any, and join its threads; closing twice is harmless.

        Called from one of the run's own threads (a stage, the observer), it asks the
        run to stop and returns at once: a thread cannot wait for itself.
        """
        with self._lock:
            run = self._active
        if run is not None:
            run.closed = True
            self._finish(run)

    def __enter__(self) -> Pipeline[In, Out]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        chain = " >> ".join(self.names)
        return f"Pipeline({chain}, queue_size={self.queue_size}, batch_size={self.batch_size})"

    @staticmethod
    def _items(batches: Generator[list[Out]]) -> Generator[Out]:
        # Closing this iterator must stop the run now, not when `batches` is collected.
        with contextlib.closing(batches):
            for batch in batches:
                yield from batch

    def _new_run(self, source: Iterator[Any]) -> _Run:
        """Return the run of `source` through this pipeline; a graph wires its own."""
        return _Run(self, source)

    def _batches(
        self, source: Iterator[Any], *, holding_ctrl_c: bool = False
    ) -> Generator[list[Out]]:
        """Run `source` and yield the outputs in batches; see `run` and `stream`.

        With `holding_ctrl_c` (for `run`, whose caller runs no code between batches), a
        Ctrl-C asks the supervisor to stop the run and is raised once it has ended.
        """
        run: _Run | None = None
        try:
            run = self._new_run(source)
            if not holding_ctrl_c:
                yield from self._run_batches(run, None)
                return
            with ctrl_c_held(on_press=run.request_stop) as presses:
                yield from self._run_batches(run, presses)
        finally:
            if run is None or not run.source_thread_started:
                _close_unread(source)

    def _run_batches(self, run: _Run, presses: Presses | None) -> Generator[list[Out]]:
        """The body of `_batches`; `presses` are those of the hold around it, if any.

        Without one (a stream: the caller's own code runs between batches), Ctrl-C is
        held only while a batch is taken, so that its `KeyboardInterrupt` is raised with
        the queue's storage consistent, not between two of its steps.
        """
        ended_by: object = None
        try:
            with self._lock:
                if self._active is not None:
                    raise PipelineError("this pipeline is already running; wait for the run to end")
                self._active = self._latest = run
                # Under the lock, so that close() in another thread finds every thread started.
                run.start()
            while ended_by is None:
                try:
                    with ctrl_c_held() if presses is None else contextlib.nullcontext():
                        batch = run.results.get_many(self.batch_size)
                except ShutDown:
                    break
                if is_end_marker(batch[-1]):
                    ended_by = batch.pop()
                # close() empties the batch being delivered, so that nothing is
                # delivered once it has returned; a batch taken after it is dropped here.
                run.delivering = batch
                if run.closed:
                    ended_by = None
                    break
                if batch:
                    run.items_delivered += len(batch)
                    yield batch
                    if run.closed:  # the batch may have been cut short, the last one too
                        ended_by = None
                        break
        except GeneratorExit:
            if run.ended:
                # Already stopped and joined: by close(), or by the exit hook before the
                # interpreter tears modules down (this module's globals may be gone).
                raise
            # The consumer stopped early. A failure it never asked about (the run works
            # ahead of it) is logged, not raised from a close() or a garbage collection.
            inside = run.owns_current_thread()
            self._finish(run)
            if run.failure is not None and not inside:
                logger.warning(
                    "a run its consumer stopped early had failed too: %s",
                    run.failure,
                    exc_info=run.failure,
                )
            raise
        except BaseException:
            self._finish(run)
            raise
        self._finish(run)
        if isinstance(ended_by, UpstreamFailed):
            raise ended_by.error from ended_by.error.__cause__
        if run.failure is not None:
            raise run.failure from run.failure.__cause__
        if ended_by is None and not presses:  # after a press, its KeyboardInterrupt tells
            raise PipelineClosed("the pipeline was closed before its input ended")

    def _finish(self, run: _Run) -> None:
        """Stop `run`, join its threads and forget it; from any thread, any number of times.

        From one of the run's own threads it only asks the supervisor to stop the run: it
        may not join itself, nor take a lock it may already hold (a garbage collection can
        run a finalizer at any point of that thread). A Ctrl-C while the threads are being
        joined is held until every one of them has been, then re-raised.
        """
        interrupted: BaseException | None = None
        while True:
            try:
                if run.owns_current_thread():
                    run.request_stop()
                    return
                with ctrl_c_held():
                    run.stop()
                    run.join()
                    self._forget(run)
            except KeyboardInterrupt as exc:  # pressed before the hold, or held till now
                interrupted = interrupted or exc
                if not run.ended or self._active is run:
                    continue
            break
        if interrupted is not None:
            raise interrupted

    def _forget(self, run: _Run) -> None:
        with self._lock:
            if self._active is run:
                self._active = None


def distinct_names(stages: Sequence[PipelineStage[Any, Any]]) -> tuple[str, ...]:
    """Return a name per stage, distinct within the pipeline.

    Names given by the user must differ; an unnamed stage whose default name is taken
    gets the first free "name-2", "name-3", ...

    Raises:
        ValueError: two stages were given the same name.
    """
    given: dict[str, int] = {}
    for position, stage in enumerate(stages):
        if stage.named_by_user:
            if stage.name in given:
                raise ValueError(
                    f"two stages are named {stage.name!r} (positions {given[stage.name]} and "
                    f"{position}); stage names must be unique in a pipeline"
                )
            given[stage.name] = position
    taken = set(given)
    names = []
    for stage in stages:
        name = stage.name
        if not stage.named_by_user:
            suffix = 2
            while name in taken:
                name = f"{stage.name}-{suffix}"
                suffix += 1
            taken.add(name)
        names.append(name)
    return tuple(names)


_RELEASE = object()
"""Tells a run's supervisor thread that the run is over."""

_live_runs: weakref.WeakSet[_Run] = weakref.WeakSet()
# A forked child (a process pool's worker started from a stage) has none of the runs'
# threads: joining them at its exit would hang it, and the pool waiting for it.
os.register_at_fork(after_in_child=_live_runs.clear)
_exit_hook_lock = threading.Lock()
_exit_hook_registered = False


def _stop_runs_at_exit() -> None:
    """Stop and join every run still going, so that the interpreter can exit."""
    for run in list(_live_runs):
        # A Ctrl-C now is held until the run is joined, then dropped: the interpreter is
        # exiting already.
        with contextlib.suppress(KeyboardInterrupt), ctrl_c_held():
            run.stop()
            run.join()


def _register_exit_hook() -> None:
    """Have `threading` stop live runs before it waits for their threads at exit.

    `threading._register_atexit` is the hook `concurrent.futures` uses for the same
    purpose: it runs before the interpreter joins the remaining threads, where a plain
    `atexit` handler would run too late.
    """
    global _exit_hook_registered
    with _exit_hook_lock:
        if not _exit_hook_registered:
            with contextlib.suppress(RuntimeError):  # the interpreter is already exiting
                threading._register_atexit(_stop_runs_at_exit)  # type: ignore[attr-defined]
            _exit_hook_registered = True


class _Run:
    """One run of a pipeline: its queues, its threads, and its first failure."""

    def __init__(self, pipeline: Pipeline[Any, Any], source: Iterator[Any]) -> None:
        self.pipeline = weakref.ref(pipeline)
        self.source = source
        self.max_batch = pipeline.batch_size
        self.max_bytes = pipeline.queue_bytes
        self.started = self.ended = 0.0
        self.items_read = 0
        self.items_delivered = 0
        self.source_blocked_seconds = 0.0
        self.closed = False
        self.delivering: list[Any] = []
        self.source_stopping = threading.Event()
        self.source_closed = False
        # Guards failure (the first error recorded; later ones are consequences of the
        # stop) and failed_at_a_position (a stage failed at its position).
        self._lock = threading.Lock()
        self.failure: PipelineError | None = None
        self.failed_at_a_position = False
        self._requests: SimpleQueue[object] = SimpleQueue()
        # One event per thread, set as the thread's last act: what join() waits for.
        # Thread.join() alone cannot be trusted after a Ctrl-C interrupted it (on 3.11
        # and 3.12 an interrupted join may mark a running thread as stopped).
        self._finished: dict[threading.Thread, threading.Event] = {}
        self._starting: list[threading.Thread] = []
        self.at_position = False
        self.queues, self.stage_runs = self._wire(pipeline)
        self.results = self.queues[-1]
        self.source_thread = self._thread(self._feed, "pipeline-source")
        self.threads = [self._thread(self._supervise, "pipeline-supervisor"), self.source_thread]
        for stage_run in self.stage_runs:
            for worker in range(stage_run.stage.workers):
                name = f"pipeline-{stage_run.name}-{worker}"
                self.threads.append(self._thread(stage_run.work, name, worker))

    def _wire(self, pipeline: Pipeline[Any, Any]) -> tuple[list[LinkQueue[Any]], list[StageRun]]:
        """Return the run's queues (the source's first, the results last) and stage runs.

        A chain: one queue per link, each stage reading one and emitting into the next.
        A graph's run overrides this one step; everything else is the same engine.
        """
        make_queue = pipeline.queue_factory or partial(_safe_queue, max_bytes=pipeline.queue_bytes)
        names, sizes = [*pipeline.names, "results"], [*pipeline.inbox_sizes, pipeline.queue_size]
        queues = [make_queue(*link) for link in zip(names, sizes, strict=True)]
        self.at_position = pipeline.ordered and not pipeline.fail_fast
        stage_runs = [
            StageRun(
                stage,
                queues[index],
                ToQueue(queues[index + 1]),
                name=pipeline.names[index],
                max_batch=pipeline.batch_size,
                max_bytes=pipeline.queue_bytes,
                ordered=pipeline.ordered,
                on_failure=self._fail_without_position if self.at_position else self.fail,
                stop_upstream=self._stopper_above(index) if self.at_position else None,
                observer=pipeline.observer,
                owner=self,
            )
            for index, stage in enumerate(pipeline.stages)
        ]
        return queues, stage_runs

    def _thread(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        finished = threading.Event()

        def run_then_signal() -> None:
            try:
                target(*args)
            except BaseException as exc:
                # The thread's own handlers failed (a link queue that raised, say): the
                # run must still stop, with an error that says so, rather than hang.
                self.fail(StageError.caused_by(exc, name, "worker"))
            finally:
                finished.set()

        thread = threading.Thread(target=run_then_signal, name=name)
        self._finished[thread] = finished
        return thread

    def start(self) -> None:
        _register_exit_hook()
        _live_runs.add(self)
        self.started = time.perf_counter()
        with ctrl_c_held():  # a start() cut short would leave a thread nobody awaits
            for thread in self.threads:
                self._starting.append(thread)
                thread.start()

    @property
    def source_thread_started(self) -> bool:
        """Whether the thread that reads (and then closes) the source was started."""
        return self.source_thread.ident is not None

    def owns_current_thread(self) -> bool:
        """Return whether the calling thread is one of this run's, or a helper acting for it."""
        return current_run_owner() is self or threading.current_thread() in self.threads

    def fail(self, error: StageError) -> None:
        """Record `error` if it is the first, and stop the run; called from any thread."""
        self._record(error)
        self.stop()

    def request_stop(self) -> None:
        """Ask the supervisor to stop the run; safe from any thread, even in a finalizer.

        `SimpleQueue.put` is reentrant: it takes no lock the calling thread could hold.
        """
        self._requests.put(self.stop)

    def stop(self) -> None:
        """Shut every queue down immediately and wake every waiting worker; idempotent."""
        self.source_stopping.set()
        for stage_run in self.stage_runs:
            stage_run.stop()
        for queue in self.queues:
            queue.shutdown(immediate=True)
        self.delivering.clear()

    def join(self) -> None:
        """Wait for every thread of the run that was started; the run must be stopping."""
        self._requests.put(_RELEASE)
        me = threading.current_thread()
        for thread in self._starting:
            if thread is not me and thread.ident is not None:
                while not self._finished[thread].wait(wait_slice()):
                    pass
                thread.join()
        if not self.ended:
            self.ended = time.perf_counter()
        _live_runs.discard(self)

    def statistics(self) -> PipelineStatistics:
        return self.snapshot(PipelineStatistics)

    def snapshot(self, kind: type[Snapshot], **extra: Any) -> Snapshot:
        """Return the run's figures as a `kind` (a `PipelineStatistics`), with `extra` fields."""
        now = self.ended or time.perf_counter()
        stages = []
        for stage_run in self.stage_runs:
            inbox = stage_run.inbox.statistics()
            stages.append(
                StageStatistics.from_workers(
                    stage_run.name,
                    stage_run.counters,
                    inbox.depth,
                    inbox.high_water_mark,
                    inbox.maxsize,
                )
            )
        return kind(
            running=not self.ended,
            elapsed_seconds=(now - self.started) if self.started else 0.0,
            items_read=self.items_read,
            items_delivered=self.items_delivered,
            source_blocked_seconds=self.source_blocked_seconds,
            stages=tuple(stages),
            results_queue_depth=self.results.statistics().depth,
            **extra,
        )

    def _record(self, error: StageError) -> None:
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = error
        if first:
            logger.debug("pipeline stopping after a failure: %s", error)

    def _fail_without_position(self, error: StageError) -> None:
        """Handle a stage's failure that has no position (teardown, say), in a run that has.

        Such a failure stops the whole run, unless it is a teardown or an observer failing
        after a failure at its position: the run's outcome is that failure already, and
        neither loses a batch (a teardown comes after a worker's last batch, an observer
        after its batch was handed on), so stopping would only throw away outputs that
        come before the failing item. Anything else (a worker's own handlers failing) may
        have lost a batch, so it still stops everything.
        """
        with self._lock:
            contained = self.failed_at_a_position and error.phase in ("teardown", "observer")
        if contained:
            self._record(error)
        else:
            self.fail(error)

    def _stopper_above(self, index: int) -> Callable[[StageError], None]:
        """Return what stage `index` calls to stop everything upstream of a failure in it."""

        def stop_upstream(error: StageError) -> None:
            with self._lock:
                self.failed_at_a_position = True
            self._record(error)
            self.source_stopping.set()
            for stage_run in self.stage_runs[:index]:
                stage_run.stop()
            for queue in self.queues[: index + 1]:
                queue.shutdown(immediate=True)

        return stop_upstream

    def _supervise(self) -> None:
        """Carry out a stop requested from the run's own threads; the supervisor's target.

        After such a stop nobody may be waiting for the run (its iterator was collected,
        say), so the supervisor also joins the other threads and forgets the run.
        """
        if self._requests.get() is _RELEASE:
            return
        try:
            self.stop()
            me = threading.current_thread()
            for thread in self._starting:
                if thread is not me and thread.ident is not None:
                    self._finished[thread].wait()
        except BaseException:
            logger.exception("stopping a pipeline run from inside it failed")
        pipeline = self.pipeline()
        if pipeline is not None:
            pipeline._forget(self)

    def _feed(self) -> None:
        """Read the source into the first queue, then close it; the source thread's target.

        However the run ends, the source is closed here, in the thread that iterated it,
        before the run's threads are joined: a generator's `finally` (a file, a cursor)
        runs before `run()` or `stream()` returns or raises, not when the pipeline is
        collected. A `close()` that raises is the source failing.

        In this thread `current_stop_event()` is the source's stop event, so that a
        source that waits on its own (an async source, `iterate_async`) can end its wait
        when the run stops.
        """
        adopt_run_context((self.source_stopping, self))
        try:
            self._read_source()
        finally:
            failure = self._close_source()
            if failure is not None:
                self.fail(failure)

    def _read_source(self) -> None:
        """Read the source in chunks into the first queue, closing it at its end.

        Whatever the source raises, `ShutDown` included (a generator reading a queue that
        was shut down), is the source failing; only the first queue's `ShutDown` means
        the run was stopped. A failure is reported after the items read before it when
        the run reports failures at their position.
        """
        inbox = self.queues[0]
        size = 1
        while not self.source_stopping.is_set():
            started = time.perf_counter()
            chunk: list[Any] = []
            failure: StageError | None = None
            try:
                chunk.extend(islice(self.source, size))
            except BaseException as exc:
                failure = StageError.caused_by(exc, "source", "source")
            if failure is None and not chunk:
                failure = self._close_source()
            elapsed = time.perf_counter() - started
            # Counted before put_all: the queue owns the list from then on, and a consumer
            # taking it may extend it with the next chunk (SafeQueue hands chunks over
            # uncopied), so its length is not ours to read afterwards.
            read = len(chunk)
            first = chunk[0] if chunk else None
            self.items_read += read
            try:
                if failure is not None:
                    if not self.at_position:
                        self.fail(failure)
                        return
                    with self._lock:
                        self.failed_at_a_position = True
                    self._record(failure)
                    chunk.append(UpstreamFailed(failure))
                elif not chunk:
                    inbox.put_many([END_OF_STREAM], copy=False)
                    return
                put_all(inbox, chunk)
            except ShutDown:
                return
            if failure is not None:
                return
            self.source_blocked_seconds += time.perf_counter() - started - elapsed
            size = next_batch_size(size, read, elapsed, self.max_batch)
            if self.max_bytes:
                size = min(size, byte_capped(self.max_bytes, 1, [first]))

    def _close_source(self) -> StageError | None:
        """Call the source's `close()`, if it has one, the first time; return its failure."""
        if self.source_closed:
            return None
        self.source_closed = True
        failure = _close(self.source)
        return None if failure is None else StageError.caused_by(failure, "source", "source")


def _close(source: Iterator[Any]) -> BaseException | None:
    """Call the source's `close()`, if it has one; return what it raised."""
    try:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    except BaseException as exc:
        return exc
    return None


def _close_unread(source: Iterator[Any]) -> None:
    """Close a source no thread of a run read (the run ended before it started one).

    The call is already ending with an exception (a Ctrl-C or a failure while the run
    was wired or started), so a `close()` that fails too is logged, not raised over it.
    """
    failure = _close(source)
    if failure is not None:
        logger.warning("closing the source of a run that never started failed", exc_info=failure)


def _safe_queue(name: str, maxsize: int, max_bytes: int = 0) -> LinkQueue[Any]:
    return SafeQueue[Any](maxsize, max_bytes=max_bytes)
