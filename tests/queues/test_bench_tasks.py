"""The outcomes docs/queues.md states beside huey, from `benchmarks/bench_tasks.py --quick`.

The benchmark runs in a subprocess under a timeout; its JSON says what happened to the
tasks (never how fast: speed is for the benchmark's own output). Without huey installed
the benchmark skips huey's side, and so does this test. Also here: what makes
TaskWorkers' throughput on a file with an fsync per commit, pinned.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.queues.durable import DurableQueue
from pipeline.queues.tasks import TaskQueue, TaskWorkers

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_tasks.py"
HUEY = importlib.util.find_spec("huey") is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("bench-tasks") / "figures.json"
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    found: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    found["printed"] = completed.stdout
    return found


def test_the_quick_benchmark_completes_and_leaves_no_worker_process(
    report: dict[str, Any],
) -> None:
    assert report["worker processes"]
    assert [pid for pid in report["worker processes"] if _alive(pid)] == []
    assert "TaskWorkers: tasks/s" in report["figures"]


def test_a_worker_killed_mid_task_loses_nothing_and_its_tasks_run_again(
    report: dict[str, Any],
) -> None:
    # At least once for the runs, exactly once for the stored results.
    counts = report["kill"]["taskworkers"]
    assert counts["running when killed"] == 2
    assert counts["completed"] == counts["tasks"]
    assert counts["lost"] == 0
    assert counts["runs"] == counts["tasks"] + 2
    assert counts["ran twice or more"] == 2


def test_a_task_whose_function_cannot_be_imported_goes_to_the_dead_letters(
    report: dict[str, Any],
) -> None:
    seen = report["unimportable"]["taskworkers"]
    assert seen["missing"][0] == "failed"
    assert "ModuleNotFoundError: No module named 'bench_tasks_producer_only'" in seen["missing"][1]
    [(row_id, attempts, error)] = seen["dead"]
    assert (row_id, attempts) == (seen["missing id"], 3)
    assert error.startswith("ModuleNotFoundError")
    assert f"#{row_id} " in seen["dead listing"]
    assert seen["ordinary"] == ["ok", 2]
    assert seen["pending"] == 0


@pytest.mark.skipif(not HUEY, reason="huey is not installed (the bench extra)")
def test_beside_huey_which_loses_the_running_tasks_and_drops_the_unimportable_one(
    report: dict[str, Any],
) -> None:
    counts = report["kill"]["huey"]
    assert counts["running when killed"] == 2
    assert counts["lost"] == 2
    seen = report["unimportable"]["huey"]
    assert seen["missing"] == ["none", None]
    assert (seen["rows left"], seen["pending"]) == (0, 0)
    assert seen["ordinary"] == ["ok", 2]


def test_the_workers_of_one_taskworkers_take_turns_for_their_write_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waiting in SQLite's busy handler sleeps 1 to 100 ms between tries; the workers
    # wait for each other on a lock of their own instead. A transaction entered holds
    # (bounded) for a second one to enter beside it: one that does is counted.
    path = str(tmp_path / "tasks.db")
    with TaskQueue(path) as tasks:
        ids = tasks.enqueue_many("operator:add", [(n, 1) for n in range(8)])
    state = threading.Condition()
    inside: dict[str, int] = {"now": 0, "most": 0}
    original = DurableQueue._transaction

    @contextlib.contextmanager
    def watched(self: DurableQueue[Any]) -> Iterator[Any]:
        with state:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
            state.notify_all()
            state.wait_for(lambda: inside["now"] > 1, timeout=0.1)
        try:
            with original(self) as connection:
                yield connection
        finally:
            with state:
                inside["now"] -= 1

    monkeypatch.setattr(DurableQueue, "_transaction", watched)
    with TaskQueue(path) as tasks, TaskWorkers(path, threads=4):
        assert [tasks.result(task, timeout=30) for task in ids] == [n + 1 for n in range(8)]
    assert inside["most"] == 1
