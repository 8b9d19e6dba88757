"""Run a stage in worker processes: `ProcessStage(MyStage(workers=2))`, for GIL-bound Python.

The wrapper owns a `ProcessPoolExecutor` for the run, of `stage.workers` processes
unless told otherwise (`processes=`), with one worker thread here per process, so the
run's statistics count the processes as the stage's workers and time each batch in
its process, not waiting for one. The stage object travels to each process once
(pickled here, so the same stage fails the same way under every start method, with
an error that names the attribute); its `setup()` runs once in each process before
any batch, its `flush()` once in each at the end of the stream, and its `teardown()`
once in each after the last.

Start method: forkserver where the platform has it, else spawn. Fork is only used
when asked for (`start_method="fork"`): a forked child inherits every lock of the
parent as it was, and one held by another thread at that moment (a logging handler
mid-write) is held for ever in the child.

Once per process: a task that runs setup (or flush, or teardown) waits at a barrier
of all the processes before it returns, so no process can take two of them, and the
pool must use every process. The pool starts in the first worker thread's `setup()`
and is shut down by the last worker thread's `teardown()`.

Every wait on the processes is bounded. It ends when a process of the pool dies (a
process that dies while starting is noticed here: the pool itself can miss it), and
once the run stops it lasts at most `stop_timeout` more seconds; then the stage kills
its processes, so a process stuck in user code cannot hold the run. A stop while the
processes start kills them at once.

Worker processes ignore SIGINT: Ctrl-C reaches the parent, which stops the run,
cancels what has not started, lets running batches finish (up to `stop_timeout`) and
shuts the pool down, so no process is left behind.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final, Generic, TypeVar

from pipeline._checks import positive_int, seconds
from pipeline.errors import PipelineError, describe
from pipeline.executors.errors import NotPicklable
from pipeline.executors.executor import (
    STOP_CHECK_SECONDS,
    STOP_TIMEOUT_SECONDS,
    BatchFailure,
    WindowedStage,
    pickled_outputs,
)
from pipeline.executors.pickling import find_unpicklable
from pipeline.stage import ItemFailed, PipelineStage
from pipeline.worker import current_stop_event

__all__ = ["BARRIER_SECONDS", "PROCESS_LATENCY_TARGET", "ProcessStage", "default_start_method"]

logger = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

BARRIER_SECONDS: Final = 60.0  # the most a process waits for its siblings to start
KILL_SECONDS: Final = 5.0  # the most a pool's shutdown waits for a killed process to end
PROCESS_LATENCY_TARGET: Final = 0.02
"""The seconds a batch sent to a process should take, unless the inner stage says.

