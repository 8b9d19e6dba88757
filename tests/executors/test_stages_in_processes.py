"""Every stage the package ships runs inside ProcessStage as in threads, or is refused.

Each stage class exported by `pipeline`, `pipeline.stages`, `pipeline.graph.forkmerge`
and `pipeline.resilience` is either run both ways on the same items and compared, or
named among the refused ones with the reason ProcessStage gives when it is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import process_work
import pytest

import pipeline
from pipeline import Pipeline, PipelineStage
from pipeline.aio import AsyncFunctionStage
from pipeline.demos.classic import AddStage, FilterStage, MultiplyStage
from pipeline.executors import ExecutorStage, ProcessStage
from pipeline.graph import Graph
from pipeline.graph.compose import SubgraphStage
from pipeline.graph.forkmerge import fork_merge, mix_pool
from pipeline.graph.join import KeyJoin, OrderedMerge, SequenceJoin
from pipeline.resilience import ResilientStage
from pipeline.stages import (
    CountWindows,
    FlatMapFunctionStage,
    FunctionStage,
    PredicateStage,
    QualityStage,
    Required,
    TimeWindows,
)

START_METHODS = ["fork", "spawn"]

# Each stage that runs in processes, made anew for each run (a stage holds a run's state).
RUNS: dict[str, Callable[[], PipelineStage[Any, Any]]] = {
    "FunctionStage": lambda: FunctionStage(process_work.double, workers=2),
    "PredicateStage": lambda: PredicateStage(process_work.is_even, workers=2),
    "FlatMapFunctionStage": lambda: FlatMapFunctionStage(process_work.twice, workers=2),
    "AddStage": lambda: AddStage(3),
    "MultiplyStage": lambda: MultiplyStage(3),
    "FilterStage": lambda: FilterStage(workers=2),
    "ForkMergeStage": lambda: fork_merge(
        [process_work.double, process_work.triple], process_work.add_all, workers=2
    ),
    "CountWindows": lambda: CountWindows(process_work.window_sum, 4),
    "TimeWindows": lambda: TimeWindows(
        process_work.window_sum, 5.0, event_time=process_work.event_time
    ),
}

# Each stage that ProcessStage refuses, with the start of the reason it gives.
REFUSED: dict[str, str] = {
    "ProcessStage": "a ProcessStage already runs its batches outside this process",
    "ExecutorStage": "a ExecutorStage already runs its batches outside this process",
    "QualityStage": "a QualityStage gathers its report and rejects in the process that",
    "ResilientStage": "a ResilientStage keeps its statistics, circuit breaker and dead",
    "AsyncStage": "an asyncio stage runs its own event loop",
    "AsyncFunctionStage": "an asyncio stage runs its own event loop",
    "KeyJoin": "a join is wired into its graph in this process",
    "SequenceJoin": "a join is wired into its graph in this process",
    "OrderedMerge": "a join is wired into its graph in this process",
    "SubgraphStage": "a subgraph is wired into its graph in this process",
}


def shipped_stage_classes() -> set[str]:
    names = set()
    for module_name in (
        "pipeline",
        "pipeline.aio",
        "pipeline.demos",
        "pipeline.executors",
        "pipeline.graph",
        "pipeline.stages",
        "pipeline.graph.forkmerge",
        "pipeline.resilience",
    ):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if (
                isinstance(value, type)
                and issubclass(value, PipelineStage)
                and value.__module__.startswith("pipeline")
                and value not in (PipelineStage, pipeline.FilteringStage, pipeline.FlatMapStage)
                # The joins' base class, and the stage that needs a Dask cluster
                # (tests/executors/test_dask_stage.py runs it).
                and name not in ("JoinStage", "DaskStage")
            ):
                names.add(name)
    return names


def test_every_shipped_stage_is_run_both_ways_or_refused() -> None:
    assert shipped_stage_classes() == set(RUNS) | set(REFUSED) | {"MixPoolStage"}


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("kind", sorted(RUNS))
def test_a_shipped_stage_gives_the_same_outputs_in_processes(kind: str, start_method: str) -> None:
    make = RUNS[kind]
    in_threads = Pipeline(make()).run(range(23))
    in_processes = Pipeline(ProcessStage(make(), start_method=start_method)).run(range(23))
    assert in_processes == in_threads
    assert in_threads  # the comparison compared something


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_mix_pool_gives_each_process_its_own_function(start_method: str) -> None:
    functions = [process_work.tagged_double, process_work.tagged_triple]
    in_threads = Pipeline(mix_pool(functions), batch_size=1).run(range(40))
    stage = ProcessStage(mix_pool(functions), start_method=start_method)
    in_processes = Pipeline(stage, batch_size=1).run(range(40))
    assert stage.processes == 2
    for outputs in (in_threads, in_processes):
        factors = [2 if tag == "double" else 3 for tag, _, _ in outputs]
        assert [value for _, value, _ in outputs] == [
            item * factor for item, factor in zip(range(40), factors, strict=True)
        ]
    tags_by_process: dict[int, set[str]] = {}
    for tag, _, pid in in_processes:
        tags_by_process.setdefault(pid, set()).add(tag)
    # Each process keeps one function, and the two processes took different ones.
    assert sorted(tags_by_process.values(), key=sorted) == [{"double"}, {"triple"}]


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_resilient_stage_around_a_process_stage_gives_the_same_outputs(
    start_method: str,
) -> None:
    in_threads = ResilientStage(
        FunctionStage(process_work.fails_on_odd_once, workers=2), on_error="skip"
    )
    inner = FunctionStage(process_work.fails_on_odd_once, workers=2)
    around = ResilientStage(ProcessStage(inner, start_method=start_method), on_error="skip")
    assert Pipeline(around).run(range(23)) == Pipeline(in_threads).run(range(23))
    statistics = around.statistics()
    assert (statistics.items_in, statistics.items_skipped) == (23, 11)


def refused_stages() -> dict[str, PipelineStage[Any, Any]]:
    graph = Graph()
    graph.add(FunctionStage(process_work.double))
    return {
        "ProcessStage": ProcessStage(FunctionStage(process_work.double)),
        "ExecutorStage": ExecutorStage(process_work.double, ThreadPoolExecutor(1)),
        "QualityStage": QualityStage([Required("id")]),
        "ResilientStage": ResilientStage(FunctionStage(process_work.double)),
        "AsyncStage": AsyncFunctionStage(process_work.async_double),
        "AsyncFunctionStage": AsyncFunctionStage(process_work.async_double),
        "KeyJoin": KeyJoin(process_work.key_of),
        "SequenceJoin": SequenceJoin(),
        "OrderedMerge": OrderedMerge(),
        "SubgraphStage": SubgraphStage(graph),
    }


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_a_stage_that_cannot_run_in_processes_is_refused_saying_why(kind: str) -> None:
    stage = refused_stages()[kind]
    with pytest.raises(TypeError) as caught:
        ProcessStage(stage)
    assert str(caught.value).startswith(
        f"ProcessStage cannot run stage {stage.name!r}: {REFUSED[kind]}"
    )
