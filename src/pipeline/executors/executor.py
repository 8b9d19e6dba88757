"""Run a stage's batches on any `concurrent.futures.Executor`: a process pool, Dask, loky...

Design: an executor stage is an ordinary stage whose `workers` threads each hand one
batch at a time to the executor and wait for its future. The window of futures in
flight is therefore the set of worker threads, `max_inflight` of them, and everything
the engine guarantees for thread stages holds unchanged: batches are numbered when
taken, so input order is restored (or not, with `ordered=False`); the queues bound
the items in flight (each worker holds one batch); the first failure stops the run.
A window of a few batches per executor worker keeps every executor worker busy
(`benchmarks/bench_executors.py --only windows`: skewed tasks on 2 processes came 6.2%
over ideal with 1 batch per process, 1.4% with 2, 1.3% with 4, the default).

Batches, not items, cross the boundary: a task costs about 0.33 ms on a process pool
and 11 ms on Dask here, so one task per item would cost more than most items' work.

Stop: a worker waiting for its future wakes every `STOP_CHECK_SECONDS` to look at the
run's stop event (an `Event` and a `Future` cannot be waited on together). Once the
run stops it cancels its future if the executor has not started it, or waits for the
task that is running to end, at most `stop_timeout` seconds, and drops the outputs:
the run is over. A task still running then is the stage's to `abandon`: a process
stage kills its processes; a caller-owned executor keeps the task (and is never shut
down), and the stage logs that it left it running.

Failures: the function runs remotely inside `run_batch`, which catches what it raises
and sends back a `BatchFailure` with the item's index and the traceback as text. Here
the stage raises the original exception (its `__cause__` is the `RemoteTraceback`), so
the run stops with a `StageError` naming the stage and the item. A transport failure
(an item or result that does not pickle) is explained by naming the part that does not.
"""

from __future__ import annotations

import logging
import os
import pickle
import traceback
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future, wait
from typing import Any, Final, Generic, TypeVar

from pipeline._checks import positive_int, seconds
from pipeline.errors import describe
from pipeline.executors.errors import NotPicklable, RemoteError, RemoteTraceback
from pipeline.executors.pickling import find_unpicklable
from pipeline.stage import ItemFailed, PipelineStage, map_items
from pipeline.worker import current_stop_event

__all__ = [
    "STOP_CHECK_SECONDS",
    "STOP_TIMEOUT_SECONDS",
    "WINDOW_PER_WORKER",
    "BatchFailure",
    "ExecutorStage",
    "default_window",
    "pickled_outputs",
    "run_batch",
]

In = TypeVar("In")
Out = TypeVar("Out")

logger = logging.getLogger(__name__)

STOP_CHECK_SECONDS: Final = 0.05
STOP_TIMEOUT_SECONDS: Final = 10.0  # the default wait, after a stop, for a running task
WINDOW_PER_WORKER: Final = 4


