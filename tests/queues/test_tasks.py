"""Tests for the task-queue face: enqueue by import path, worker threads, results and errors."""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.queues.codecs import JsonCodec, PickleCodec
from pipeline.queues.durable import DurableQueue
from pipeline.queues.errors import CodecError, TaskFailed
from pipeline.queues.tasks import TaskQueue, TaskWorkers, import_path
from pipeline.resilience.retry import RetryPolicy

SRC = str(Path(__file__).resolve().parents[2] / "src")
WAIT = 5.0  # the bound on every wait for a worker

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
    at_once = RetryPolicy(max_attempts=2, base_delay=0, max_delay=0, retry_on=Exception)
    with TaskQueue(path, max_attempts=2) as tasks:
        flaky_id = tasks.enqueue(flaky, 7)
        doomed = tasks.enqueue(divide, 1, 0)
        unencodable = tasks.enqueue(returns_a_set)
        unprintable = tasks.enqueue(raises_unprintable)
        with TaskWorkers(path, threads=1, retry=at_once) as workers:
            assert tasks.result(flaky_id, timeout=30) == 7
            failed = f"task {doomed} failed after 2 attempts: ZeroDivisionError"
            with pytest.raises(TaskFailed, match=failed):
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
        with pytest.raises(TypeError, match=r"arguments must be a sequence \(a tuple or a list\)"):
            tasks.enqueue_many(add, ["ab"])  # not split into add("a", "b")
        with pytest.raises(TypeError, match="keyword arguments must be a mapping, got list"):
            tasks.enqueue_call(add, (1, 2), [("times", 2)])  # type: ignore[arg-type]
        assert tasks.queue.qsize() == 0
    assert import_path(add) == f"{__name__}:add"


# Lost leases, lease renewal and the worker's survival.

STARTED = threading.Event()
GO_ON = threading.Event()
RUNS: list[float] = []


def waits_then(outcome: str) -> str:
    """Signal STARTED, wait for GO_ON, then succeed or raise as `outcome` says."""
    STARTED.set()
    if not GO_ON.wait(WAIT):
        raise TimeoutError("never let go on")
    if outcome == "raise":
        raise RuntimeError("failed after its lease was taken over")
    return outcome


def take_over(path: str, task_id: int) -> None:
    """Do what another worker does when a lease has lapsed: lease the task anew."""
    with DurableQueue[Any](path, "tasks") as other, other.transaction() as connection:
        taken = connection.execute(
            "UPDATE items SET lease_id = 'another', lease_owner = 'elsewhere:1',"
            " attempts = attempts + 1 WHERE id = ? AND state = 1",
            (task_id,),
        ).rowcount
    assert taken == 1


@pytest.mark.parametrize(
    ("outcome", "max_attempts"), [("ok", 3), ("raise", 3), ("raise", 1)]
)  # the ack of a success, the nack of a retry, the burial of a final failure
def test_a_lost_lease_is_counted_and_logged_and_the_worker_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, outcome: str, max_attempts: int
) -> None:
    path = str(tmp_path / "tasks.db")
    STARTED.clear()
    GO_ON.clear()
    with (
        TaskQueue(path) as tasks,
        TaskWorkers(path, threads=1, max_attempts=max_attempts) as workers,
    ):
        slow = tasks.enqueue(waits_then, outcome)
        assert STARTED.wait(WAIT)
        take_over(path, slow)
        GO_ON.set()
        after = tasks.enqueue(add, 1, 2)
        assert tasks.result(after, timeout=WAIT) == 3  # the same, only worker took it
        assert workers.leases_lost == 1
    lost = [record for record in caplog.records if "lease" in record.getMessage()]
    assert len(lost) == 1
    assert f"task {slow}" in lost[0].getMessage()
    assert lost[0].levelno == logging.WARNING


