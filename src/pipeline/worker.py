"""The engine's worker loop: how a stage's threads take batches, process them and pass them on.

Each stage in a running pipeline (or graph) gets one `StageRun`, shared by its worker
threads. A worker repeats four steps until its input ends:
- take: take a batch from the stage's inbox and number it (one step, under `take_lock`,
  so batch numbers follow inbox order);
- process: call the stage's `process_batch`;
- emit: hand the outputs to the stage's router (one successor today; a graph's node
  may broadcast or partition), in input order when the run is ordered;
- record: add the batch to the worker's own statistics.

End of stream travels through the queues as a private marker. A stage's inbox may be
fed by several producers (a graph's merge); the stage's input has ended once it has
taken one end-of-stream marker per producer, and the last worker to leave passes one
marker on to each successor. A failure the run reports "at its position" travels the
same way: `UpstreamFailed` is an end-of-stream marker that carries the error, so every
output computed before the failing item still reaches the consumer, in order, first.

Ordered output with several workers uses a bounded reorder window: a worker that
finishes a batch out of turn parks it, keyed by batch number, and goes on to the next
batch; whichever worker holds the next batch in turn emits it and every parked batch
that follows. A worker waits only when `window` batches are parked, so one slow item
does not idle the others. A stage holds at most `workers + window` batches; under a
byte budget (`max_bytes`) each is kept to its share of it, inputs and outputs together.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from pipeline.batching import AdaptiveBatcher, byte_capped, next_batch_size
from pipeline.errors import ShutDown, StageError
from pipeline.safequeue import LinkQueue, Marker
from pipeline.stage import ItemFailed, PipelineStage
from pipeline.stats import BatchEvent, BatchObserver, WorkerCounters

__all__ = [
    "END_OF_STREAM",
    "REORDER_BATCHES_PER_WORKER",
    "Router",
    "StageRun",
    "ToQueue",
    "UpstreamFailed",
    "adopt_run_context",
    "current_run_owner",
    "current_stop_event",
    "current_worker_counters",
    "is_end_marker",
    "put_all",
    "reorder_window",
    "run_context",
]

logger = logging.getLogger(__name__)


class _EndOfStream(Marker):
    """The type of the private end-of-stream markers; users can never produce one."""

    def __repr__(self) -> str:
        return "<end of stream>"


class UpstreamFailed(_EndOfStream):
    """An end-of-stream marker that carries the failure which ended the stream there."""

    def __init__(self, error: StageError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"<end of stream: {self.error}>"


END_OF_STREAM: Final = _EndOfStream()

REORDER_BATCHES_PER_WORKER: Final = 4
"""Batches a worker of an ordered stage may finish ahead of the one in turn.