class BatchFailure(Exception):
    """Carries a failure out of a worker: the exception, where, and the traceback text.

    `index` is the failing item's place in the batch, and `outputs` the outputs of the
    items before it (delivered ahead of the failure, as for thread stages); `index` is
    None when the failure belongs to the batch as a whole (a `process_batch` that raised
    without naming an item). The exception is replaced by a `RemoteError` if it would
    not survive pickling, so that it can never break the executor.
    """

    def __init__(
        self,
        error: BaseException,
        index: int | None,
        traceback_text: str,
        outputs: list[Any] | None = None,
    ) -> None:
        super().__init__(error, index, traceback_text, outputs)
        self.error = error
        self.index = index
        self.traceback_text = traceback_text
        self.outputs: list[Any] = [] if outputs is None else outputs

    @classmethod
    def of(
        cls, error: BaseException, index: int | None, outputs: list[Any] | None = None
    ) -> BatchFailure:
        """Return the failure to send back for `error`, raised at item `index`."""
        text = "".join(traceback.format_exception(error))
        try:
            pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))
        except Exception as problem:
            error = RemoteError(f"{describe(error)} (could not be sent back: {describe(problem)})")
        return cls(error, index, text, outputs)

    def __str__(self) -> str:
        # Never the error's own repr(), which user code may break: the executor (Dask's
        # worker, say) prints the failure it sends back.
        where = "the batch" if self.index is None else f"item {self.index} of the batch"
        return f"{describe(self.error)}, at {where}"

    def __repr__(self) -> str:
        return f"BatchFailure({self})"

    @classmethod
    def of_item(cls, failed: ItemFailed) -> BatchFailure:
        """Return the failure to send back for an `ItemFailed` raised by a batch loop."""
        return cls.of(failed.__cause__ or failed, failed.index, failed.outputs)

    def rebuild(self, items: list[Any]) -> BaseException:
        """Return the exception to raise here, for a batch of `items`, with its remote traceback."""
        error = self.error
        if error.__cause__ is None:
            error.__cause__ = RemoteTraceback(self.traceback_text)
        if self.index is None:
            return error
        failed = ItemFailed(items[self.index], self.index, self.outputs)
        failed.__cause__ = error
        return failed