A task costs a round trip here (0.1-1 ms, more on a loaded machine) plus pickling both
ways, so the thread stages' batches of ~2 ms would spend a third of their time on
the trip: 4,000 items of 0.08 ms on 2 processes came 0.58x `ProcessPoolExecutor.map`
with them and 0.98-1.02x with 20 ms (`benchmarks/bench_process_peers.py`); 10 ms and
50 ms came the same, and a shorter batch lets the processes end the stream together.
"""


def default_start_method() -> str:
    """Return the start method a `ProcessStage` uses unless told: forkserver, else spawn."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class ProcessStage(WindowedStage[In, Out], Generic[In, Out]):
    """Run `stage` in worker processes that this wrapper owns for the run.

    Blocking: the first worker thread's `setup()` starts the processes and waits for
    `stage.setup()` to finish in each; the last worker thread's `teardown()` waits for
    `stage.teardown()` in each and for the processes to exit. Each of these waits ends
    when a process dies, and lasts at most `stop_timeout` seconds after a stop (none
    while the processes start); the processes are then killed.

    The inner stage's settings take effect: its `workers` are the processes, its
    `latency_target` sizes the batches (read when a run starts; `PROCESS_LATENCY_TARGET`,
    20 ms, when it has none), its `flush()` runs in each process at the end of the
    stream, and its name is the wrapper's. A stage whose workers each take a
    different part (a mix pool's functions) defines `set_process_number(number)`: it
    is called in each process, numbered from 0, before `setup()`, since each process
    holds its own copy of the stage.

    Args:
        stage: the stage to run; it and its items must pickle (its `local` is left
            behind and made anew in each process). A stage that cannot give the same
            results in other processes is refused here, saying why.
        processes: how many worker processes; defaults to `stage.workers`.
        max_inflight: the most batches in the processes at once (the wrapper's worker
            threads); defaults to one per process. More hide the round trip of a batch
            between batches, but then a batch may wait for a process, and the
            statistics count threads, not processes, as the workers.
        start_method: "forkserver" (the default where the platform has it), "spawn"
            (the default elsewhere) or "fork". With forkserver and spawn the stage's
            class and functions must be importable by name (defined at the top level
            of a module) and a script needs the `if __name__ == "__main__":` guard.
            Fork starts faster but is unsafe in a program with other threads: a lock
            another thread holds at that moment (in logging, say) is held for ever
            in the child, which then hangs.
        stop_timeout: once the run stops, the most seconds the stage waits for a
            batch (or a setup, flush or teardown) still running in a process; then
            it kills its processes.
        name: defaults to the stage's name.
        workers: refused: a process stage counts processes; pass `processes=`.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range, or
            `stage` cannot run in other processes (the message says why).
    """

    def __init__(
        self,
        stage: PipelineStage[In, Out],
        *,
        processes: int | None = None,
        max_inflight: int | None = None,
        start_method: str | None = None,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
        name: str | None = None,
        workers: object = None,
    ) -> None:
        if workers is not None:
            raise TypeError(
                f"ProcessStage counts worker processes, not threads: pass processes={workers!r} "
                "(it defaults to the stage's workers), not workers="
            )
        if not isinstance(stage, PipelineStage):
            raise TypeError(f"stage must be a PipelineStage, got {type(stage).__name__}")
        refusal = _refusal(stage)
        if refusal is not None:
            raise TypeError(f"ProcessStage cannot run stage {stage.name!r}: {refusal}")
        count = positive_int("processes", stage.workers if processes is None else processes)
        window = positive_int("max_inflight", count if max_inflight is None else max_inflight)
        methods = multiprocessing.get_all_start_methods()
        if start_method is not None and start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
        self.stage = stage  # before PipelineStage.__init__, which sets latency_target
        super().__init__(name or stage.name, workers=window, latency_target=stage.latency_target)
        self.named_by_user = name is not None or stage.named_by_user
        self.processes = count
        self.start_method = default_start_method() if start_method is None else start_method
        self.stop_timeout = seconds("stop_timeout", stop_timeout)
        # _lock guards _pool (the run's processes, started by the first worker thread
        # to arrive), _left (worker threads done with the run: torn down, or failed to
        # set up), _flushed (worker threads at the end of the stream), _setup_error and
        # _killed (the processes were killed after a stop). The last to leave shuts
        # the pool down and resets them.
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._left = 0
        self._flushed = 0
        self._setup_error: BaseException | None = None
        self._killed = False

    @property
    def latency_target(self) -> float | None:
        """The seconds a batch should take: the inner stage's, else `PROCESS_LATENCY_TARGET`.

        Setting it sets the inner stage's, so that the two never disagree; None gives
        back the default.
        """
        target = self.stage.latency_target
        return PROCESS_LATENCY_TARGET if target is None else target

    @latency_target.setter
    def latency_target(self, target: float | None) -> None:
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, int | float) or not target > 0
        ):
            raise ValueError(f"latency_target must be a number of seconds > 0, got {target!r}")
        self.stage.latency_target = target

    @property
    def max_inflight(self) -> int:
        """The most batches in the processes at once: one per worker thread."""
        return self.workers

    def setup(self) -> None:
        """Start the worker processes if this is the first worker thread; set up the stage there.

        Raises:
            NotPicklable: the stage does not pickle; the message names the attribute.
            BrokenProcessPool: a worker process died while the processes started.
            PipelineError: the run stopped while the processes started (they are killed).
            Exception: what `stage.setup()` raised in a worker process, remote traceback chained.
        """
        with self._lock:
            if self._pool is not None:
                return
            if self._setup_error is None:
                try:
                    self._pool = self._start()
                    return
                except BaseException as exc:
                    self._setup_error = exc
                    self._leave()
                    raise
            failed = self._setup_error
            self._leave()
        # The other workers fail with the same error, so that whichever of them reports
        # first, the run's failure is what starting the processes raised.
        raise failed

    def flush(self) -> list[Out]:
        """Flush the stage in every process, if this is the last worker thread at the end."""
        with self._lock:
            self._flushed += 1
            pool = self._pool if self._flushed == self.workers else None
        if pool is None:
            return []
        outputs: list[Out] = []
        for result in self._everywhere(pool, _flush_in_worker, "flushing"):
            outputs.extend(pickle.loads(result))
        return outputs

    def teardown(self) -> None:
        """Tear the stage down in every process and stop them, if this is the last thread out."""
        with self._lock:
            killed = self._killed
            pool = self._leave()
        if pool is None:
            return
        if killed:
            _shut_down(pool, 0.0)
            logger.warning("stage %r: its worker processes were killed, not torn down", self.name)
            return
        grace = 0.0
        try:
            self._everywhere(pool, _teardown_in_worker, "tearing down")
            grace = self.stop_timeout
        finally:
            _shut_down(pool, grace)

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
        try:
            outputs: list[Out] = pickle.loads(result)
        except Exception as exc:
            raise NotPicklable(
                f"stage {self.name!r}: the outputs of the batch came back but could not be "
                f"unpickled here: {describe(exc)}"
            ) from exc
        return outputs

    def abandon(self, future: Future[Any]) -> None:
        """Kill the worker processes: a batch still runs `stop_timeout` seconds after a stop."""
        with self._lock:
            pool, already = self._pool, self._killed
            self._killed = True
        if pool is not None and not already:
            logger.warning(
                "stage %r: a batch was still running %s s after the run stopped: "
                "killing its worker processes",
                self.name,
                self.stop_timeout,
            )
            _kill(pool)

    def _leave(self) -> ProcessPoolExecutor | None:
        """Count one worker thread out (under `_lock`); return the pool if it was the last."""
        self._left += 1
        if self._left < self.workers:
            return None
        pool, self._pool = self._pool, None
        self._left = 0
        self._flushed = 0
        self._setup_error = None
        self._killed = False
        return pool

    def _start(self) -> ProcessPoolExecutor:
        payload = _stage_payload(self.stage)
        context = multiprocessing.get_context(self.start_method)
        barrier = context.Barrier(self.processes)
        pool = ProcessPoolExecutor(
            self.processes, mp_context=context, initializer=_install, initargs=(barrier,)
        )
        started = False
        try:
            self._everywhere(pool, _setup_in_worker, "starting", payload)
            started = True
        finally:
            if not started:
                _shut_down(pool, 0.0)
        return pool

    def _everywhere(
        self, pool: ProcessPoolExecutor, function: Any, doing: str, *args: Any
    ) -> list[Any]:
        """Run `function(number, *args)` once in each process; return what each returned.

        Each process gets its own `number`, 0 to processes - 1. The wait ends when a
        process dies, and after a stop lasts at most `stop_timeout` more seconds (none
        while `starting`).

        Raises:
            BrokenProcessPool: a process died; PipelineError: the stop's bound passed;
            Exception: the first failure in a process, rebuilt here.
        """
        stop = current_stop_event()
        futures = [pool.submit(function, number, *args) for number in range(self.processes)]
        give_up_at: float | None = None
        while wait(futures, STOP_CHECK_SECONDS).not_done:
            # The pool notices a death only among the processes it watched when it last
            # looked, so one that dies while starting can go unseen: look here too.
            dead = _dead_process(pool)
            if dead is not None:
                raise BrokenProcessPool(
                    f"worker process {dead} of stage {self.name!r} ended while {doing}"
                )
            if stop is not None and stop.is_set():
                now = time.monotonic()
                if give_up_at is None:
                    give_up_at = now + (0.0 if doing == "starting" else self.stop_timeout)
                if now >= give_up_at:
                    _kill(pool)
                    raise PipelineError(
                        f"stage {self.name!r}: the run stopped while its worker processes "
                        f"were {doing}; they were killed"
                    )
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except BatchFailure as failure:
                error = failure.rebuild([])
                raise error from error.__cause__
        return results


