"""The Dask scenarios, run in a process of their own on one loopback cluster.

A Dask cluster starts threads in its client's process, and restarts them when a worker
is killed; so the scenarios run here, away from the tests' thread-leak check, and print
what they saw as one JSON object for tests/executors/test_dask_stage.py.
Usage: python dask_scenarios.py FOLDER  (with the tests folder on PYTHONPATH)
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask_work
import remote_work
from distributed import Client, get_task_stream

from pipeline import Pipeline, StageError
from pipeline.executors.dask_cluster import DaskStage, local_cluster

AFTER_STOP_SECONDS = 0.5  # how long the stop scenarios watch for calls started late
PAYLOADS = 2_500  # items of 20 KB through the memory scenario: 50 MB in all


def main(folder: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with local_cluster(2) as client:
        worker_pids = sorted(client.run(os.getpid).values())
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
        seen.update(transport_failures(client))
        seen.update(stops(client, Path(folder)))
        seen["memory_growth_mb"] = memory_growth_mb(client)
        with get_task_stream(client) as tasks:
            Pipeline(DaskStage(remote_work.nap, client)).run(range(200))
        seen["tasks_for_200_items"] = len(tasks.data)
        seen.update(stop_timeout(client))
        killer = DaskStage(remote_work.record_and_kill_first_attempt, client)
        seen["rerun_output"] = Pipeline(killer).run([folder])
        attempts = sorted(path.name for path in Path(folder).glob("attempt-*"))
        seen["attempt_pids"] = [int(name.split("-")[2]) for name in attempts]
        worker_pids += sorted(client.run(os.getpid).values())
    # Dask keeps a thread of its own for good: its offload pool, a module global. Its
    # threads that watch a worker process end once they see it gone: a moment after the
    # cluster closes, on a loaded machine, so they are given a few seconds to.
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.name.startswith("Dask-Offload"):
            thread.join(5)
    threads = [thread.name for thread in threading.enumerate()]
    seen["threads_left"] = [name for name in threads if not name.startswith("Dask-Offload")]
    seen["workers_left"] = [pid for pid in worker_pids if alive(pid)]
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def transport_failures(client: Client) -> dict[str, Any]:
    """What an item or an output that cannot travel, and an unprintable failure, give."""
    seen: dict[str, Any] = {}
    cases: list[tuple[str, Callable[[Any], Any], list[Any]]] = [
        ("unpicklable_item", remote_work.square, [threading.Lock()]),
        ("unpicklable_output", dask_work.a_lock, [1]),
        ("unprintable", dask_work.unprintable_on_three, list(range(6))),
        ("broken_repr", dask_work.broken_repr_on_two, list(range(4))),
        ("unpicklable_failure", dask_work.unpicklable_failure_on_two, list(range(4))),
        ("cancelled_elsewhere", dask_work.cancel_own_task, [1]),
    ]
    for key, function, items in cases:
        try:
            Pipeline(DaskStage(function, client), batch_size=1).run(items)
        except StageError as error:
            cause = error.__cause__
            seen[key] = {
                "message": str(error),
                "cause": type(cause).__name__,
                "original": type(cause.__cause__).__name__ if cause else "",
            }
    return seen


def stops(client: Client, folder: Path) -> dict[str, Any]:
    """Calls started and ended when a stopped run returns, and a moment later."""
    seen: dict[str, Any] = {}
    for kind, function in [
        ("break", dask_work.record_call),
        ("failure", dask_work.record_call_failing_on_five),
        ("ctrl_c", dask_work.record_call_interrupting_on_three),
    ]:
        calls = folder / kind
        calls.mkdir()
        items = [(str(calls), number) for number in range(1_000)]
        pipeline = Pipeline(DaskStage(function, client))
        try:
            for count, _ in enumerate(pipeline.stream(items)):
                if count == 3 and kind == "break":
                    break
            pipeline.close()
        except (StageError, KeyboardInterrupt) as error:
            seen[f"{kind}_raised"] = type(error).__name__
        seen[f"{kind}_calls_when_stopped"] = dask_work.calls(str(calls))
        threading.Event().wait(AFTER_STOP_SECONDS)
        seen[f"{kind}_calls_later"] = dask_work.calls(str(calls))
    return seen


class Recording(logging.Handler):
    """Keeps the log records it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def stop_timeout(client: Client) -> dict[str, Any]:
    """What a stop says of a call that outlasts `stop_timeout`, and a bad `stop_timeout`."""
    seen: dict[str, Any] = {}
    try:
        DaskStage(remote_work.square, client, stop_timeout=0)
    except ValueError as error:
        seen["bad_stop_timeout"] = str(error)
    handler = Recording()
    logger = logging.getLogger("pipeline.executors.dask_cluster")
    logger.addHandler(handler)
    try:
        Pipeline(DaskStage(dask_work.interrupt_and_hold, client, stop_timeout=0.1)).run([0])
    except KeyboardInterrupt:
        seen["outlasted_raised"] = "KeyboardInterrupt"
    finally:
        logger.removeHandler(handler)
    seen["outlasted_warnings"] = [record.getMessage() for record in handler.records]
    return seen


def memory_growth_mb(client: Client) -> float:
    """Return how much this process grew, in MB, while 50 MB streamed through a stage."""
    stage = DaskStage(dask_work.payload_size, client)
    Pipeline(stage, queue_size=16, batch_size=8).run(payloads(200))
    gc.collect()
    before = resident_bytes()
    outputs = 0
    for _ in Pipeline(stage, queue_size=16, batch_size=8).stream(payloads(PAYLOADS)):
        outputs += 1
    gc.collect()
    assert outputs == PAYLOADS
    return (resident_bytes() - before) / 1e6


def payloads(count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield bytes(20_000)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