def run_batch(function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Apply `function` to each item; runs in the executor's worker. Failures: `BatchFailure`."""
    try:
        return map_items(function, items)
    except ItemFailed as failed:
        raise BatchFailure.of_item(failed) from None


def pickled_outputs(stage: str, outputs: list[Any]) -> bytes:
    """Return `outputs` pickled, in the worker; a `BatchFailure` names one that does not pickle.

    Pickled there rather than by the executor, so that the output to blame is named
    before anything is sent, and nothing the worker made can break the executor.
    """
    try:
        return pickle.dumps(outputs, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        found = None
        for index, output in enumerate(outputs):
            found = found or find_unpicklable(output, f"output {index} of the batch")
        error = NotPicklable(f"stage {stage!r}: {found or exc}")
        error.__cause__ = exc
        raise BatchFailure.of(error, None) from None


def default_window(executor: Executor) -> int:
    """Return the default `max_inflight` for `executor`: a few batches per executor worker.

    The worker count is the executor's `_max_workers` (the standard library's pools, loky),
    or the CPU count when the executor does not say.
    """
    workers = getattr(executor, "_max_workers", None)
    if not isinstance(workers, int) or workers < 1:
        workers = os.cpu_count() or 1
    return WINDOW_PER_WORKER * workers


class WindowedStage(PipelineStage[In, Out], Generic[In, Out]):
    """A stage whose worker threads each run one batch at a time somewhere else.

    Subclasses say how a batch is submitted (`submit`), what must pickle for it to
    travel (`unpicklable`) and what becomes of a task still running `stop_timeout`
    seconds after a stop (`abandon`); this class waits, watches the stop event and
    explains failures. Runs in the stage's worker threads.
    """

    stop_timeout: float = STOP_TIMEOUT_SECONDS
    """The most seconds a worker thread waits, once the run stops, for its running task."""

    def submit(self, items: list[In]) -> Future[Any]:
        """Start processing `items` elsewhere; return the future of what `receive` takes."""
        raise NotImplementedError

    def unpicklable(self, items: list[In]) -> str | None:
        """Return what in the work for `items` does not pickle, and why; None if all does."""
        return None

    def stop_task(self, future: Future[Any]) -> None:
        """Once the run stops: cancel `future` if its task has not started, else wait for it.

        A running task is waited for at most `stop_timeout` seconds, then handed to
        `abandon`. `DaskStage` stops its tasks its own way.
        """
        # A running task cannot be cancelled: wait for its end, not its outputs.
        if not future.cancel() and not wait((future,), self.stop_timeout).done:
            self.abandon(future)

    def receive(self, result: Any) -> list[Out]:
        """Turn what the future returned into the batch's outputs (the default: as it is)."""
        outputs: list[Out] = result
        return outputs

    def abandon(self, future: Future[Any]) -> None:
        """Give up a task still running `stop_timeout` seconds after a stop (the default: log it).

        The executor is the caller's, so its task is left to it: a thread cannot be killed.
        """
        logger.warning(
            "stage %r: a task was still running %s s after the run stopped; it is left "
            "to its executor, and its outputs are dropped",
            self.name,
            self.stop_timeout,
        )

    def process_batch(self, items: list[In]) -> list[Out]:
        """Run `items` elsewhere and wait for the outputs; blocks until they come back.

        Returns an empty list once the run stops, without the outputs: a task not
        started is cancelled; a running one is waited for at most `stop_timeout` seconds,
        then handed to `abandon`.

        Raises:
            ItemFailed: the work raised for one item (the original is its `__cause__`).
            NotPicklable: the work or an item could not be sent; the message names it.
            BrokenExecutor: a worker process died (killed by a signal, os._exit).
        """
        stop = current_stop_event()
        future = self.submit(items)
        if stop is not None:
            while not wait((future,), timeout=STOP_CHECK_SECONDS).done:
                if stop.is_set():
                    self.stop_task(future)
                    return []
            if stop.is_set():
                return []
        try:
            result = future.result()
        except BatchFailure as failure:
            error = failure.rebuild(items)
            raise error from error.__cause__
        except BrokenExecutor:
            raise
        except Exception as exc:
            problem = self.unpicklable(items)
            if problem is not None:
                raise NotPicklable(f"stage {self.name!r}: {problem}") from exc
            raise
        return self.receive(result)


class ExecutorStage(WindowedStage[In, Out], Generic[In, Out]):
    """A stage that maps each item through `function` on a caller-owned `executor`.

    Each batch becomes one task, `run_batch(function, items)`. At most `max_inflight`
    batches are submitted at once (the stage's worker threads). The executor is the
    caller's: the stage never shuts it down.

    Args:
        function: called once per item in the executor's worker; for a process pool or
            Dask it must pickle (a function defined at the top level of a module).
        executor: any `concurrent.futures.Executor`: `ProcessPoolExecutor`,
            `ThreadPoolExecutor`, Dask's `client.get_executor(pure=False)`, loky's...
        max_inflight: the most batches submitted and not yet finished; defaults to
            `default_window(executor)`, 4 per executor worker.
        name: defaults to the function's name.
        stop_timeout: once the run stops, the most seconds a worker thread waits for
            its running task; a task still running then is left to the executor (a
            thread cannot be killed), logged, and its outputs dropped.
        latency_target: the seconds a batch should take; without it a stage whose
            batches take more than a few milliseconds sends one item per task. Give a
            Dask stage, whose tasks cost tens of milliseconds each, a target well above
            that (say 0.5 s) so that each task carries enough work.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        function: Callable[[In], Out],
        executor: Executor,
        *,
        max_inflight: int | None = None,
        name: str | None = None,
        latency_target: float | None = None,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        if not isinstance(executor, Executor):
            raise TypeError(
                f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
            )
        window = default_window(executor) if max_inflight is None else max_inflight
        window = positive_int("max_inflight", window)
        super().__init__(
            name or getattr(function, "__name__", None),
            workers=window,
            latency_target=latency_target,
        )
        self.function = function
        self.executor = executor
        self.stop_timeout = seconds("stop_timeout", stop_timeout)

    @property
    def max_inflight(self) -> int:
        """The most batches in flight at once: one per worker thread."""
        return self.workers

    def submit(self, items: list[In]) -> Future[Any]:
        return self.executor.submit(run_batch, self.function, items)

    def unpicklable(self, items: list[In]) -> str | None:
        return find_unpicklable(self.function, "the function") or _unpicklable_item(items)


def _unpicklable_item(items: list[Any]) -> str | None:
    for index, item in enumerate(items):
        problem = find_unpicklable(item, f"item {index} of the batch")
        if problem is not None:
            return problem
    return None