# The package's stages that cannot give the same results in worker processes, by the
# qualified name of their class (these extras are not imported here: an extra imports
# only the core), with the reason ProcessStage gives when it is built.
_REFUSED: Final = {
    "pipeline.resilience.resilient.ResilientStage": (
        "a ResilientStage keeps its statistics, circuit breaker and dead letters in the "
        "process that retries, so they would stay in the worker processes; put the "
        "ProcessStage inside it instead: ResilientStage(ProcessStage(stage), ...)"
    ),
    "pipeline.stages.quality.QualityStage": (
        "a QualityStage gathers its report and rejects in the process that checks the "
        "records, so they would stay in the worker processes; its checks are cheap: run "
        "it in threads"
    ),
    "pipeline.aio.stage.AsyncStage": (
        "an asyncio stage runs its own event loop; it waits, so threads suit it"
    ),
    "pipeline.graph.join.JoinStage": (
        "a join is wired into its graph in this process; put a ProcessStage inside the "
        "graph instead, around the work of one branch"
    ),
    "pipeline.graph.compose.SubgraphStage": (
        "a subgraph is wired into its graph in this process; put a ProcessStage inside "
        "the subgraph instead, around the work of one branch"
    ),
}


def _refusal(stage: PipelineStage[Any, Any]) -> str | None:
    """Say why `stage` cannot give the same results in worker processes; None if it can."""
    if isinstance(stage, WindowedStage):
        return f"a {type(stage).__name__} already runs its batches outside this process"
    for kind in type(stage).__mro__:
        reason = _REFUSED.get(f"{kind.__module__}.{kind.__qualname__}")
        if reason is not None:
            return reason
    return None


