"""Ctrl-C reaches a process stage: the run stops and no worker process is left."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import WAIT

SCRIPT = Path(__file__).with_name("ctrl_c_processes.py")
TESTS = Path(__file__).resolve().parents[1]
START_METHODS = [
    method
    for method in ("fork", "forkserver", "spawn")
    if method in multiprocessing.get_all_start_methods()
]


@pytest.mark.parametrize("start_method", START_METHODS)
def test_ctrl_c_stops_a_process_stage_and_leaves_no_process(start_method: str) -> None:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[0] == "ready", process.stderr.read() if process.stderr else ""
        pids = [int(pid) for pid in ready[1:]]
        assert len(pids) >= 2
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=WAIT)
    finally:
        process.kill()
        process.wait(WAIT)
    assert process.returncode == 0, stderr
    assert stdout.strip() == "interrupted"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
