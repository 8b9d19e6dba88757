"""Graphs against their baselines, measured in the same run.

1. Overhead of a graph: a diamond (split a -> b doubles, c drops the
   multiples of 7 -> a sequence join pairs them) against the same work as a chain
   (a >> one stage computing the pair >> a filter), and a plain split-and-merge (no
   join) against the same chain. The join's branches run item by item (each item
   keeps its number), so the joined diamond pays a Python call per item per branch.
2. A task graph of independent I/O-bound tasks (each waits `--task-ms` on an Event, as
   a network call would) against running them one after another, for several pool
   sizes. The goal is at least 40% less wall time than one after another.

With `--json PATH` (or the environment variable PIPELINE_BENCH_JSON, which
`benchmarks/suite.py` sets) the figures are also written there as JSON.

Run: .venv/bin/python benchmarks/bench_graph.py [--items N] [--tasks N] [--task-ms MS]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import Pipeline, StageChain
from pipeline.graph import Graph, SequenceJoin, TaskGraph
from pipeline.stages import FunctionStage, PredicateStage


def best_of(repeats: int, run: Callable[[], int]) -> tuple[float, int]:
    """Return the best wall time of `repeats` runs, and what the last run returned."""
    times = []
    result = 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


Figures = dict[str, dict[str, Any]]


def figure(value: float, better: str | None) -> dict[str, Any]:
    return {"value": value, "better": better}


def overhead(items: int, repeats: int) -> Figures:
    source = range(items)
    expected = sum(1 for item in source if item % 7 != 0)

    def joined_diamond() -> int:
        graph = (
            Graph()
            .add(FunctionStage(lambda item: item, name="a"))
            .add(FunctionStage(lambda item: item * 2, name="b"), after="a")
            .add(PredicateStage(lambda item: item % 7 != 0, name="c"), after="a")
            .add(SequenceJoin(name="d"), after=["b", "c"])
        )
        return len(graph.build().run(source))

    def merged_diamond() -> int:
        graph = (
            Graph()
            .add(FunctionStage(lambda item: item, name="a"))
            .add(FunctionStage(lambda item: item * 2, name="b"), after="a")
            .add(PredicateStage(lambda item: item % 7 != 0, name="c"), after="a")
            .add(FunctionStage(lambda item: item, name="d"), after=["b", "c"])
        )
        return len(graph.build().run(source))

    def chain() -> int:
        stages: StageChain[int, tuple[int, int]] = (
            FunctionStage(lambda item: item, name="a")
            >> FunctionStage(lambda item: (item * 2, item), name="bc")
            >> PredicateStage(lambda pair: pair[1] % 7 != 0, name="d")
        )
        return len(Pipeline(stages).run(source))

    chain_time, count = best_of(repeats, chain)
    assert count == expected
    merged_time, count = best_of(repeats, merged_diamond)
    assert count == items + expected
    joined_time, count = best_of(repeats, joined_diamond)
    assert count == expected
    print(f"1. overhead, {items:,} items (best of {repeats})")
    print(
        f"   chain a >> bc >> d             {chain_time:7.3f} s  "
        f"{items / chain_time:>12,.0f} items/s"
    )
    print(
        f"   diamond, merge (no join)       {merged_time:7.3f} s  "
        f"{items / merged_time:>12,.0f} items/s  {merged_time / chain_time:5.2f}x the chain"
    )
    print(
        f"   diamond, sequence join         {joined_time:7.3f} s  "
        f"{items / joined_time:>12,.0f} items/s  {joined_time / chain_time:5.2f}x the chain"
    )
    return {
        "chain: items/s": figure(items / chain_time, "higher"),
        "diamond, merge: x the chain": figure(merged_time / chain_time, "lower"),
        "diamond, sequence join: x the chain": figure(joined_time / chain_time, "lower"),
    }


def task_graph(tasks: int, task_seconds: float, pools: list[int]) -> Figures:
    pause = threading.Event()

    def call_service(*_: Any) -> float:
        pause.wait(task_seconds)  # an I/O-bound task: the thread waits, the GIL is free
        return task_seconds

    started = time.perf_counter()
    for _ in range(tasks):
        call_service()
    sequential = time.perf_counter() - started
    print(f"2. {tasks} independent I/O-bound tasks of {task_seconds * 1000:.0f} ms")
    print(f"   sequential                     {sequential:7.3f} s")
    figures: Figures = {}
    for workers in pools:
        graph = TaskGraph()
        for index in range(tasks):
            graph.add(f"task{index}", call_service)
        started = time.perf_counter()
        result = graph.run(workers=workers)
        elapsed = time.perf_counter() - started
        assert len(result.succeeded) == tasks
        saved = 1 - elapsed / sequential
        figures[f"task graph, {workers} workers: % less wall time"] = figure(100 * saved, "higher")
        print(
            f"   task graph, {workers:2d} workers          {elapsed:7.3f} s  "
            f"{saved:6.1%} less wall time  {sequential / elapsed:5.1f}x faster"
        )
    graph = TaskGraph().add("fetch", call_service)
    for index in range(tasks - 2):
        graph.add(f"work{index}", call_service, after="fetch")
    graph.add(
        "report",
        lambda *parts: math.fsum(parts),
        after=[f"work{index}" for index in range(tasks - 2)],
    )
    started = time.perf_counter()
    graph.run(workers=max(pools))
    elapsed = time.perf_counter() - started
    print(
        f"   fan-out/fan-in ({tasks} tasks), {max(pools)} workers {elapsed:7.3f} s  "
        f"{1 - elapsed / sequential:6.1%} less wall time"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--task-ms", type=float, default=20.0)
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = overhead(args.items, args.repeats)
    figures.update(task_graph(args.tasks, args.task_ms / 1000, args.pools))
    environment = os.environ.get("PIPELINE_BENCH_JSON")
    json_path = args.json or (Path(environment) if environment else None)
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
