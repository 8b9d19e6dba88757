"""ProcessStage's batches: what makes a process stage pay for its round trips.

A task sent to a process costs a round trip and pickling both ways, so a task must
carry enough work (the batches are sized by time, toward `PROCESS_LATENCY_TARGET`
unless the inner stage says otherwise), and every process must have a task.
"""

from __future__ import annotations

import pytest
import remote_work

from pipeline import Pipeline
from pipeline.batching import TARGET_BATCH_SECONDS
from pipeline.executors import ProcessStage
from pipeline.executors.process import PROCESS_LATENCY_TARGET
from pipeline.stages import FunctionStage


def test_a_process_task_carries_more_than_one_item_by_default() -> None:
    # Items of 5 ms: the thread stages' policy (batches of ~2 ms) sends them one by one.
    stage = ProcessStage(remote_work.BatchSizes(0.005, workers=2), start_method="fork")
    outputs = Pipeline(stage).run(range(60))
    assert [item for item, _, _ in outputs] == list(range(60))
    sizes = [size for _, size, _ in outputs]
    assert max(sizes) > 1
    assert sum(size > 1 for size in sizes) > len(sizes) // 2


def test_the_default_batches_are_sized_by_time_well_above_a_round_trip() -> None:
    stage = ProcessStage(FunctionStage(remote_work.square, workers=2))
    assert stage.latency_target == PROCESS_LATENCY_TARGET
    assert PROCESS_LATENCY_TARGET >= 10 * TARGET_BATCH_SECONDS


def test_the_worker_pool_keeps_a_task_in_flight_for_every_process() -> None:
    stage = ProcessStage(remote_work.BatchSizes(0.001, workers=2), start_method="fork")
    assert stage.max_inflight >= stage.processes == 2
    outputs = Pipeline(stage).run(range(200))
    assert len({pid for _, _, pid in outputs}) == 2


def test_the_inner_stages_latency_target_is_read_when_the_run_starts() -> None:
    inner = FunctionStage(remote_work.square, workers=2)
    stage = ProcessStage(inner)
    inner.latency_target = 0.25
    assert stage.latency_target == 0.25


def test_a_latency_target_set_on_the_wrapper_is_the_inner_stages_too() -> None:
    inner = FunctionStage(remote_work.square, workers=2)
    stage = ProcessStage(inner)
    stage.latency_target = 0.1
    assert (stage.latency_target, inner.latency_target) == (0.1, 0.1)
    stage.latency_target = None
    assert stage.latency_target == PROCESS_LATENCY_TARGET


def test_a_bad_latency_target_on_the_wrapper_is_named() -> None:
    stage = ProcessStage(FunctionStage(remote_work.square))
    with pytest.raises(
        ValueError, match=r"^latency_target must be a number of seconds > 0, got 0$"
    ):
        stage.latency_target = 0