With skewed item times a small window idles the stage behind every slow item. Measured
with `benchmarks/bench_skewed.py` (16 workers, 2,000 items of exponential 10 ms sleeps),
share of the ideal time reached by the ordered pipeline: 1 per worker 58%, 2 per
worker about 80%, 4 per worker 95.5%, 8 per worker 95.1% (the thread pool, which holds
everything, 96.4%). Four is where the gain stops, at a quarter of the memory of eight.
"""

FailureHandler = Callable[[StageError], None]

_worker_context = threading.local()


def reorder_window(workers: int, ordered: bool) -> int:
    """Return how many finished batches an ordered stage may park ahead of the one in turn."""
    return REORDER_BATCHES_PER_WORKER * workers if ordered and workers > 1 else 0


def is_end_marker(item: object) -> bool:
    """Return whether `item` is an end-of-stream marker (plain, or carrying a failure)."""
    return isinstance(item, _EndOfStream)


def current_stop_event() -> threading.Event | None:
    """Return the stop event of the stage this worker thread runs; None in other threads.

    In a run's source thread it is the source's stop event, for a source that waits.
    It is set when the stage must stop (a failure, an early stop, Ctrl-C). Stage code
    that waits on its own, such as a retry backoff, should wait on this event instead of
    sleeping, so that it returns at once when the pipeline stops.
    """
    stopping: threading.Event | None = getattr(_worker_context, "stopping", None)
    return stopping


def current_run_owner() -> object:
    """Return the run this thread works for (a worker, or a helper that adopted its context)."""
    return getattr(_worker_context, "owner", None)


def run_context() -> tuple[threading.Event | None, object]:
    """Return what a helper thread needs to act for this worker's run: its stop event and owner.

    Stage code that runs calls in threads of its own (a per-item timeout, say) hands this
    to `adopt_run_context` in those threads, so that `current_stop_event()` works there
    and a `Pipeline.close()` called there is known to come from inside the run.
    """
    return current_stop_event(), current_run_owner()


def adopt_run_context(context: tuple[threading.Event | None, object]) -> None:
    """Make the calling helper thread act for the run `context` came from (see run_context)."""
    _worker_context.stopping, _worker_context.owner = context


def current_worker_counters() -> WorkerCounters | None:
    """Return the counters of the worker running in this thread; None in other threads.

    Only that worker's thread writes them, so stage code may add to them without a lock.
    """
    counters: WorkerCounters | None = getattr(_worker_context, "counters", None)
    return counters


def put_all(queue: LinkQueue[Any], items: list[Any]) -> None:
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


class Router(Protocol):
    """Where a stage's outputs go: one successor today; a graph's broadcast or partition."""

    def emit(self, outputs: list[Any]) -> None:
        """Pass a non-empty batch of outputs on, in order; raise `ShutDown` if stopped."""
        ...

    def end(self, marker: _EndOfStream) -> None:
        """Pass the end-of-stream marker on to every successor; raise `ShutDown` if stopped."""
        ...


class ToQueue:
    """The router of a chain: every output goes to the one queue that follows."""

    def __init__(self, queue: LinkQueue[Any]) -> None:
        self.queue = queue

    def emit(self, outputs: list[Any]) -> None:
        put_all(self.queue, outputs)

    def end(self, marker: _EndOfStream) -> None:
        self.queue.put_many([marker], copy=False)


class StageRun:
    """One run of one stage: its inbox, its router, its workers' shared state, and their loop.

    Args:
        name: the stage's name in this run (unique in its pipeline).
        max_bytes: the most bytes (by `sys.getsizeof`, see `byte_capped`) the stage's
            batches in hand and parked hold together; 0: no byte budget.
        producers: how many producers feed the inbox; the input ends after one
            end-of-stream marker from each.
        on_failure: records a failure and stops the whole run at once.
        stop_upstream: given in runs that report failures at their position: records
            the failure and stops everything upstream of this stage, while the outputs
            before the failing item travel on, followed by an `UpstreamFailed` marker.
    """

    def __init__(
        self,
        stage: PipelineStage[Any, Any],
        inbox: LinkQueue[Any],
        router: Router,
        *,
        name: str | None = None,
        producers: int = 1,
        max_batch: int,
        max_bytes: int = 0,
        ordered: bool,
        on_failure: FailureHandler,
        stop_upstream: FailureHandler | None = None,
        stopping: threading.Event | None = None,
        observer: BatchObserver | None = None,
        owner: object = None,
    ) -> None:
        self.stage = stage
        self.owner = owner
        self.name = name or stage.name
        self.inbox = inbox
        self.router = router
        self.producers = producers
        self.max_batch = max_batch
        self.on_failure = on_failure
        self.stop_upstream = stop_upstream
        self.stopping = stopping or threading.Event()
        self.observer = observer
        self.counters = [WorkerCounters() for _ in range(stage.workers)]
        self._in_order = ordered and stage.workers > 1
        self._window = reorder_window(stage.workers, ordered)
        # Each batch's share: every worker's and parked batch holds inputs and outputs.
        slots = 2 * (stage.workers + self._window)
        self._batch_bytes = max(1, max_bytes // slots) if max_bytes else 0
        # take_lock makes "take a batch and number it" one step. Guarded by it:
        # _ends_taken (end markers taken), _end_marker (the one to pass on: a failure
        # marker if any producer ended with one) and _taken (batches numbered).
        self._take_lock = threading.Lock()
        self._ends_taken = 0
        self._end_marker: _EndOfStream = END_OF_STREAM
        self._taken = 0
        # _emit_lock guards the reorder window: _parked (finished batches by number,
        # waiting for their turn), _next (the number to emit next), _emitting (a worker
        # is emitting, so others only park), _ended (a failure marker was emitted, so
        # nothing after it may be), _working (workers not yet left). It is notified
        # when a parked batch leaves the window, when emitting ends, and by stop().
        self._emit_lock = threading.Condition()
        self._parked: dict[int, tuple[list[Any], _EndOfStream | None]] = {}
        self._next = 0
        self._emitting = False
        self._ended = False
        self._working = stage.workers

    def stop(self) -> None:
        """Stop this stage's workers: set its stop event and wake those waiting for room."""
        self.stopping.set()
        with self._emit_lock:
            self._emit_lock.notify_all()

    def work(self, worker: int) -> None:
        """Run one worker from setup to teardown; this is a worker thread's target."""
        _worker_context.stopping = self.stopping
        _worker_context.counters = self.counters[worker]
        _worker_context.owner = self.owner
        try:
            self._live(worker, self.counters[worker])
        except BaseException as exc:
            # The worker's own handlers failed; the run must still stop, not hang.
            self.on_failure(StageError.caused_by(exc, self.name, "worker", worker=worker))
        finally:
            del _worker_context.stopping, _worker_context.counters, _worker_context.owner
            self._leave()

    def _live(self, worker: int, counters: WorkerCounters) -> None:
        """Set up, process until the end, tear down; report the first failure of each."""
        stage = self.stage
        try:
            stage.setup()
        except BaseException as exc:
            error = StageError.caused_by(exc, self.name, "setup", worker=worker)
            if self.stopping.is_set():
                # A setup the stop cut short (worker processes killed while they
                # started, say) is a consequence of the stop, not a failure of its own.
                logger.debug("%s, after the stage was told to stop", error, exc_info=exc)
            else:
                self.on_failure(error)
            return
        try:
            self._process_until_end(worker, counters)
        finally:
            try:
                stage.teardown()
            except BaseException as exc:
                self.on_failure(StageError.caused_by(exc, self.name, "teardown", worker=worker))

    def _process_until_end(self, worker: int, counters: WorkerCounters) -> None:
        """Take, process, emit and record batches until the input ends or the stage stops."""
        size = 1
        cap = self.max_batch  # the most items within the byte budget, from the last batch
        target = self.stage.latency_target
        batcher = None if target is None else AdaptiveBatcher(target, maximum=self.max_batch)
        clock = time.perf_counter
        room = self._wait_for_room()
        while room:
            if batcher is not None:
                size = batcher.plan_batch(self.max_batch)
            waited_from = clock()
            taken = self._take(min(size, cap))
            if taken is None:
                self._flush(worker, counters)
                return
            number, items = taken
            started = clock()
            outputs, failure = self._process(items)
            finished = clock()
            if failure is not None:
                counters.failed += 1
                self._fail(number, outputs, failure)
                return
            # Counted before the hand-off: downstream owns the list from then on (a
            # consumer may take it uncopied and extend it with the next batch), and a
            # stage may hand its input list on as its outputs.
            took, produced = len(items), len(outputs)
            if self._batch_bytes and took:
                cap = byte_capped(self._batch_bytes, took, items, outputs)
            if not self._emit(number, outputs, None):
                return
            # A wait for room in the reorder window is the end of this batch's hand-off:
            # it counts as blocked, like a wait for room downstream.
            room = self._wait_for_room()
            handed_on = clock()
            self._record(
                worker, counters, took, produced, waited_from, started, finished, handed_on
            )
            if batcher is None:
                size = next_batch_size(size, took, finished - started, self.max_batch)
            elif took:
                batcher.record_batch(took, finished - started)

    def _flush(self, worker: int, counters: WorkerCounters) -> None:
        """Emit what the stage's `flush()` returns, once its input has really ended.

        The outputs go out as one more numbered batch, after every batch of the stream.
        """
        with self._take_lock:
            # An input that ended with a failure never reached its end: a plain loop
            # would have raised at the failing item, before any flush.
            if (
                self._ends_taken < self.producers
                or self.stopping.is_set()
                or isinstance(self._end_marker, UpstreamFailed)
            ):
                return
            number = self._taken
            self._taken += 1
        try:
            outputs = self.stage.flush()
        except BaseException as exc:
            counters.failed += 1
            self._fail(number, [], StageError.caused_by(exc, self.name, "flush", worker=worker))
            return
        if not isinstance(outputs, list):
            problem = TypeError(
                f"{type(self.stage).__name__}.flush() must return a list, "
                f"got {type(outputs).__name__}"
            )
            self._fail(number, [], StageError.caused_by(problem, self.name, "flush"))
            return
        counters.items_out += len(outputs)
        self._emit(number, outputs, None)

    def _take(self, size: int) -> tuple[int, list[Any]] | None:
        """Take and number the next batch; None once the input has ended or the stage stops."""
        with self._take_lock:
            if self._ends_taken == self.producers:
                return None
            try:
                items = self.inbox.get_many(size)
            except ShutDown:
                return None
            number = self._taken
            self._taken += 1
            if self.producers == 1:
                if isinstance(items[-1], _EndOfStream):
                    self._end_of_input(items.pop())
            else:
                ends = [item for item in items if isinstance(item, _EndOfStream)]
                if ends:
                    items = [item for item in items if not isinstance(item, _EndOfStream)]
                    for marker in ends:
                        self._end_of_input(marker)
            return number, items

    def _end_of_input(self, marker: _EndOfStream) -> None:
        """Count one producer's end marker; called with take_lock held."""
        self._ends_taken += 1
        if isinstance(marker, UpstreamFailed) and not isinstance(self._end_marker, UpstreamFailed):
            self._end_marker = marker

    def _process(self, items: list[Any]) -> tuple[list[Any], StageError | None]:
        """Return the batch's outputs, or the outputs before the failing item and the failure."""
        if not items:
            return [], None
        try:
            outputs = self.stage.process_batch(items)
        except ItemFailed as failed:
            cause = failed.__cause__ or failed
            error = StageError.caused_by(cause, self.name, "process", failed.item)
            return list(failed.outputs), error
        except BaseException as exc:
            return [], StageError.caused_by(exc, self.name, "process")
        if not isinstance(outputs, list):
            problem = TypeError(
                f"{type(self.stage).__name__}.process_batch() must return a list, "
                f"got {type(outputs).__name__}"
            )
            return [], StageError.caused_by(problem, self.name, "process")
        return outputs, None

    def _fail(self, number: int, outputs: list[Any], failure: StageError) -> None:
        """Report a failed batch: at once, or at its position after the outputs before it."""
        if self.stop_upstream is None:
            self.on_failure(failure)
            return
        self.stop_upstream(failure)
        self._emit(number, outputs, UpstreamFailed(failure))

    def _record(
        self,
        worker: int,
        counters: WorkerCounters,
        items_in: int,
        items_out: int,
        waited_from: float,
        started: float,
        finished: float,
        handed_on: float,
    ) -> None:
        """Add the batch to the worker's statistics and tell the observer, if any."""
        counters.record_batch(
            items_in,
            items_out,
            started - waited_from,
            finished - started,
            handed_on - finished,
        )
        if self.observer is None:
            return
        event = BatchEvent(
            self.name, worker, waited_from, started, finished, handed_on, items_in, items_out
        )
        try:
            self.observer(event)
        except BaseException as exc:
            self.on_failure(StageError.caused_by(exc, self.name, "observer", worker=worker))

    def _wait_for_room(self) -> bool:
        """Wait while the reorder window is full; return False once the stage stops."""
        if not self._in_order:
            return not self.stopping.is_set()
        with self._emit_lock:
            while len(self._parked) >= self._window and not self._ended:
                if self.stopping.is_set():
                    return False
                self._emit_lock.wait()
            return not (self.stopping.is_set() or self._ended)

    def _emit(self, number: int, outputs: list[Any], marker: _EndOfStream | None) -> bool:
        """Emit batch `number` in turn (with its end marker, if it ends the stream).

        Return False if the stage is stopping or its stream has already ended.
        """
        if not self._in_order:
            with self._emit_lock:
                if self._ended:
                    return False
                if marker is not None:
                    self._ended = True
            return self._send(outputs, marker)
        with self._emit_lock:
            if self._ended:
                return False
            self._parked[number] = (outputs, marker)
            if self._emitting:
                return True
            self._emitting = True
        done = False
        try:
            while True:
                with self._emit_lock:
                    entry = self._parked.pop(self._next, None)
                    if entry is None:
                        # Stop emitting in the same hold as the miss: a batch parked after
                        # it must find nobody emitting, or it would wait for no one.
                        self._emitting = False
                        done = True
                        self._emit_lock.notify_all()
                        return True
                    self._next += 1
                    if entry[1] is not None:
                        self._ended = True
                        self._parked.clear()
                    self._emit_lock.notify_all()
                if not self._send(*entry):
                    return False
        finally:
            if not done:
                with self._emit_lock:
                    self._emitting = False
                    self._emit_lock.notify_all()

    def _send(self, outputs: list[Any], marker: _EndOfStream | None) -> bool:
        """Hand outputs (and an ending marker) to the router; False if downstream stopped."""
        try:
            if outputs:
                self.router.emit(outputs)
            if marker is not None:
                self.router.end(marker)
        except ShutDown:
            return False
        return True

    def _leave(self) -> None:
        """Leave the stage; the last worker out passes the end of stream on."""
        with self._emit_lock:
            self._working -= 1
            # The stop event is set before any queue is shut down, so a worker that left
            # on ShutDown cannot pass on end of stream into a queue not yet shut down.
            last = self._working == 0 and not self.stopping.is_set() and not self._ended
            if last:
                self._ended = True
        if last:
            # A stop between the check and the put leaves nothing to pass on.
            with contextlib.suppress(ShutDown):
                self.router.end(self._end_marker)
