"""Run a stage in worker processes: `ProcessStage(MyStage(workers=2))`, for GIL-bound Python.

The wrapper owns a `ProcessPoolExecutor` for the run, of `stage.workers` processes
unless told otherwise. The stage object travels to each process once (pickled here,
so the same stage fails the same way under fork, forkserver and spawn, with an error
that names the attribute); its `setup()` runs once in each process before any batch,
and its `teardown()` once in each process after the last. Batches travel as they are;
outputs come back pickled by the worker, so an output that does not pickle is named.

Once per process: a task that runs setup (or teardown) waits at a barrier of all the
processes before it returns, so no process can take two of them, and the pool must
use every process. The pool starts in the first worker thread's `setup()` and is
shut down (pending batches cancelled) by the last worker thread's `teardown()`.

Worker processes ignore SIGINT: Ctrl-C reaches the parent, which stops the run,
cancels what has not started, lets running batches finish and shuts the pool down, so
no process is left behind.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any, Final, Generic, TypeVar

from pipeline._checks import positive_int
from pipeline.errors import PipelineError
from pipeline.executors.errors import NotPicklable
from pipeline.executors.executor import WINDOW_PER_WORKER, BatchFailure, WindowedStage
from pipeline.executors.pickling import find_unpicklable
from pipeline.stage import ItemFailed, PipelineStage

__all__ = ["BARRIER_SECONDS", "ProcessStage"]

In = TypeVar("In")
Out = TypeVar("Out")

BARRIER_SECONDS: Final = 60.0  # the most a process waits for its siblings to start


class ProcessStage(WindowedStage[In, Out], Generic[In, Out]):
    """Run `stage` in worker processes that this wrapper owns for the run.

    Blocking: the first worker thread's `setup()` starts the processes and waits for
    `stage.setup()` to finish in each; the last worker thread's `teardown()` waits for
    `stage.teardown()` in each and for the processes to exit.

    Args:
        stage: the stage to run; it and its items must pickle (its `local` is left
            behind and made anew in each process).
        processes: how many worker processes; defaults to `stage.workers`.
        max_inflight: the most batches in the processes at once (the wrapper's worker
            threads); defaults to 4 per process.
        start_method: "fork", "forkserver" or "spawn"; defaults to the platform's.
        name: defaults to the stage's name.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        stage: PipelineStage[In, Out],
        *,
        processes: int | None = None,
        max_inflight: int | None = None,
        start_method: str | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(stage, PipelineStage):
            raise TypeError(f"stage must be a PipelineStage, got {type(stage).__name__}")
        count = positive_int("processes", stage.workers if processes is None else processes)
        window = WINDOW_PER_WORKER * count if max_inflight is None else max_inflight
        methods = multiprocessing.get_all_start_methods()
        if start_method is not None and start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
        super().__init__(name or stage.name, workers=positive_int("max_inflight", window))
        self.stage = stage
        self.processes = count
        self.start_method = start_method
        # _lock guards _pool (the run's processes, started by the first worker thread
        # to arrive), _left (worker threads done with the run: torn down, or failed to
        # set up) and _setup_failed. The last to leave shuts the pool down and resets.
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._left = 0
        self._setup_failed = False

    def setup(self) -> None:
        """Start the worker processes if this is the first worker thread; set up the stage there.

        Raises:
            NotPicklable: the stage does not pickle; the message names the attribute.
            Exception: what `stage.setup()` raised in a worker process, remote traceback chained.
        """
        with self._lock:
            if self._pool is not None:
                return
            if not self._setup_failed:
                try:
                    self._pool = self._start()
                    return
                except BaseException:
                    self._setup_failed = True
                    self._leave()
                    raise
            self._leave()
        raise PipelineError(f"stage {self.name!r}: the worker processes did not start")

    def teardown(self) -> None:
        """Tear the stage down in every process and stop them, if this is the last thread out."""
        with self._lock:
            pool = self._leave()
        if pool is None:
            return
        try:
            _everywhere(pool, self.processes, _teardown_in_worker)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, items: list[In]) -> Future[Any]:
        assert self._pool is not None, "submit() before setup()"
        return self._pool.submit(_process_in_worker, items)

    def unpicklable(self, items: list[In]) -> str | None:
        for index, item in enumerate(items):
            problem = find_unpicklable(item, f"item {index} of the batch")
            if problem is not None:
                return problem
        return None

    def receive(self, result: Any) -> list[Out]:
        outputs: list[Out] = pickle.loads(result)
        return outputs

    def _leave(self) -> ProcessPoolExecutor | None:
        """Count one worker thread out (under `_lock`); return the pool if it was the last."""
        self._left += 1
        if self._left < self.workers:
            return None
        pool, self._pool = self._pool, None
        self._left = 0
        self._setup_failed = False
        return pool

    def _start(self) -> ProcessPoolExecutor:
        payload = _stage_payload(self.stage)
        context = multiprocessing.get_context(self.start_method)
        barrier = context.Barrier(self.processes)
        pool = ProcessPoolExecutor(
            self.processes, mp_context=context, initializer=_install, initargs=(barrier,)
        )
        try:
            _everywhere(pool, self.processes, _setup_in_worker, payload)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        return pool


