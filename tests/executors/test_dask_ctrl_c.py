"""Ctrl-C in a terminal reaches every process of the group; a `local_cluster()` run stops cleanly.

The script runs in a session of its own, and SIGINT goes to its whole process group,
as a terminal sends it: the client's process stops the run, no call is left running,
no worker process is left, and no worker dies of the SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "distributed", reason="the dask extra is not installed: pip install 'threaded-pipeline[dask]'"
)

SCRIPT = Path(__file__).with_name("dask_ctrl_c.py")
TESTS = Path(__file__).resolve().parents[1]


def test_ctrl_c_to_the_process_group_stops_the_run_and_its_workers(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        worker_pids = json.loads(process.stdout.readline())
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    seen = json.loads(stdout.strip().splitlines()[-1])
    assert process.returncode == 0, stderr
    assert seen["raised"] == "KeyboardInterrupt"
    started, ended = seen["calls"]
    assert started == ended
    # A worker process that got the SIGINT would die of it, printing its traceback.
    assert "KeyboardInterrupt" not in stderr
    for pid in worker_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