def test_a_task_longer_than_its_lease_renews_it_and_is_not_taken_over(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    STARTED.clear()
    GO_ON.clear()
    with TaskQueue(path) as tasks, TaskWorkers(path, threads=1, lease_seconds=1.5) as workers:
        slow = tasks.enqueue(waits_then, "ok")
        assert STARTED.wait(WAIT)
        with DurableQueue[Any](path, "tasks") as other:
            first_expiry = lease_of(other, slow)[1]
            deadline = time.monotonic() + WAIT
            while time.time() <= first_expiry + 0.3 and time.monotonic() < deadline:
                threading.Event().wait(0.05)  # let the first lease's time run out
            assert other.release_expired() == 0  # renewed: nothing lapsed
            assert lease_of(other, slow)[1] > first_expiry
        GO_ON.set()
        assert tasks.result(slow, timeout=WAIT) == "ok"
        assert (workers.finished, workers.leases_lost) == (1, 0)


def lease_of(queue: DurableQueue[Any], task_id: int) -> tuple[str, float]:
    lease_id, expires = (
        queue.connection()
        .execute("SELECT lease_id, lease_expires FROM items WHERE id = ?", (task_id,))
        .fetchone()
    )
    return lease_id, expires


# Results are scoped to their queue.


def test_result_answers_only_for_tasks_of_its_own_queue(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    with (
        TaskQueue(path, "mail") as mail,
        TaskQueue(path, "reports") as reports,
        DurableQueue[int](path, "plain") as plain,
    ):
        report = reports.enqueue(add, 20, 22)
        with TaskWorkers(path, "reports", threads=1):
            assert reports.result(report, timeout=WAIT) == 42
        with pytest.raises(KeyError, match=f"no task {report} in .*'mail'"):
            mail.result(report, timeout=WAIT)
        plain.put(7)
        (item,) = plain.peek(1)
        with pytest.raises(KeyError, match=f"no task {item[0]} in"):
            mail.result(item[0], timeout=WAIT)
        dead = reports.enqueue(divide, 1, 0)
        with TaskWorkers(path, "reports", threads=1, max_attempts=1), pytest.raises(TaskFailed):
            reports.result(dead, timeout=WAIT)
        with pytest.raises(KeyError, match=f"no task {dead} in"):
            mail.result(dead, timeout=WAIT)


# Time arguments.


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0.0])
def test_time_arguments_go_through_the_seconds_check(tmp_path: Path, bad: float) -> None:
    path = str(tmp_path / "tasks.db")
    with pytest.raises(
        ValueError, match=f"lease_seconds must be > 0 seconds and finite, got {bad}"
    ):
        TaskWorkers(path, lease_seconds=bad)
    with pytest.raises(
        ValueError, match=f"poll_interval must be > 0 seconds and finite, got {bad}"
    ):
        TaskQueue(path, poll_interval=bad)
    with TaskQueue(path) as tasks:
        task = tasks.enqueue(add, 1, 1)
        if bad != 0.0:
            with pytest.raises(
                ValueError, match=f"timeout must be >= 0 seconds and finite, got {bad}"
            ):
                tasks.result(task, timeout=bad)
        else:  # a zero timeout looks once
            with pytest.raises(TimeoutError):
                tasks.result(task, timeout=bad)
    with pytest.raises(TypeError, match="lease_seconds must be a number, got str"):
        TaskWorkers(path, lease_seconds="10")  # type: ignore[arg-type]


# Retries back off.


class Longest(random.Random):
    """A jitter that always draws the longest delay of the window."""

    def uniform(self, a: float, b: float) -> float:
        return b


def down_once(name: str) -> int:
    """Record the run's time; fail the first run as a service that is down does."""
    RUNS.append(time.time())
    if len(RUNS) == 1:
        raise ConnectionError(f"{name} is down")
    return len(RUNS)


def test_a_retry_waits_out_the_policy_delay_stored_in_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    RUNS.clear()
    policy = RetryPolicy(max_attempts=2, base_delay=0.3, max_delay=0.3, rng=Longest())
    with TaskQueue(path) as tasks, TaskWorkers(path, threads=2, retry=policy) as workers:
        task = tasks.enqueue(down_once, "the mail server")
        assert tasks.result(task, timeout=WAIT) == 2
        assert workers.failed == 1
    assert RUNS[1] - RUNS[0] >= 0.3  # the not-before time held, whatever the load