def _everywhere(pool: ProcessPoolExecutor, processes: int, function: Any, *args: Any) -> None:
    """Run `function(*args)` once in each of the pool's processes; raise the first failure."""
    futures = [pool.submit(function, *args) for _ in range(processes)]
    wait(futures)
    for future in futures:
        try:
            future.result()
        except BatchFailure as failure:
            error = failure.rebuild([])
            raise error from error.__cause__


def _stage_payload(stage: PipelineStage[Any, Any]) -> bytes:
    """Pickle the stage's class and attributes, leaving out its thread-local `local`."""
    state = {key: value for key, value in vars(stage).items() if key != "local"}
    try:
        return pickle.dumps((type(stage), state), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        kind = type(stage).__name__
        problem = find_unpicklable(type(stage), f"the class {kind}")
        for key, value in state.items():
            problem = problem or find_unpicklable(value, f"{kind}.{key}")
        raise NotPicklable(
            f"stage {stage.name!r} cannot be sent to its worker processes: {problem or exc}"
        ) from exc


# What a worker process holds: the barrier of its pool and the stage it set up.
_barrier: Any = None
_stage: PipelineStage[Any, Any] | None = None


def _install(barrier: Any) -> None:
    """Initialise a worker process: keep the barrier; leave Ctrl-C to the parent."""
    global _barrier
    _barrier = barrier
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _setup_in_worker(payload: bytes) -> int:
    """Rebuild the stage and run its `setup()`; then wait for the sibling processes."""
    global _stage
    failure = None
    try:
        kind, state = pickle.loads(payload)
        stage = kind.__new__(kind)
        stage.__dict__.update(state)
        stage.local = threading.local()
        stage.setup()
        _stage = stage
    except BaseException as exc:
        failure = BatchFailure.of(exc, None)
    _barrier.wait(BARRIER_SECONDS)
    if failure is not None:
        raise failure
    return os.getpid()


def _teardown_in_worker() -> int:
    """Run the stage's `teardown()`; then wait for the sibling processes."""
    global _stage
    stage, _stage = _stage, None
    failure = None
    if stage is not None:
        try:
            stage.teardown()
        except BaseException as exc:
            failure = BatchFailure.of(exc, None)
    _barrier.wait(BARRIER_SECONDS)
    if failure is not None:
        raise failure
    return os.getpid()


def _process_in_worker(items: list[Any]) -> bytes:
    """Run the stage on a batch; return the outputs pickled, naming any output that is not."""
    stage = _stage
    if stage is None:
        raise BatchFailure.of(RuntimeError("this worker process was not set up"), None)
    try:
        outputs = stage.process_batch(items)
    except ItemFailed as failed:
        raise BatchFailure.of_item(failed) from None
    except BaseException as exc:
        raise BatchFailure.of(exc, None) from None
    if not isinstance(outputs, list):
        problem = f"process_batch() must return a list, got {type(outputs).__name__}"
        raise BatchFailure.of(TypeError(f"{type(stage).__name__}.{problem}"), None)
    try:
        return pickle.dumps(outputs, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        found = None
        for index, output in enumerate(outputs):
            found = found or find_unpicklable(output, f"output {index} of the batch")
        error = NotPicklable(f"stage {stage.name!r}: {found or exc}")
        error.__cause__ = exc
        raise BatchFailure.of(error, None) from None
