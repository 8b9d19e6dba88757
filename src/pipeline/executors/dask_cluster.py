"""Dask for scale-out: a stage whose batches run on a Dask cluster (needs the `dask` extra).

`DaskStage(function, client)` is an `ExecutorStage` on `client.get_executor(pure=False)`:
`pure=False` because Dask otherwise hashes every batch (2.8 ms for 10k floats here) and
merges identical submissions into one task. The client may point at a real cluster's
scheduler (`Client("tcp://scheduler:8786")`) or at `local_cluster()`, which binds to
loopback only, dashboard included (Dask's default dashboard listens on every interface).

Memory: a batch travels inside its task, and Dask keeps the last messages of each
connection for its own debugging (`distributed.admin.low-level-log-length`, 1,000 by
default, each message under 1 MB): a client holds its last 1,000 batches, whatever
the queues bound. `local_cluster()` therefore keeps 16 while it is open (for a client
of your own, make it under `dask.config.set` of that setting). (Sending a
batch ahead with `client.scatter` would avoid the log, but scattered data dies with
its worker, and the task could not run again elsewhere.) The worker pickles the
outputs itself, so an output that does not pickle is named instead of stalling the
client's gather.

Stop: a worker thread that sees the run stop cancels its task (a task not started
never starts) and asks every Dask worker, once per run, to stop the run's batches:
a running batch ends after the item it is on, a batch that starts later calls
nothing, and the request returns once no batch of the run is running there, or after
`stop_timeout` seconds. So when `close()` or `run()` returns, no call of the function
is running and none starts. Each run has its own token, which its tasks carry.
The worker processes of `local_cluster()` ignore SIGINT (`dask_setup`, Dask's preload
hook), so that a terminal's Ctrl-C, sent to the whole process group, reaches the
client's process only, and it stops the run this way.

A worker lost mid-task (its process killed, its machine gone) does not fail the run:
the scheduler runs the task again on another worker, so the batch's side effects can
happen twice; a task that kills every worker it runs on fails with `KilledWorker`
after a few attempts (`distributed.scheduler.allowed-failures`, 3 by default).

Each task costs 11-30 ms here, so a batch needs ~50-100 ms of work to be worth
sending: Dask pays for work that is heavy per item, or for more machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager
from typing import Any, Final, Generic, TypeVar

try:
    import dask
    from distributed import Client, LocalCluster
except ImportError as exc:
    raise ImportError(
        "pipeline.executors.dask_cluster needs Dask: pip install 'threaded-pipeline[dask]'"
    ) from exc

from pipeline._checks import positive_int, seconds
from pipeline.executors.errors import NotPicklable
from pipeline.executors.executor import (
    WINDOW_PER_WORKER,
    BatchFailure,
    ExecutorStage,
    pickled_outputs,
)
from pipeline.executors.pickling import find_unpicklable
from pipeline.stage import PipelineStage

__all__ = ["MESSAGE_LOG_LENGTH", "STOP_TIMEOUT_SECONDS", "DaskStage", "local_cluster"]

In = TypeVar("In")
Out = TypeVar("Out")

STOP_TIMEOUT_SECONDS: Final = 30.0  # the most a stop waits for the running batches
MESSAGE_LOG_LENGTH: Final = 16  # Dask's debugging logs in `local_cluster()`: messages kept
_REPLY_SECONDS: Final = 10.0  # what the stop request may take beyond the workers' wait

_log = logging.getLogger(__name__)


class DaskStage(ExecutorStage[In, Out], Generic[In, Out]):
    """Map each item through `function` on a Dask cluster, one task per batch.

    Blocking: once the run stops, the worker threads with a batch in flight wait (at
    most `stop_timeout` seconds) until no call of `function` of the run is running.

    Args:
        function: called once per item on a Dask worker; it must pickle.
        client: a connected `distributed.Client`; the stage never closes it.
        max_inflight: the most batches submitted at once; defaults to 4 per worker
            thread of the cluster when the stage is made.
        name: defaults to the function's name.
        latency_target: the seconds a batch should take (see `ExecutorStage`);
            0.5 s by default, since a Dask task costs tens of milliseconds.
        stop_timeout: the most seconds a stop waits for the running batches to end
            their current item; a batch still running then is left to finish on its
            own, and a warning says so.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        function: Callable[[In], Out],
        client: Client,
        *,
        max_inflight: int | None = None,
        name: str | None = None,
        latency_target: float | None = 0.5,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        if isinstance(function, PipelineStage):
            raise TypeError(
                f"function must be a function, got the stage {function.name!r}: DaskStage maps "
                "a function and runs no stage's setup() or teardown(); pass the function, or "
                "wrap the stage in ProcessStage"
            )
        if not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        if max_inflight is None:
            workers = client.scheduler_info()["workers"].values()
            threads = sum(int(worker.get("nthreads", 1)) for worker in workers)
            max_inflight = WINDOW_PER_WORKER * max(1, threads)
        executor = client.get_executor(pure=False)  # type: ignore[no-untyped-call]
        super().__init__(
            function,
            executor,
            max_inflight=max_inflight,
            name=name,
            latency_target=latency_target,
        )
        self.client = client
        self.stop_timeout = seconds("stop_timeout", stop_timeout)
        # _lock guards _run (the token of the run under way, made by the first worker
        # thread to set up) and _joined (the worker threads set up and not torn down).
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._joined = 0

    def setup(self) -> None:
        """Join the run under way, or start one with a token of its own."""
        with self._lock:
            if self._run is None:
                self._run = _Run(uuid.uuid4().hex)
            self._joined += 1

    def teardown(self) -> None:
        """Leave the run; the last worker thread out forgets its token."""
        with self._lock:
            self._joined -= 1
            if self._joined == 0:
                self._run = None

    def process_batch(self, items: list[In]) -> list[Out]:
        """Run `items` on the cluster and wait for the outputs (see `WindowedStage`).

        Raises:
            CancelledError: the batch's task was cancelled, not by this stage.
        """
        try:
            return super().process_batch(items)
        except CancelledError as exc:
            raise CancelledError(
                f"stage {self.name!r}: the Dask task of a batch was cancelled, not by the "
                "stage: the client or the cluster closed during the run, or a client "
                "cancelled it"
            ) from exc

    def submit(self, items: list[In]) -> Future[Any]:
        run = self._run
        assert run is not None, "submit() before setup()"
        try:
            return self.executor.submit(_run_on_worker, run.token, self.name, self.function, items)
        except Exception as exc:
            problem = self.unpicklable(items)
            if problem is None:
                raise
            raise NotPicklable(f"stage {self.name!r}: {problem}") from exc

    def unpicklable(self, items: list[In]) -> str | None:
        # Dask falls back to cloudpickle, which sends lambdas: blame the items first.
        for index, item in enumerate(items):
            problem = find_unpicklable(item, f"item {index} of the batch")
            if problem is not None:
                return problem
        return find_unpicklable(self.function, "the function")

    def receive(self, result: Any) -> list[Out]:
        outputs: list[Out] = pickle.loads(result)
        return outputs

    def stop_task(self, future: Future[Any]) -> None:
        """Cancel `future`'s task if it has not started; stop the run's batches on the workers."""
        future.cancel()
        run = self._run
        if run is not None:
            run.stop_once(self.client, self.name, self.stop_timeout)


