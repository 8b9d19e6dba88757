"""Dask: a stage on a loopback LocalCluster, failures, stops, memory, a worker killed mid-task.

The scenarios run once, in a subprocess on one shared cluster (`dask_scenarios.py`);
each test checks one thing they saw. Skipped when the `dask` extra is not installed.
"""

from __future__ import annotations

import json
import os
import re
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


def test_an_item_that_does_not_pickle_is_named(seen: dict[str, Any]) -> None:
    assert seen["unpicklable_item"] == {
        "message": "stage 'square' failed in process_batch(): NotPicklable: stage 'square': "
        "item 0 of the batch (lock) cannot be pickled: TypeError: cannot pickle "
        "'_thread.lock' object; a lock or event belongs to one process: create it in "
        "setup(), in the worker",
        "cause": "NotPicklable",
        "original": "TypeError",
    }


def test_an_output_that_does_not_pickle_is_named(seen: dict[str, Any]) -> None:
    assert seen["unpicklable_output"] == {
        "message": "stage 'a_lock' failed in process_batch(): NotPicklable: stage 'a_lock': "
        "output 0 of the batch (lock) cannot be pickled: TypeError: cannot pickle "
        "'_thread.lock' object; a lock or event belongs to one process: create it in "
        "setup(), in the worker",
        "cause": "NotPicklable",
        "original": "RemoteTraceback",
    }


def test_an_exception_whose_repr_raises_is_the_cause_not_dasks_error(
    seen: dict[str, Any],
) -> None:
    assert seen["broken_repr"] == {
        "message": "stage 'broken_repr_on_two' failed on item 2: BrokenRepr: no 2",
        "cause": "BrokenRepr",
        "original": "RemoteTraceback",
    }


def test_an_exception_that_cannot_be_pickled_comes_back_as_a_remote_error(
    seen: dict[str, Any],
) -> None:
    assert seen["unpicklable_failure"]["cause"] == "RemoteError"
    assert seen["unpicklable_failure"]["message"].startswith(
        "stage 'unpicklable_failure_on_two' failed on item 2: RemoteError: HoldsALock: no 2 "
        "(could not be sent back: TypeError: cannot pickle '_thread.lock' object)"
    )


def test_an_exception_whose_message_cannot_be_read_still_fails_the_run(
    seen: dict[str, Any],
) -> None:
    assert seen["unprintable"] == {
        "message": "stage 'unprintable_on_three' failed on item 3: Unprintable: <str() failed>",
        "cause": "Unprintable",
        "original": "RemoteTraceback",
    }


@pytest.mark.parametrize("kind", ["break", "failure", "ctrl_c"])
def test_a_stopped_run_leaves_no_call_running_and_starts_none(
    seen: dict[str, Any], kind: str
) -> None:
    started, ended = seen[f"{kind}_calls_when_stopped"]
    assert started == ended
    assert seen[f"{kind}_calls_later"] == [started, ended]
    assert 0 < started < 1_000


def test_a_stop_raises_what_stopped_the_run(seen: dict[str, Any]) -> None:
    assert "break_raised" not in seen
    assert seen["failure_raised"] == "StageError"
    assert seen["ctrl_c_raised"] == "KeyboardInterrupt"


def test_memory_does_not_grow_with_the_stream(seen: dict[str, Any]) -> None:
    # 2,500 items of 20 KB streamed through (50 MB), with queues of 16 batches of 8.
    assert seen["memory_growth_mb"] < 25  # every batch kept: +100 MB


def test_a_task_carries_more_than_one_item_by_default(seen: dict[str, Any]) -> None:
    # latency_target=0.5 s by default: batches grow toward half a second of work.
    assert seen["tasks_for_200_items"] < 50


def test_a_stage_given_as_the_function_is_refused_saying_why() -> None:
    from pipeline.executors.dask_cluster import DaskStage
    from pipeline.stages import FunctionStage

    message = (
        "function must be a function, got the stage 'abs': DaskStage maps a function and "
        "runs no stage's setup() or teardown(); pass the function, or wrap the stage in "
        "ProcessStage"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        DaskStage(FunctionStage(abs), None)  # type: ignore[arg-type]


def test_a_call_that_outlasts_the_stop_timeout_is_named_in_a_warning(
    seen: dict[str, Any],
) -> None:
    assert seen["outlasted_raised"] == "KeyboardInterrupt"
    [warning] = seen["outlasted_warnings"]
    assert re.fullmatch(
        r"stage 'interrupt_and_hold': stop_timeout=0\.1 s passed with 1 batch still running "
        r"on worker tcp://127\.0\.0\.1:\d+; left to finish on its own",
        warning,
    )


def test_a_bad_stop_timeout_is_named(seen: dict[str, Any]) -> None:
    assert seen["bad_stop_timeout"] == "stop_timeout must be > 0 seconds and finite, got 0"


def test_no_thread_and_no_worker_process_is_left_once_the_cluster_closes(
    seen: dict[str, Any],
) -> None:
    assert seen["threads_left"] == ["MainThread"]
    assert seen["workers_left"] == []


def test_a_task_cancelled_from_elsewhere_says_so(seen: dict[str, Any]) -> None:
    assert seen["cancelled_elsewhere"] == {
        "message": "stage 'cancel_own_task' failed in process_batch(): CancelledError: "
        "stage 'cancel_own_task': the Dask task of a batch was cancelled, not by the "
        "stage: the client or the cluster closed during the run, or a client cancelled it",
        "cause": "CancelledError",
        "original": "CancelledError",
    }