def test_a_retry_delay_is_kept_in_the_file_for_every_worker(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    RUNS.clear()
    policy = RetryPolicy(max_attempts=2, base_delay=3600, max_delay=3600, rng=Longest())
    with TaskQueue(path) as tasks:
        task = tasks.enqueue(down_once, "the mail server")
        failed_at = time.time()
        with TaskWorkers(path, threads=1, retry=policy) as workers:
            deadline = time.monotonic() + WAIT
            while workers.failed == 0 and time.monotonic() < deadline:
                tasks.queue.wait_for_change(0.05)
        # Other workers, after a restart: the task waits still.
        with TaskWorkers(path, threads=2), pytest.raises(TimeoutError):
            tasks.result(task, timeout=0.2)
        ready_at = (
            tasks.queue.connection()
            .execute("SELECT not_before FROM items WHERE id = ?", (task,))
            .fetchone()[0]
        )
    assert ready_at >= failed_at + 3600
    assert len(RUNS) == 1


def fails_with(kind: str) -> None:
    raise {"value": ValueError, "connection": ConnectionError}[kind](kind)


def test_a_task_may_bring_its_own_retry_policy(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    FLAKY_RUNS.clear()
    never_value_errors = RetryPolicy(max_attempts=5, base_delay=0, max_delay=0)
    with TaskQueue(path) as tasks:
        not_retried = tasks.enqueue(fails_with, "value", retry=never_value_errors)
        retried = tasks.enqueue_many(
            flaky,
            [(3,)],
            retry=RetryPolicy(max_attempts=2, base_delay=0, max_delay=0, retry_on=RuntimeError),
        )[0]
        with TaskWorkers(path, threads=1, max_attempts=1) as workers:
            with pytest.raises(TaskFailed, match="failed after 1 attempt: ValueError: value"):
                tasks.result(not_retried, timeout=WAIT)
            assert tasks.result(retried, timeout=WAIT) == 3  # 2 attempts where the queue has 1
        assert workers.failed == 2

    class Local(Exception):
        pass

    with (
        TaskQueue(str(tmp_path / "other.db")) as tasks,
        pytest.raises(ValueError, match="retry_on must hold classes importable by name"),
    ):
        tasks.enqueue(add, 1, 2, retry=RetryPolicy(retry_on=Local))
    with pytest.raises(ValueError, match=r"max_attempts=2 and retry\.max_attempts=3 disagree"):
        TaskWorkers(path, max_attempts=2, retry=RetryPolicy(max_attempts=3))


ORDER: list[str] = []


def record(name: str) -> str:
    ORDER.append(name)
    return name


def labelled(text: str, *, priority: str, retry: str) -> str:
    return f"{text}:{priority}:{retry}"


def test_enqueue_takes_a_priority_and_enqueue_call_any_keyword(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    ORDER.clear()
    with TaskQueue(path) as tasks:
        later = tasks.enqueue(record, "later", priority=5)
        first = tasks.enqueue(record, "first", priority=-5)
        usual = tasks.enqueue(record, "usual")
        call = tasks.enqueue_call(labelled, ("x",), {"priority": "high", "retry": "no"}, priority=9)
        with TaskWorkers(path, threads=1):
            assert [tasks.result(t, timeout=WAIT) for t in (later, first, usual)] == [
                "later",
                "first",
                "usual",
            ]
            assert tasks.result(call, timeout=WAIT) == "x:high:no"
        assert ORDER == ["first", "usual", "later"]
        with pytest.raises(TypeError, match="priority must be an int, got str"):
            tasks.enqueue(record, "x", priority="high")  # type: ignore[arg-type]


# Exit: workers left open do not keep the interpreter alive.

LEFT_OPEN = """
import sys
sys.path.insert(0, {src!r})
from pipeline.queues.tasks import TaskQueue, TaskWorkers
tasks = TaskQueue({path!r})
task = tasks.enqueue("math:fsum", [1, 2])
workers = TaskWorkers({path!r}, threads=2)
print(tasks.result(task, timeout=30), flush=True)
"""


def test_workers_left_open_let_the_interpreter_exit(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    child = subprocess.Popen(
        [sys.executable, "-c", LEFT_OPEN.format(src=SRC, path=path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=WAIT)
    assert (child.returncode, stdout, stderr) == (0, "3.0\n", "")
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)  # reaped: nothing of it is left


# The same class of fault: whatever a task does, the worker survives.


def exits(code: int) -> None:
    raise SystemExit(code)


def interrupts() -> None:
    raise KeyboardInterrupt


def unstorable_message() -> None:
    raise ValueError("a lone surrogate \udc80 in the message")


def test_a_task_raising_a_base_exception_fails_for_good_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "tasks.db")
    with TaskQueue(path) as tasks, TaskWorkers(path, threads=1, max_attempts=3) as workers:
        exiting = tasks.enqueue(exits, 3)
        interrupting = tasks.enqueue(interrupts)
        with pytest.raises(TaskFailed, match="failed after 1 attempt: SystemExit: 3"):
            tasks.result(exiting, timeout=WAIT)
        with pytest.raises(TaskFailed, match="failed after 1 attempt: KeyboardInterrupt"):
            tasks.result(interrupting, timeout=WAIT)
        assert tasks.result(tasks.enqueue(add, 2, 2), timeout=WAIT) == 4
        assert workers.failed == 2


def test_an_error_message_the_file_cannot_store_as_is_is_stored_escaped(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    with TaskQueue(path) as tasks, TaskWorkers(path, threads=1, max_attempts=2) as workers:
        task = tasks.enqueue(unstorable_message)
        with pytest.raises(TaskFailed, match=r"a lone surrogate \\udc80 in the message"):
            tasks.result(task, timeout=WAIT)
        assert tasks.result(tasks.enqueue(add, 2, 2), timeout=WAIT) == 4
        assert workers.failed == 2


def returns_a_lock() -> threading.Lock:
    return threading.Lock()


def test_a_result_that_cannot_be_pickled_fails_the_task_not_the_worker(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    with (
        TaskQueue(path, codec=PickleCodec()) as tasks,
        TaskWorkers(path, threads=1, codec=PickleCodec(), max_attempts=1),
    ):
        task = tasks.enqueue(returns_a_lock)
        with pytest.raises(TaskFailed, match=r"TypeError: cannot pickle '_thread\.lock'"):
            tasks.result(task, timeout=WAIT)
        assert tasks.result(tasks.enqueue(add, 2, 2), timeout=WAIT) == 4


def test_workers_that_cannot_all_start_leave_no_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = 0
    start = threading.Thread.start

    def start_one_only(thread: threading.Thread) -> None:
        nonlocal started
        if started == 1:
            raise RuntimeError("can't start new thread")
        started += 1
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_one_only)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        TaskWorkers(str(tmp_path / "tasks.db"), threads=3)


class Unbindable(JsonCodec):
    """JSON, but a result "unbindable" becomes something SQLite cannot store."""

    name = "unbindable-json"

    def encode(self, item: Any) -> bytes:
        if item == "unbindable":
            return [1]  # type: ignore[return-value]
        return super().encode(item)


def unbindable() -> str:
    RUNS.append(time.time())
    return "unbindable"


def test_an_outcome_that_cannot_be_stored_is_logged_and_the_task_given_up_in_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "tasks.db")
    RUNS.clear()
    codec = Unbindable()
    with (
        TaskQueue(path, codec=codec) as tasks,
        TaskWorkers(path, threads=1, codec=codec, max_lapses=2, lease_seconds=0.5),
    ):
        task = tasks.enqueue(unbindable)
        with pytest.raises(TaskFailed, match=f"task {task} was given up: lease lapsed 2 times"):
            tasks.result(task, timeout=WAIT)
        assert tasks.result(tasks.enqueue(add, 2, 2), timeout=WAIT) == 4
    assert len(RUNS) == 2
    assert sum("could not be stored" in record.getMessage() for record in caplog.records) == 2


PEER = """
import sys
sys.path[:0] = [{src!r}, {modules!r}]
import threading
from pipeline.queues.tasks import TaskWorkers
with TaskWorkers({path!r}, threads=1):  # the default lease
    threading.Event().wait(60)
"""

SLOW_IN_PEERS = """
import os, threading

def run(parent):
    if os.getpid() != parent:
        threading.Event().wait(60)  # the peer is killed meanwhile
    return "taken over"
"""


def test_a_killed_peer_task_is_taken_over_by_a_live_worker_within_a_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "tasks.db")
    (tmp_path / "slow_in_peers.py").write_text(SLOW_IN_PEERS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    STARTED.clear()
    GO_ON.clear()
    with TaskQueue(path) as tasks, TaskWorkers(path, threads=1):
        busy = tasks.enqueue(waits_then, "ok")  # keeps the live worker away meanwhile
        assert STARTED.wait(WAIT)
        task = tasks.enqueue("slow_in_peers:run", os.getpid())
        peer = subprocess.Popen(
            [sys.executable, "-c", PEER.format(src=SRC, modules=str(tmp_path), path=path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            owner = None
            while owner != f"{socket.gethostname()}:{peer.pid}" and time.monotonic() < deadline:
                assert peer.poll() is None
                tasks.queue.wait_for_change(0.05)
                owner = (
                    tasks.queue.connection()
                    .execute("SELECT lease_owner FROM items WHERE id = ?", (task,))
                    .fetchone()[0]
                )
            peer.kill()
        finally:
            if peer.poll() is None:
                peer.kill()
            peer.wait(WAIT)
            assert peer.stderr is not None
            peer.stderr.close()
        assert owner == f"{socket.gethostname()}:{peer.pid}"  # the peer ran it when killed
        GO_ON.set()
        assert tasks.result(busy, timeout=WAIT) == "ok"
        assert tasks.result(task, timeout=30) == "taken over"  # within the 10 s lease