class _Run:
    """One run of a `DaskStage`: the token its tasks carry, and whether it was stopped."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._lock = threading.Lock()  # held while the workers are asked to stop
        self._stopped = False

    def stop_once(self, client: Client, stage: str, timeout: float) -> None:
        """Ask every worker to stop this run; blocks until they have (or a bound passes).

        The first caller asks; the others wait for its answer, so that every worker
        thread of the stage returns only once no batch of the run is running.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                replies = client.run(
                    _stop_on_worker,
                    self.token,
                    timeout,
                    on_error="return",
                    callback_timeout=timeout + _REPLY_SECONDS,
                )
            except Exception as exc:
                _log.warning("stage %r: the Dask workers were not told to stop: %r", stage, exc)
                return
            for worker, running in replies.items():
                if not isinstance(running, int):
                    _log.warning(
                        "stage %r: worker %s was not told to stop: %r", stage, worker, running
                    )
                elif running:
                    _log.warning(
                        "stage %r: stop_timeout=%s s passed with %d %s still running on "
                        "worker %s; left to finish on its own",
                        stage,
                        timeout,
                        running,
                        "batch" if running == 1 else "batches",
                        worker,
                    )


@contextmanager
def local_cluster(
    workers: int = 2, *, threads_per_worker: int = 1, processes: bool = True, **options: Any
) -> Iterator[Client]:
    """Start a Dask cluster on this machine, on loopback only, and yield a client of it.

    Blocks while the workers start (seconds: they start with spawn, so a script that
    calls this needs an `if __name__ == "__main__":` guard); closes both on exit.
    While it is open, Dask's debugging logs keep MESSAGE_LOG_LENGTH entries each
    (`distributed.admin.low-level-log-length`), so that they do not hold the last
    1,000 batches sent.

    Args:
        workers: how many Dask workers.
        threads_per_worker: threads in each worker.
        processes: workers in processes of their own (killable, restarted by their
            nanny, and deaf to Ctrl-C, which the client's process handles) or in
            threads of this process.
        options: passed on to `distributed.LocalCluster`.
    """
    positive_int("workers", workers)
    positive_int("threads_per_worker", threads_per_worker)
    settings: dict[str, Any] = {
        "n_workers": workers,
        "threads_per_worker": threads_per_worker,
        "processes": processes,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }
    if processes:
        settings["preload"] = [__name__]  # runs dask_setup() in each worker process
    else:
        settings["protocol"] = "tcp://"
    given = options.pop("preload", [])
    preload = [given] if isinstance(given, str) else list(given)  # Dask takes one name too
    settings.update(options)
    settings["preload"] = settings.get("preload", []) + preload
    with dask.config.set({"distributed.admin.low-level-log-length": MESSAGE_LOG_LENGTH}):
        cluster = LocalCluster(**settings)  # type: ignore[no-untyped-call]
        with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            yield client


