"""Tests for the task-queue face: enqueue by import path, worker threads, results and errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.queues.errors import CodecError, TaskFailed
from pipeline.queues.tasks import TaskQueue, TaskWorkers, import_path

FLAKY_RUNS: list[int] = []
RELEASE = threading.Event()


def add(a: int, b: int, *, times: int = 1) -> int:
    return (a + b) * times


def divide(a: int, b: int) -> float:
    return a / b


def flaky(n: int) -> int:
    FLAKY_RUNS.append(n)
    if len(FLAKY_RUNS) < 2:
        raise RuntimeError("first run fails")
    return n


def gated(n: int) -> int:
    if not RELEASE.wait(10):
        raise TimeoutError("never released")
    return n


def returns_a_set() -> set[int]:
    return {1}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def raises_unprintable() -> None:
    raise Unprintable


def test_tasks_run_in_worker_threads_and_results_wait(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    with TaskQueue(path) as tasks:
        first = tasks.enqueue(add, 2, 3, times=10)
        by_name = tasks.enqueue(f"{__name__}:add", 1, 1)
        many = tasks.enqueue_many(add, [(n, n) for n in range(20)], priority=-1)
        with TaskWorkers(path, threads=3) as workers:
            assert tasks.result(first, timeout=30) == 50
            assert tasks.result(by_name, timeout=30) == 2
            assert [tasks.result(task, timeout=30) for task in many] == [2 * n for n in range(20)]
        assert workers.finished == 22
        assert tasks.queue.qsize() == 0


def test_a_failing_task_is_retried_then_its_error_is_stored(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    FLAKY_RUNS.clear()
    with TaskQueue(path, max_attempts=2) as tasks:
        flaky_id = tasks.enqueue(flaky, 7)
        doomed = tasks.enqueue(divide, 1, 0)
        unencodable = tasks.enqueue(returns_a_set)
        unprintable = tasks.enqueue(raises_unprintable)
        with TaskWorkers(path, threads=1, max_attempts=2) as workers:
            assert tasks.result(flaky_id, timeout=30) == 7
            with pytest.raises(TaskFailed, match=f"task {doomed} failed: ZeroDivisionError"):
                tasks.result(doomed, timeout=30)
            with pytest.raises(TaskFailed, match="TypeError: Object of type set is not JSON"):
                tasks.result(unencodable, timeout=30)
            with pytest.raises(TaskFailed, match=r"Unprintable: <str\(\) failed>"):
                tasks.result(unprintable, timeout=30)
        assert FLAKY_RUNS == [7, 7]
        assert workers.failed == 1 + 2 + 2 + 2
        assert len(tasks.queue.dead_letters()) == 3  # kept for `requeue-dead`


def test_result_waits_for_a_running_task_and_times_out_cleanly(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    RELEASE.clear()
    with TaskQueue(path) as tasks, TaskWorkers(path, threads=1):
        task = tasks.enqueue(gated, 5)
        with pytest.raises(TimeoutError, match=f"task {task} did not finish within 0.1 s"):
            tasks.result(task, timeout=0.1)
        RELEASE.set()
        assert tasks.result(task, timeout=30) == 5
        with pytest.raises(KeyError, match="no task 999"):
            tasks.result(999)


def test_bad_targets_and_arguments_are_refused_before_storing(tmp_path: Path) -> None:
    with TaskQueue(str(tmp_path / "tasks.db")) as tasks:
        with pytest.raises(ValueError, match="must be importable by name; <function"):
            tasks.enqueue(lambda: 1)
        with pytest.raises(ValueError, match="must be 'module:function', got 'add'"):
            tasks.enqueue("add")
        with pytest.raises(CodecError, match=r"cannot encode item 0 of the batch \(dict\)"):
            tasks.enqueue(add, {1}, 2)
        assert tasks.queue.qsize() == 0
    assert import_path(add) == f"{__name__}:add"
