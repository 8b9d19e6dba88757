"""The Dask scenarios, run in a process of their own on one loopback cluster.

A Dask cluster starts threads in its client's process, and restarts them when a worker
is killed; so the scenarios run here, away from the tests' thread-leak check, and print
what they saw as one JSON object for tests/executors/test_dask_stage.py.
Usage: python dask_scenarios.py FOLDER  (with the tests folder on PYTHONPATH)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import remote_work

from pipeline import Pipeline, StageError
from pipeline.executors.dask_cluster import DaskStage, local_cluster


def main(folder: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with local_cluster(2) as client:
        seen["dashboard"] = client.dashboard_link
        seen["scheduler"] = client.scheduler_info()["address"]
        stage = DaskStage(remote_work.square, client)
        seen["window"] = stage.max_inflight
        seen["ordered"] = Pipeline(stage).run(range(100)) == [item * item for item in range(100)]
        try:
            Pipeline(DaskStage(remote_work.fail_on_seven, client)).run(range(20))
        except StageError as error:
            seen["failure"] = str(error)
            seen["failure_cause"] = type(error.__cause__).__name__
            seen["remote_traceback"] = str(error.__cause__.__cause__ if error.__cause__ else "")
        killer = DaskStage(remote_work.record_and_kill_first_attempt, client)
        seen["rerun_output"] = Pipeline(killer).run([folder])
        attempts = sorted(path.name for path in Path(folder).glob("attempt-*"))
        seen["attempt_pids"] = [int(name.split("-")[2]) for name in attempts]
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