def _dead_process(pool: ProcessPoolExecutor) -> int | None:
    """Return the id of a process of `pool` that has ended, if any; never reaps one."""
    processes = dict(getattr(pool, "_processes", None) or {})
    sentinels = {process.sentinel: pid for pid, process in processes.items()}
    ended = multiprocessing.connection.wait(list(sentinels), timeout=0)
    return sentinels[ended[0]] if ended else None


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill every process of `pool` that has not ended (the pool then counts as broken)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if not multiprocessing.connection.wait([process.sentinel], timeout=0):
            process.kill()


def _shut_down(pool: ProcessPoolExecutor, grace: float) -> None:
    """Shut `pool` down: its processes get `grace` seconds to end, then are killed."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager: threading.Thread | None = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)  # forgets its thread: joined below
    deadline = time.monotonic() + grace
    for process in processes:
        left = max(0.0, deadline - time.monotonic())
        if not multiprocessing.connection.wait([process.sentinel], left):
            process.kill()
    multiprocessing.connection.wait([process.sentinel for process in processes], KILL_SECONDS)
    if manager is not None:
        manager.join(KILL_SECONDS)  # it ends once the processes have; it joins the rest


class _StagePickler(pickle.Pickler):
    """Pickles a stage, sending each `threading.local` in it (a wrapped stage's `local`) empty.

    Thread-local storage belongs to the threads of one process, and a stage fills it
    in `setup()`, which runs again in each worker process.
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is threading.local:
            return threading.local, ()
        return NotImplemented


def _stage_payload(stage: PipelineStage[Any, Any]) -> bytes:
    """Pickle the stage whole (its slots too), each thread-local `local` in it sent empty."""
    buffer = io.BytesIO()
    try:
        _StagePickler(buffer, pickle.HIGHEST_PROTOCOL).dump(stage)
        return buffer.getvalue()
    except Exception as exc:
        kind = type(stage).__name__
        problem = find_unpicklable(type(stage), f"the class {kind}")
        for key, value in _attributes(stage):
            problem = problem or find_unpicklable(value, f"{kind}.{key}")
        raise NotPicklable(
            f"stage {stage.name!r} cannot be sent to its worker processes: {problem or exc}"
        ) from exc


def _attributes(stage: PipelineStage[Any, Any]) -> list[tuple[str, object]]:
    """Return the stage's attributes, from its `__dict__` and its slots, but its `local`."""
    found = [(key, value) for key, value in vars(stage).items() if key != "local"]
    for kind in type(stage).__mro__:
        slots = kind.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in {"__dict__", "__weakref__"} and hasattr(stage, slot):
                found.append((slot, getattr(stage, slot)))
    return found


# What a worker process holds: the barrier of its pool and the stage it set up.
_barrier: Any = None
_stage: PipelineStage[Any, Any] | None = None


def _install(barrier: Any) -> None:
    """Initialise a worker process: keep the barrier; leave Ctrl-C to the parent."""
    global _barrier
    _barrier = barrier
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _setup_in_worker(number: int, payload: bytes) -> int:
    """Rebuild the stage and run its `setup()`; then wait for the sibling processes."""
    global _stage
    failure = None
    try:
        stage = pickle.loads(payload)
        stage.local = threading.local()
        if hasattr(stage, "set_process_number"):
            stage.set_process_number(number)
        stage.setup()
        _stage = stage
    except BaseException as exc:
        failure = BatchFailure.of(exc, None)
    _barrier.wait(BARRIER_SECONDS)
    if failure is not None:
        raise failure
    return os.getpid()


def _flush_in_worker(number: int) -> bytes:
    """Run the stage's `flush()`; then wait for the sibling processes; return the outputs."""
    failure = None
    result = pickle.dumps([], pickle.HIGHEST_PROTOCOL)
    if _stage is not None:
        try:
            result = _pickled_outputs(_stage, _stage.flush(), "flush")
        except BatchFailure as caught:
            failure = caught
        except BaseException as exc:
            failure = BatchFailure.of(exc, None)
    _barrier.wait(BARRIER_SECONDS)
    if failure is not None:
        raise failure
    return result


def _teardown_in_worker(number: int) -> int:
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
    return _pickled_outputs(stage, outputs, "process_batch")


def _pickled_outputs(stage: PipelineStage[Any, Any], outputs: object, method: str) -> bytes:
    """Return `outputs` pickled; raise a `BatchFailure` naming any output that does not pickle."""
    if not isinstance(outputs, list):
        problem = f"{method}() must return a list, got {type(outputs).__name__}"
        raise BatchFailure.of(TypeError(f"{type(stage).__name__}.{problem}"), None)
    return pickled_outputs(stage.name, outputs)
