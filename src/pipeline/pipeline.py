"""Pipeline: wire stages together with bounded queues, run them, and surface failures.

A run has one feeder thread that reads the source, `workers` threads per stage, and
the caller's thread, which takes results from the last queue. Every link is a bounded
`SafeQueue`, so the items in flight never exceed the queue sizes plus what the
workers hold, however long the input.

The first failure anywhere (a stage, its setup or teardown, or the source) is
recorded and stops the run: every queue is shut down immediately, which wakes every
blocked thread, and the caller receives the `StageError` once all threads have been
joined. The same happens, without an error, when the caller stops early.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from itertools import islice
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from pipeline._checks import positive_int
from pipeline.batching import next_batch_size
from pipeline.errors import PipelineClosed, PipelineError, ShutDown, StageError
from pipeline.safequeue import SafeQueue
from pipeline.stage import PipelineStage, StageChain
from pipeline.stats import BatchObserver, PipelineStatistics, StageStatistics
from pipeline.worker import END_OF_STREAM, StageRun, put_all

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_QUEUE_SIZE", "Pipeline"]

In = TypeVar("In")
Out = TypeVar("Out")

DEFAULT_QUEUE_SIZE = 8192
DEFAULT_BATCH_SIZE = 4096

logger = logging.getLogger(__name__)


class Pipeline(Generic[In, Out]):
    """A chain of stages run by threads and joined by bounded queues.

    Args:
        stages: a stage, a chain made with `>>`, or a sequence of stages.
        queue_size: the most items each link between stages holds (backpressure).
        batch_size: the most items a thread moves in one handoff. Threads start with
            one item and grow their batches while the work is fast, so a slow source or
            stage is not held back; but a source that waits for its own previous
            outputs before yielding more (request/response) needs `batch_size=1`.
        ordered: deliver outputs in input order (the default), or as they complete.
        observer: called in the worker thread after every batch with a `BatchEvent`
            (for timelines and live displays); keep it quick.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    @overload
    def __init__(
        self: Pipeline[In, Out],
        stages: PipelineStage[In, Out] | StageChain[In, Out],
        *,
        queue_size: int = ...,
        batch_size: int = ...,
        ordered: bool = ...,
        observer: BatchObserver | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        stages: Sequence[PipelineStage[Any, Any]],
        *,
        queue_size: int = ...,
        batch_size: int = ...,
        ordered: bool = ...,
        observer: BatchObserver | None = ...,
    ) -> None: ...
    def __init__(
        self,
        stages: PipelineStage[Any, Any] | StageChain[Any, Any] | Sequence[PipelineStage[Any, Any]],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        ordered: bool = True,
        observer: BatchObserver | None = None,
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
        self.queue_size = positive_int("queue_size", queue_size)
        self.batch_size = positive_int("batch_size", batch_size)
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered must be a bool, got {type(ordered).__name__}")
        self.ordered = ordered
        if observer is not None and not callable(observer):
            raise TypeError(f"observer must be callable, got {type(observer).__name__}")
        self.observer = observer
        # Guards _active (the run in progress, if any: one at a time per Pipeline) and
        # _latest (the run in progress or the last one, for stats()).
        self._lock = threading.Lock()
        self._active: _Run | None = None
        self._latest: _Run | None = None

    def run(self, source: Iterable[In]) -> list[Out]:
        """Run every item of `source` through the stages and return the outputs as a list.

        Blocks until the run ends.

        Raises:
            StageError: a stage or the source failed; the original exception is chained.
            PipelineError: the pipeline is already running.
        """
        outputs: list[Out] = []
        for batch in self._batches(iter(source)):
            outputs.extend(batch)
        return outputs

    def stream(self, source: Iterable[In]) -> Generator[Out]:
        """Return an iterator over the outputs, produced while the run goes on.

        The run starts at the first `next()`. Stopping early (`break`, or closing the
        iterator) stops every thread and joins them; so does `close()` on the pipeline
        or leaving its `with` block, which is the way to stop an iterator you keep. A
        failure the run met ahead of an early stop is logged, not raised.

        A stop waits for calls already running to return: a stage's `process_batch`, and
        the source's `next()`, which runs in a thread of the run (so a source bound to
        its thread, such as a sqlite3 cursor, cannot be used). Stop a loop with
        `with pipeline:` or `contextlib.closing(...)` rather than a bare `break` if a
        Ctrl-C during that wait must reach you: after a bare `break` the stop runs
        while the iterator is being collected, where Python can only print an exception.

        Raises (from the iterator):
            StageError: a stage or the source failed; the original exception is chained.
            PipelineClosed: `close()` stopped the run before the input ended.
        """
        return self._items(self._batches(iter(source)))

    def stats(self) -> PipelineStatistics | None:
        """Return a snapshot of the run in progress, or of the last run; None before any run.

        Safe to call from any thread at any time; the figures are summed from counters
        the workers update once per batch, without a lock, so a snapshot taken during a
        run may be one batch behind.
        """
        with self._lock:
            run = self._latest
        return None if run is None else run.statistics()

    def close(self) -> None:
        """Stop the run in progress, if any, and join its threads; closing twice is harmless."""
        with self._lock:
            run = self._active
        if run is not None:
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
        chain = " >> ".join(stage.name for stage in self.stages)
        return f"Pipeline({chain}, queue_size={self.queue_size}, batch_size={self.batch_size})"

    @staticmethod
    def _items(batches: Generator[list[Out]]) -> Generator[Out]:
        # Closing this iterator must stop the run now, not when `batches` is collected.
        with contextlib.closing(batches):
            for batch in batches:
                yield from batch

    def _batches(self, source: Iterator[Any]) -> Generator[list[Out]]:
        run = _Run(self, source)
        completed = False
        try:
            with self._lock:
                if self._active is not None:
                    raise PipelineError("this pipeline is already running; wait for the run to end")
                self._active = self._latest = run
                # Under the lock, so that close() in another thread finds every thread started.
                run.start()
            while not completed:
                try:
                    batch = run.results.get_many(self.batch_size)
                except ShutDown:
                    break
                completed = batch[-1] is END_OF_STREAM
                if completed:
                    batch.pop()
                if batch:
                    run.items_delivered += len(batch)
                    yield batch
        except GeneratorExit:
            # The consumer stopped early. A failure it never asked about (the run works
            # ahead of it) is logged, not raised from a close() or a garbage collection.
            self._finish(run)
            if run.failure is not None:
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
        if run.failure is not None:
            raise run.failure from run.failure.__cause__
        if not completed:
            raise PipelineClosed("the pipeline was closed before its input ended")

    def _finish(self, run: _Run) -> None:
        """Stop `run`, join its threads and forget it; from any thread, any number of times."""
        try:
            run.stop()
            run.join()
        finally:
            with self._lock:
                if self._active is run:
                    self._active = None


class _Run:
    """One run of a pipeline: its queues, its threads, and its first failure."""

    def __init__(self, pipeline: Pipeline[Any, Any], source: Iterator[Any]) -> None:
        self.source = source
        self.max_batch = pipeline.batch_size
        self.stopping = threading.Event()
        self.started = self.ended = 0.0
        self.items_read = 0
        self.items_delivered = 0
        self.source_blocked_seconds = 0.0
        self.queues = [SafeQueue[Any](pipeline.queue_size) for _ in range(len(pipeline.stages) + 1)]
        self.results = self.queues[-1]
        self.stage_runs = [
            StageRun(
                stage,
                self.queues[index],
                self.queues[index + 1],
                max_batch=pipeline.batch_size,
                ordered=pipeline.ordered,
                on_failure=self.fail,
                stopping=self.stopping,
                observer=pipeline.observer,
            )
            for index, stage in enumerate(pipeline.stages)
        ]
        self.threads = [threading.Thread(target=self._feed, name="pipeline-source")]
        for stage_run in self.stage_runs:
            for worker in range(stage_run.stage.workers):
                name = f"pipeline-{stage_run.stage.name}-{worker}"
                self.threads.append(
                    threading.Thread(target=stage_run.work, args=(worker,), name=name)
                )
        # Guards failure: the first error recorded; later ones are consequences of the stop.
        self._lock = threading.Lock()
        self.failure: StageError | None = None

    def start(self) -> None:
        self.started = time.perf_counter()
        for thread in self.threads:
            thread.start()

    def fail(self, error: StageError) -> None:
        """Record `error` if it is the first, and stop the run; called from any thread."""
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = error
        if first:
            logger.debug("pipeline stopping after a failure: %s", error)
        self.stop()

    def stop(self) -> None:
        """Shut every queue down immediately and wake every waiting worker; idempotent."""
        self.stopping.set()
        for queue in self.queues:
            queue.shutdown(immediate=True)
        for stage_run in self.stage_runs:
            stage_run.stop()

    def join(self) -> None:
        for thread in self.threads:
            if thread.ident is not None:
                thread.join()
        if not self.ended:
            self.ended = time.perf_counter()

    def statistics(self) -> PipelineStatistics:
        now = self.ended or time.perf_counter()
        stages = []
        for stage_run in self.stage_runs:
            inbox = stage_run.inbox.statistics()
            stages.append(
                StageStatistics.from_workers(
                    stage_run.stage.name,
                    stage_run.counters,
                    inbox.depth,
                    inbox.high_water_mark,
                    inbox.maxsize,
                )
            )
        return PipelineStatistics(
            running=not self.ended,
            elapsed_seconds=(now - self.started) if self.started else 0.0,
            items_read=self.items_read,
            items_delivered=self.items_delivered,
            source_blocked_seconds=self.source_blocked_seconds,
            stages=tuple(stages),
            results_queue_depth=self.results.qsize(),
        )

    def _feed(self) -> None:
        """Read the source in chunks into the first queue; the feeder thread's target.

        Whatever the source raises, `ShutDown` included (a generator reading a queue that
        was shut down), is the source failing; only the first queue's `ShutDown` means
        the run was stopped.
        """
        inbox = self.queues[0]
        size = 1
        while True:
            started = time.perf_counter()
            try:
                chunk = list(islice(self.source, size))
            except BaseException as exc:
                self.fail(StageError.caused_by(exc, "source", "source"))
                return
            elapsed = time.perf_counter() - started
            try:
                if not chunk:
                    inbox.put(END_OF_STREAM)
                    return
                self.items_read += len(chunk)
                put_all(inbox, chunk)
            except ShutDown:
                return
            self.source_blocked_seconds += time.perf_counter() - started - elapsed
            size = next_batch_size(size, len(chunk), elapsed, self.max_batch)
