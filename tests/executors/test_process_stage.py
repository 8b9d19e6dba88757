"""ProcessStage: a stage run in worker processes it owns, under every start method."""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import process_work
import pytest
import remote_work
from remote_work import RemoteBoom

from pipeline import Pipeline, StageError
from pipeline.executors import NotPicklable, ProcessStage, RemoteError, RemoteTraceback
from pipeline.executors.process import default_start_method
from pipeline.stages import FunctionStage

START_METHODS = [
    method
    for method in ("fork", "forkserver", "spawn")
    if method in multiprocessing.get_all_start_methods()
]


@pytest.mark.parametrize("start_method", START_METHODS)
def test_setup_and_teardown_run_once_in_each_worker_process(
    start_method: str, tmp_path: Path
) -> None:
    stage = ProcessStage(remote_work.PidStage(str(tmp_path), workers=2), start_method=start_method)
    outputs = Pipeline(stage).run(range(200))
    assert [item for item, _ in outputs] == list(range(200))
    pids = {pid for _, pid in outputs}
    assert os.getpid() not in pids
    set_up = {int(path.name.split("-")[1]) for path in tmp_path.glob("setup-*")}
    torn_down = {int(path.name.split("-")[1]) for path in tmp_path.glob("teardown-*")}
    assert len(set_up) == 2
    assert pids <= set_up
    assert torn_down == set_up


def test_a_stage_runs_again_with_fresh_processes(tmp_path: Path) -> None:
    stage = ProcessStage(remote_work.PidStage(str(tmp_path), workers=1))
    pipeline = Pipeline(stage)
    first = {pid for _, pid in pipeline.run(range(5))}
    second = {pid for _, pid in pipeline.run(range(5))}
    assert len(first) == len(second) == 1
    assert first != second


def test_the_processes_default_to_the_stages_workers_with_one_batch_each() -> None:
    stage = ProcessStage(remote_work.SlowSquare(0.0, workers=3))
    assert (stage.processes, stage.workers, stage.name) == (3, 3, "SlowSquare")
    assert repr(stage) == "<ProcessStage name='SlowSquare' workers=3>"


def test_processes_is_the_parameter_and_workers_is_refused_naming_it() -> None:
    assert ProcessStage(FunctionStage(remote_work.square), processes=2).processes == 2
    with pytest.raises(TypeError) as caught:
        ProcessStage(FunctionStage(remote_work.square), workers=2)
    assert str(caught.value) == (
        "ProcessStage counts worker processes, not threads: pass processes=2 "
        "(it defaults to the stage's workers), not workers="
    )


def test_the_statistics_count_the_processes_as_the_workers() -> None:
    pipeline = Pipeline(ProcessStage(FunctionStage(remote_work.square), processes=2))
    assert pipeline.run(range(50)) == [item * item for item in range(50)]
    statistics = pipeline.stats()
    assert statistics is not None
    figures = statistics.stage("square")
    assert (figures.workers, figures.items_in, figures.items_out) == (2, 50, 50)


def test_the_default_start_method_is_forkserver_where_there_is_one() -> None:
    stage = ProcessStage(FunctionStage(remote_work.square))
    expected = "forkserver" if "forkserver" in START_METHODS else "spawn"
    assert stage.start_method == default_start_method() == expected
    assert ProcessStage(FunctionStage(remote_work.square), start_method="fork").start_method == (
        "fork"
    )


def test_the_inner_stages_latency_target_sizes_the_batches() -> None:
    inner = FunctionStage(remote_work.square, latency_target=0.25)
    assert ProcessStage(inner).latency_target == 0.25


def test_a_stage_named_by_the_user_keeps_its_name_inside() -> None:
    named = ProcessStage(FunctionStage(remote_work.square, name="squares"))
    assert (named.name, named.named_by_user) == ("squares", True)
    assert not ProcessStage(FunctionStage(remote_work.square)).named_by_user


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_failure_in_a_worker_names_the_item_with_the_remote_traceback(
    start_method: str,
) -> None:
    stage = ProcessStage(FunctionStage(remote_work.fail_on_seven), start_method=start_method)
    with pytest.raises(StageError) as caught:
        Pipeline(stage).run(range(20))
    assert str(caught.value) == "stage 'fail_on_seven' failed on item 7: RemoteBoom: no 7"
    assert type(caught.value.__cause__) is RemoteBoom
    assert "in fail_on_seven" in str(caught.value.__cause__.__cause__)


def test_the_outputs_before_a_failure_in_a_worker_are_delivered_first() -> None:
    outputs: list[int] = []
    stage = ProcessStage(FunctionStage(remote_work.fail_on_seven))
    with pytest.raises(StageError, match="on item 7"):
        outputs.extend(Pipeline(stage, batch_size=16).stream(range(20)))
    assert outputs == list(range(7))


def test_a_setup_failure_comes_back_with_its_remote_traceback() -> None:
    class_stage = remote_work.PidStage("/nonexistent", workers=1)
    with pytest.raises(StageError) as caught:
        Pipeline(ProcessStage(class_stage)).run([1])
    assert caught.value.phase == "setup"
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert isinstance(caught.value.__cause__.__cause__, RemoteTraceback)
    assert "in setup" in str(caught.value.__cause__.__cause__)


def test_setup_failure_stops_the_run_as_a_setup_error() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline(ProcessStage(remote_work.FailingSetup(workers=2))).run(range(10))
    assert caught.value.phase == "setup"
    assert re.fullmatch(
        r"stage 'FailingSetup' failed in setup\(\): worker \d+: RemoteBoom: no connection",
        str(caught.value),
    )
    assert type(caught.value.__cause__) is RemoteBoom


