"""Dask for scale-out: a stage whose batches run on a Dask cluster (needs the `dask` extra).

`DaskStage(function, client)` is an `ExecutorStage` on `client.get_executor(pure=False)`:
`pure=False` because Dask otherwise hashes every batch (2.8 ms for 10k floats here) and
merges identical submissions into one task. The client may point at a real cluster's
scheduler (`Client("tcp://scheduler:8786")`) or at `local_cluster()`, which binds to
loopback only, dashboard included (Dask's default dashboard listens on every interface).

A worker lost mid-task (its process killed, its machine gone) does not fail the run:
the scheduler runs the task again on another worker, so the batch's side effects can
happen twice; a task that kills every worker it runs on fails with `KilledWorker`
after a few attempts (`distributed.scheduler.allowed-failures`, 3 by default).

Each task costs 11-30 ms here, so a batch needs ~50-100 ms of work to be worth
sending: Dask pays for work that is heavy per item, or for more machines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from distributed import Client, LocalCluster

from pipeline._checks import positive_int
from pipeline.executors.executor import WINDOW_PER_WORKER, ExecutorStage

__all__ = ["DaskStage", "local_cluster"]

In = TypeVar("In")
Out = TypeVar("Out")


class DaskStage(ExecutorStage[In, Out], Generic[In, Out]):
    """Map each item through `function` on a Dask cluster, one task per batch.

    Args:
        function: called once per item on a Dask worker; it must pickle.
        client: a connected `distributed.Client`; the stage never closes it.
        max_inflight: the most batches submitted at once; defaults to 4 per worker
            thread of the cluster when the stage is made.
        name: defaults to the function's name.
        latency_target: the seconds a batch should take (see `ExecutorStage`);
            0.5 s by default, since a Dask task costs tens of milliseconds.
    """

    def __init__(
        self,
        function: Callable[[In], Out],
        client: Client,
        *,
        max_inflight: int | None = None,
        name: str | None = None,
        latency_target: float | None = 0.5,
    ) -> None:
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


@contextmanager
def local_cluster(
    workers: int = 2, *, threads_per_worker: int = 1, processes: bool = True, **options: Any
) -> Iterator[Client]:
    """Start a Dask cluster on this machine, on loopback only, and yield a client of it.

    Blocks while the workers start (seconds: they start with spawn, so a script that
    calls this needs an `if __name__ == "__main__":` guard); closes both on exit.

    Args:
        workers: how many Dask workers.
        threads_per_worker: threads in each worker.
        processes: workers in processes of their own (killable, restarted by their
            nanny) or in threads of this process.
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
    if not processes:
        settings["protocol"] = "tcp://"
    settings.update(options)
    cluster = LocalCluster(**settings)  # type: ignore[no-untyped-call]
    with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        yield client
