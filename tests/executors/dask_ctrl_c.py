"""A run on a `local_cluster()` for a terminal's Ctrl-C: SIGINT to the whole process group.

Prints the worker processes' ids once outputs come, and, once interrupted, what it saw.
Usage: python dask_ctrl_c.py FOLDER  (with the tests folder on PYTHONPATH)
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import dask_work

from pipeline import Pipeline
from pipeline.executors.dask_cluster import DaskStage, local_cluster


def main(folder: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    try:
        with local_cluster(2) as client:
            seen["pids"] = sorted(client.run(os.getpid).values())
            items = [(folder, number) for number in range(10_000)]
            pipeline = Pipeline(DaskStage(dask_work.record_call, client))
            try:
                for count, _ in enumerate(pipeline.stream(items)):
                    if count == 2:
                        print(json.dumps(seen["pids"]), flush=True)
            finally:
                # The press may land in this loop's body, outside the run's own waits:
                # stop the run before the cluster closes under it.
                pipeline.close()
    except KeyboardInterrupt:
        seen["raised"] = "KeyboardInterrupt"
    seen["calls"] = dask_work.calls(folder)
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
