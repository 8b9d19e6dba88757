"""Beyond threads: run a stage's batches in worker processes or on any Executor (Dask too).

Import them from here: `from pipeline.executors import ProcessStage`.

- `ProcessStage(stage)` runs a stage in worker processes it owns for the run: for
  GIL-bound Python.
- `ExecutorStage(function, executor)` maps items on a caller-owned
  `concurrent.futures.Executor`: a process pool shared by several stages, Dask's
  `client.get_executor(pure=False)`, loky's.
- `DaskStage` and `local_cluster` (module `dask_cluster`, needs the `dask` extra) run
  batches on a Dask cluster and start a loopback `LocalCluster`; they are loaded the
  first time one is used, so importing this folder does not need Dask.

Batches cross the boundary through a window of futures, one per worker thread of the
stage, so order, backpressure and the stop-on-first-failure of thread stages hold.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.executors.errors import NotPicklable, RemoteError, RemoteTraceback
from pipeline.executors.executor import ExecutorStage
from pipeline.executors.pickling import find_unpicklable
from pipeline.executors.process import ProcessStage

if TYPE_CHECKING:
    from pipeline.executors.dask_cluster import DaskStage, local_cluster

# The names that need Dask, loaded from their module on first use.
_NEEDS_DASK = ("DaskStage", "local_cluster")


# Hidden from type checkers, so that mypy names a misspelt or moved name instead of
# typing it Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Load `DaskStage` or `local_cluster` on first use (they need Dask), and keep it."""
        if name not in _NEEDS_DASK:
            raise AttributeError(f"module 'pipeline.executors' has no attribute {name!r}")
        value = getattr(importlib.import_module("pipeline.executors.dask_cluster"), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NEEDS_DASK})


__all__ = [
    "DaskStage",
    "ExecutorStage",
    "NotPicklable",
    "ProcessStage",
    "RemoteError",
    "RemoteTraceback",
    "find_unpicklable",
    "local_cluster",
]
