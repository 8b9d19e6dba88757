"""Process-stage scenarios that could hang, each run as a script with a timeout.

Each checks what the script printed and, by process id, that no worker process of
the run is left.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("process_scenarios.py")
TESTS = Path(__file__).resolve().parents[1]
SCRIPT_SECONDS = 45.0  # a whole run, processes started and stopped included
START_METHODS = [
    method
    for method in ("fork", "forkserver", "spawn")
    if method in multiprocessing.get_all_start_methods()
]


def run_scenario(
    folder: Path, *arguments: str, interrupt: bool = False, **environment: str
) -> tuple[int, str, str]:
    """Run the script on `arguments`; press Ctrl-C once it says "ready" if `interrupt`."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]),
        "PROCESS_WORK_FOLDER": str(folder),
        **environment,
    }
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    finished = False
    try:
        if interrupt:
            assert process.stdout is not None
            ready = process.stdout.readline().strip()
            assert ready == "ready", process.stderr.read() if process.stderr else ""
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=SCRIPT_SECONDS)
        finished = True
    finally:
        process.kill()
        process.wait(SCRIPT_SECONDS)
        for pid in [] if finished else noted_processes(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # a worker left behind by a failed run
    return process.returncode, stdout, stderr


def noted_processes(folder: Path) -> list[int]:
    return [int(path.name.split("-")[1]) for path in folder.glob("process-*")]


def assert_no_process_left(folder: Path, at_least: int) -> None:
    pids = noted_processes(folder)
    assert len(pids) >= at_least
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_default_start_method_does_not_fork_a_lock_another_thread_holds(
    tmp_path: Path,
) -> None:
    returncode, stdout, stderr = run_scenario(tmp_path, "held-lock")
    assert returncode == 0, stderr
    assert stdout.split() == ["outputs", "0", "2", "4", "6", "8", "10"]


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_failure_ends_the_run_though_a_process_never_returns(
    start_method: str, tmp_path: Path
) -> None:
    returncode, stdout, stderr = run_scenario(tmp_path, "stuck-then-failure", start_method)
    assert returncode == 0, stderr
    assert stdout.strip() == (
        "raised StageError: stage 'never_returns_on_zero' failed on item 1: "
        "ValueError: item 1 is bad | ValueError: item 1 is bad"
    )
    assert "killing its worker processes" in stderr
    assert_no_process_left(tmp_path, 2)


def test_a_break_ends_the_run_though_a_process_never_returns(tmp_path: Path) -> None:
    returncode, stdout, stderr = run_scenario(tmp_path, "stuck-then-break")
    assert returncode == 0, stderr
    assert stdout.strip() == "closed"
    assert_no_process_left(tmp_path, 2)


def test_ctrl_c_ends_the_run_though_a_process_never_returns(tmp_path: Path) -> None:
    returncode, stdout, stderr = run_scenario(tmp_path, "stuck-then-ctrl-c", interrupt=True)
    assert returncode == 0, stderr
    assert stdout.strip() == "interrupted"
    assert_no_process_left(tmp_path, 2)


def test_ctrl_c_while_the_processes_start_kills_them(tmp_path: Path) -> None:
    returncode, stdout, stderr = run_scenario(tmp_path, "ctrl-c-while-starting", interrupt=True)
    assert returncode == 0, stderr
    assert stdout.strip() == "interrupted"
    assert_no_process_left(tmp_path, 2)


def test_a_worker_that_dies_while_starting_fails_the_run_naming_the_stage(
    tmp_path: Path,
) -> None:
    returncode, stdout, stderr = run_scenario(
        tmp_path, "dies-while-starting", DIE_WHILE_STARTING="1"
    )
    assert returncode == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == 3, stdout + stderr
    for line in lines:
        assert line.startswith("raised StageError: stage 'double' failed in setup(): worker ")
        assert "| BrokenProcessPool: " in line
    assert_no_process_left(tmp_path, 6)