# What runs in a Dask worker's process.


def dask_setup(worker: Any) -> None:
    """Leave Ctrl-C to the client: `local_cluster()`'s worker processes ignore SIGINT.

    Dask calls this in each worker process as it starts (its preload hook), on the
    process's main thread. A terminal sends Ctrl-C to the whole process group; the
    client's process stops the run (which ends the running batches) and closes the
    cluster, and a worker that died of the same SIGINT would only lose its work.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


_STOPPED_KEPT: Final = 1_024  # stopped runs remembered per worker process: the recent ones


class _WorkerRuns:
    """The runs a worker process serves: their batches running, and the runs stopped."""

    def __init__(self) -> None:
        # _lock guards the three fields. A stop waiting for a run's running batches
        # waits on an asyncio event of its own, in `_waiting`, which `leave` sets (on
        # the stop's loop) when the run's last running batch ends.
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._stopped: OrderedDict[str, None] = OrderedDict()
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def enter(self, token: str) -> bool:
        """Count a batch of run `token` in; False (and not counted) if the run was stopped."""
        with self._lock:
            if token in self._stopped:
                return False
            self._running[token] = self._running.get(token, 0) + 1
            return True

    def leave(self, token: str) -> None:
        """Count a batch of run `token` out."""
        with self._lock:
            left = self._running[token] - 1
            if left:
                self._running[token] = left
            else:
                del self._running[token]
                for loop, ended in self._waiting.pop(token, []):
                    with contextlib.suppress(RuntimeError):  # that loop has closed
                        loop.call_soon_threadsafe(ended.set)

    def is_stopped(self, token: str) -> bool:
        """Whether run `token` was stopped; read between items, so without the lock."""
        return token in self._stopped

    async def stop(self, token: str, timeout: float) -> int:
        """Stop run `token`; wait up to `timeout` s for its running batches; return those left.

        Runs on the worker's event loop, which it never blocks: it awaits an event that
        the last of the run's batches sets as it ends.
        """
        ended = asyncio.Event()
        with self._lock:
            self._stopped[token] = None
            while len(self._stopped) > _STOPPED_KEPT:
                self._stopped.popitem(last=False)
            if token not in self._running:
                return 0
            self._waiting.setdefault(token, []).append((asyncio.get_running_loop(), ended))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), timeout)
        with self._lock:
            waiting = self._waiting.get(token, [])
            self._waiting[token] = [entry for entry in waiting if entry[1] is not ended]
            if not self._waiting[token]:
                del self._waiting[token]
            return self._running.get(token, 0)


_worker_runs = _WorkerRuns()


def _run_on_worker(
    token: str, stage: str, function: Callable[[Any], Any], items: list[Any]
) -> bytes:
    """Apply `function` to each item until the run stops; return the outputs pickled.

    Failures come back as a `BatchFailure`: the function's, with the item's index, or
    a `NotPicklable` naming the output that cannot be sent back.
    """
    outputs: list[Any] = []
    failure: BatchFailure | None = None
    if _worker_runs.enter(token):
        try:
            for index, item in enumerate(items):
                if _worker_runs.is_stopped(token):
                    break  # the run is over: what the batch made is dropped
                try:
                    outputs.append(function(item))
                except BaseException as exc:
                    failure = BatchFailure.of(exc, index, outputs)
                    break
        finally:
            _worker_runs.leave(token)
    if failure is not None:
        # Raised here, outside the handler, so that the user's exception is not its
        # context: Dask pickles a failure's whole chain, which need not pickle.
        raise failure
    return pickled_outputs(stage, outputs)


async def _stop_on_worker(token: str, timeout: float) -> int:
    """Stop run `token` in this worker; return its batches still running after `timeout` s.

    Runs on the worker's event loop (by `client.run`), which must not block, nor start
    a thread that outlives the call: it awaits the run's batches (`_WorkerRuns.stop`).
    """
    return await _worker_runs.stop(token, timeout)