def test_teardown_failure_stops_the_run_as_a_teardown_error() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline(ProcessStage(remote_work.FailingTeardown(workers=2))).run(range(10))
    assert caught.value.phase == "teardown"
    assert type(caught.value.__cause__) is RemoteBoom


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_stage_that_does_not_pickle_names_its_attribute(start_method: str) -> None:
    stage = ProcessStage(remote_work.HoldsALock(), start_method=start_method)
    with pytest.raises(StageError) as caught:
        Pipeline(stage).run(range(3))
    assert caught.value.phase == "setup"
    cause = caught.value.__cause__
    assert isinstance(cause, NotPicklable)
    assert str(cause) == (
        "stage 'HoldsALock' cannot be sent to its worker processes: HoldsALock.guard (lock) "
        "cannot be pickled: TypeError: cannot pickle '_thread.lock' object; a lock or event "
        "belongs to one process: create it in setup(), in the worker"
    )


def test_an_output_that_does_not_pickle_is_named() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline(ProcessStage(remote_work.ReturnsALock()), batch_size=1).run(range(5))
    cause = caught.value.__cause__
    assert isinstance(cause, NotPicklable)
    assert str(cause).startswith(
        "stage 'ReturnsALock': output 0 of the batch (lock) cannot be pickled: TypeError: "
    )


def test_an_output_that_cannot_be_rebuilt_here_is_named() -> None:
    stage = ProcessStage(FunctionStage(process_work.breaks_on_load))
    with pytest.raises(StageError) as caught:
        Pipeline(stage, batch_size=1).run(range(5))
    assert str(caught.value) == (
        "stage 'breaks_on_load' failed in process_batch(): NotPicklable: stage "
        "'breaks_on_load': the outputs of the batch came back but could not be unpickled "
        "here: ValueError: this output cannot be rebuilt"
    )
    assert isinstance(caught.value.__cause__, NotPicklable)
    assert isinstance(caught.value.__cause__.__cause__, ValueError)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_an_exception_that_cannot_be_rebuilt_comes_back_as_a_remote_error(
    start_method: str,
) -> None:
    stage = ProcessStage(FunctionStage(remote_work.raise_unrebuildable), start_method=start_method)
    with pytest.raises(StageError) as caught:
        Pipeline(stage).run(range(3))
    assert type(caught.value.__cause__) is RemoteError
    assert str(caught.value.__cause__).startswith("NeedsTwoArguments: odd (could not be sent back")


def test_an_item_that_does_not_pickle_is_named() -> None:
    items: list[Any] = [threading.Event()]
    with pytest.raises(StageError) as caught:
        Pipeline(ProcessStage(remote_work.SlowSquare(0.0, workers=1))).run(items)
    cause = caught.value.__cause__
    assert isinstance(cause, NotPicklable)
    assert str(cause).startswith(
        "stage 'SlowSquare': item 0 of the batch (Event) cannot be pickled: TypeError: "
    )


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_killed_worker_process_is_a_stage_error_not_a_hang(start_method: str) -> None:
    function = FunctionStage(remote_work.kill_own_process_on_three)
    stage = ProcessStage(function, start_method=start_method)
    with pytest.raises(StageError) as caught:
        Pipeline(stage, batch_size=1).run(range(10))
    assert isinstance(caught.value.__cause__, BrokenProcessPool)
    assert caught.value.stage == "kill_own_process_on_three"


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_process_killed_mid_batch_leaves_no_sibling_behind(
    start_method: str, tmp_path: Path
) -> None:
    stage = ProcessStage(
        process_work.KillsItsProcessOnThree(str(tmp_path)), start_method=start_method
    )
    with pytest.raises(StageError) as caught:
        Pipeline(stage, batch_size=1).run(range(10))
    assert isinstance(caught.value.__cause__, BrokenProcessPool)
    pids = [int(path.name.split("-")[1]) for path in tmp_path.glob("process-*")]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_bad_arguments_are_named() -> None:
    stage = remote_work.SlowSquare(0.0)
    with pytest.raises(TypeError, match=r"^stage must be a PipelineStage, got int$"):
        ProcessStage(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^processes must be >= 1, got 0$"):
        ProcessStage(stage, processes=0)
    with pytest.raises(ValueError, match=r"^max_inflight must be >= 1, got 0$"):
        ProcessStage(stage, max_inflight=0)
    with pytest.raises(ValueError, match=r"^start_method must be one of .*, got 'vfork'$"):
        ProcessStage(stage, start_method="vfork")
    with pytest.raises(ValueError, match=r"^stop_timeout must be > 0 seconds and finite, got nan$"):
        ProcessStage(stage, stop_timeout=float("nan"))


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_stage_with_slots_runs_in_processes_with_its_slots_set(start_method: str) -> None:
    stage = ProcessStage(remote_work.SlottedScale(3), start_method=start_method)
    assert Pipeline(stage).run(range(50)) == [item * 3 for item in range(50)]


def test_a_slot_that_does_not_pickle_is_named() -> None:
    stage = ProcessStage(remote_work.SlottedScale(3, guard=threading.Lock()))
    with pytest.raises(StageError) as caught:
        Pipeline(stage).run(range(5))
    assert isinstance(caught.value.__cause__, NotPicklable)
    assert str(caught.value.__cause__).startswith(
        "stage 'SlottedScale' cannot be sent to its worker processes: SlottedScale.guard "
        "(lock) cannot be pickled: TypeError: "
    )
