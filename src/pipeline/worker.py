"""The worker loop: how a stage's threads take batches, process them and pass them on.

Each stage in a running pipeline gets one `StageRun`, shared by its worker threads.
A worker repeatedly takes a batch from the stage's inbox, calls the stage's
`process_batch`, and puts the outputs in the outbox, until it takes the end-of-stream
marker. The last worker to finish forwards the marker downstream.

Order: taking a batch and numbering it is one step (under `take_lock`), so batch
numbers follow inbox order. With several workers, each worker waits for its batch's
turn before putting the outputs, so the outbox receives batches in inbox order; the
window of batches held back is therefore at most one per worker.

Batch size: a worker starts by taking one item, then doubles its take while a batch
takes less than `TARGET_BATCH_SECONDS` to process, and halves it when a batch takes
much longer. Fast stages reach the full batch size within a few batches (cheap
handoffs); slow stages take few items at a time (low latency, and the items spread
over all workers).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from pipeline.batching import next_batch_size
from pipeline.errors import ShutDown, StageError
from pipeline.safequeue import SafeQueue
from pipeline.stage import ItemFailed, PipelineStage
from pipeline.stats import BatchEvent, BatchObserver, WorkerCounters

__all__ = [
    "END_OF_STREAM",
    "StageRun",
    "current_stop_event",
    "current_worker_counters",
    "put_all",
]


class _EndOfStream:
    """The type of the private end-of-stream marker; users can never produce one."""

    def __repr__(self) -> str:
        return "<end of stream>"


END_OF_STREAM: Final = _EndOfStream()

FailureHandler = Callable[[StageError], None]

_worker_context = threading.local()


def current_stop_event() -> threading.Event | None:
    """Return the stop event of the run this worker thread belongs to; None in other threads.

    It is set when the run stops (a failure, an early stop, Ctrl-C). Stage code that
    waits on its own, such as a retry backoff, should wait on this event instead of
    sleeping, so that it returns at once when the pipeline stops.
    """
    stopping: threading.Event | None = getattr(_worker_context, "stopping", None)
    return stopping


def current_worker_counters() -> WorkerCounters | None:
    """Return the counters of the worker running in this thread; None in other threads.

    Only that worker's thread writes them, so stage code may add to them without a lock.
    """
    counters: WorkerCounters | None = getattr(_worker_context, "counters", None)
    return counters


def put_all(queue: SafeQueue[Any], items: list[Any]) -> None:
    """Hand `items` over to `queue` in order, in pieces no larger than the queue can hold.

    The list (or its slices) goes into the queue itself, uncopied: the caller made it
    for the queue and never touches it again.
    """
    limit = queue.maxsize
    if not limit or len(items) <= limit:
        queue.put_many(items, copy=False)
        return
    for start in range(0, len(items), limit):
        queue.put_many(items[start : start + limit], copy=False)


class StageRun:
    """One run of one stage: its queues, its workers' shared state, and their loop."""

    def __init__(
        self,
        stage: PipelineStage[Any, Any],
        inbox: SafeQueue[Any],
        outbox: SafeQueue[Any],
        *,
        max_batch: int,
        ordered: bool,
        on_failure: FailureHandler,
        stopping: threading.Event,
        observer: BatchObserver | None = None,
    ) -> None:
        self.stage = stage
        self.inbox = inbox
        self.outbox = outbox
        self.max_batch = max_batch
        self.on_failure = on_failure
        self.stopping = stopping
        self.observer = observer
        self.counters = [WorkerCounters() for _ in range(stage.workers)]
        self._in_order = ordered and stage.workers > 1
        # take_lock makes "take a batch and number it" one step. Guarded by it:
        # _input_ended (a worker has taken END_OF_STREAM) and _taken (batches taken).
        self._take_lock = threading.Lock()
        self._input_ended = False
        self._taken = 0
        # _turn guards _emitted (batches emitted) and _working (workers not yet finished);
        # it is notified when _emitted advances, and by stop() once `stopping` is set.
        self._turn = threading.Condition()
        self._emitted = 0
        self._working = stage.workers

    def stop(self) -> None:
        """Wake workers waiting for their turn; the run has set `stopping` first."""
        with self._turn:
            self._turn.notify_all()

    def work(self, worker: int) -> None:
        """Run one worker from setup to teardown; this is a worker thread's target."""
        _worker_context.stopping = self.stopping
        _worker_context.counters = self.counters[worker]
        try:
            self._live(worker, self.counters[worker])
        finally:
            del _worker_context.stopping, _worker_context.counters
            self._finish()

    def _live(self, worker: int, counters: WorkerCounters) -> None:
        """Set up, process until the end, tear down; report the first failure of each."""
        stage = self.stage
        try:
            stage.setup()
        except BaseException as exc:
            self.on_failure(StageError.caused_by(exc, stage.name, "setup", worker=worker))
            return
        try:
            self._process_until_end(worker, counters)
        except ItemFailed as failed:
            counters.failed += 1
            cause = failed.__cause__ or failed
            self.on_failure(StageError.caused_by(cause, stage.name, "process", failed.item))
        except BaseException as exc:
            counters.failed += 1
            self.on_failure(StageError.caused_by(exc, stage.name, "process"))
        try:
            stage.teardown()
        except BaseException as exc:
            self.on_failure(StageError.caused_by(exc, stage.name, "teardown", worker=worker))

    def _process_until_end(self, worker: int, counters: WorkerCounters) -> None:
        """Process batches until end of stream, or until the pipeline stops (ShutDown)."""
        size = 1
        clock = time.perf_counter
        while True:
            waited_from = clock()
            with self._take_lock:
                if self._input_ended:
                    return
                try:
                    items = self.inbox.get_many(size)
                except ShutDown:
                    return
                number = self._taken
                self._taken += 1
                if items[-1] is END_OF_STREAM:
                    items.pop()
                    self._input_ended = True
            started = clock()
            outputs = self.stage.process_batch(items) if items else []
            if not isinstance(outputs, list):
                raise TypeError(
                    f"{type(self.stage).__name__}.process_batch() must return a list, "
                    f"got {type(outputs).__name__}"
                )
            finished = clock()
            if not self._emit(number, outputs):
                return
            handed_on = clock()
            counters.record_batch(
                len(items),
                len(outputs),
                started - waited_from,
                finished - started,
                handed_on - finished,
            )
            if self.observer is not None:
                self.observer(
                    BatchEvent(
                        self.stage.name,
                        worker,
                        waited_from,
                        started,
                        finished,
                        handed_on,
                        len(items),
                        len(outputs),
                    )
                )
            size = next_batch_size(size, len(items), finished - started, self.max_batch)

    def _emit(self, number: int, outputs: list[Any]) -> bool:
        """Put a batch's outputs downstream in turn; return False if the pipeline is stopping."""
        if self._in_order:
            with self._turn:
                while self._emitted != number:
                    if self.stopping.is_set():
                        return False
                    self._turn.wait()
        try:
            if outputs:
                put_all(self.outbox, outputs)
        except ShutDown:
            return False
        finally:
            if self._in_order:
                with self._turn:
                    self._emitted += 1
                    self._turn.notify_all()
        return True

    def _finish(self) -> None:
        """Leave the stage; the last worker out passes end of stream downstream."""
        with self._turn:
            self._working -= 1
            # The stop event is set before any queue is shut down, so a worker that left
            # on ShutDown cannot pass on end of stream into a queue not yet shut down.
            last = self._working == 0 and not self.stopping.is_set()
        if last:
            # A stop between the check and the put leaves nothing to pass on.
            with contextlib.suppress(ShutDown):
                self.outbox.put(END_OF_STREAM)
