"""Dask: a stage on a loopback LocalCluster, a remote failure, and a worker killed mid-task.

The scenarios run once, in a subprocess on one shared cluster (`dask_scenarios.py`);
each test checks one thing they saw. Skipped when the `dask` extra is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "distributed", reason="the dask extra is not installed: pip install 'threaded-pipeline[dask]'"
)

SCRIPT = Path(__file__).with_name("dask_scenarios.py")
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("dask")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(folder)],
        capture_output=True,
        text=True,
        timeout=50,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def test_the_cluster_listens_on_loopback_only(seen: dict[str, Any]) -> None:
    assert seen["scheduler"].startswith("tcp://127.0.0.1:")
    assert seen["dashboard"].startswith("http://127.0.0.1:")


def test_outputs_come_in_input_order_with_four_batches_per_worker_thread(
    seen: dict[str, Any],
) -> None:
    assert seen["ordered"] is True
    assert seen["window"] == 8


def test_a_remote_failure_names_the_item_with_its_traceback(seen: dict[str, Any]) -> None:
    assert seen["failure"] == "stage 'fail_on_seven' failed on item 7: RemoteBoom: no 7"
    assert seen["failure_cause"] == "RemoteBoom"
    assert "in fail_on_seven" in seen["remote_traceback"]


def test_a_worker_killed_mid_task_has_its_task_run_again_elsewhere(seen: dict[str, Any]) -> None:
    # The first attempt killed its worker; Dask ran the task again, so it ran twice.
    assert seen["rerun_output"] == [1]
    first, second = seen["attempt_pids"]
    assert first != second
