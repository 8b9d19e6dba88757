"""Beyond threads: run a stage's batches in worker processes or on any Executor (Dask too).

- `ProcessStage(stage)` runs a stage in worker processes it owns for the run: for
  GIL-bound Python.
- `ExecutorStage(function, executor)` maps items on a caller-owned
  `concurrent.futures.Executor`: a process pool shared by several stages, Dask's
  `client.get_executor(pure=False)`, loky's.
- `pipeline.executors.dask` (needs the `dask` extra) starts a loopback `LocalCluster`.

Batches cross the boundary through a window of futures, one per worker thread of the
stage, so order, backpressure and the stop-on-first-failure of thread stages hold.
"""

from __future__ import annotations

from pipeline.executors.errors import NotPicklable, RemoteError, RemoteTraceback
from pipeline.executors.executor import ExecutorStage
from pipeline.executors.pickling import find_unpicklable
from pipeline.executors.process import ProcessStage

__all__ = [
    "ExecutorStage",
    "NotPicklable",
    "ProcessStage",
    "RemoteError",
    "RemoteTraceback",
    "find_unpicklable",
]
