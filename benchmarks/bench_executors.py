"""Beyond threads, measured: processes, executors, asyncio and Dask against threads.

Every row is timed in the same run as its baseline (best of --repeat runs, 3 by
default), and printed as a ratio to it:
- windows: 200 tasks of 5 or 80 ms (1 in 4 long) through `ExecutorStage` on a 2-process
  pool, with a window of 1x, 2x and 4x the processes, ordered and unordered, against
  the ideal (total work / 2). This chose the default window (4 per worker).
- gil: a GIL-bound stage (pure-Python arithmetic, ~5 ms per item, one item per batch)
  sequentially, on 2 threads and on 2 worker processes (`ProcessStage`, fork, which
  starts and stops its processes within the timing; and `ExecutorStage` on a pool
  already started).
- native: the C stage (GIL released) on 2 threads against a 2-process pool.
- async: 1,000 items each awaiting 10 ms, on an asyncio stage against 16 threads.
- dask: the cost of one batch on a 2-process loopback `LocalCluster` against a process
  pool, submitted one at a time; and a pipeline of cheap items through `DaskStage`.
  Skipped when the `dask` extra is not installed.

Run:  python benchmarks/bench_executors.py              (all, a few minutes)
      python benchmarks/bench_executors.py --only gil --scale 0.3 --repeat 1
"""

from __future__ import annotations

import argparse
import array
import asyncio
import functools
import importlib.util
import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pipeline import Pipeline, PipelineStage
from pipeline.aio import AsyncFunctionStage
from pipeline.executors import ExecutorStage, ProcessStage
from pipeline.executors.executor import run_batch
from pipeline.stages import FunctionStage

SECTIONS = ("windows", "gil", "native", "async", "dask")


REPEAT = 3  # rows are the best of this many runs: the machine is shared and noisy


def timed(action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


FIGURES: dict[str, dict[str, Any]] = {}  # for benchmarks/suite.py (PIPELINE_BENCH_JSON)


def figure(name: str, value: float, better: str | None) -> None:
    FIGURES[name] = {"value": value, "better": better}


def row(name: str, seconds: float, baseline: float, what: str = "baseline") -> None:
    print(f"  {name:<44} {seconds:8.3f} s   {baseline / seconds:5.2f}x {what}")
    figure(f"{name}: x {what}", baseline / seconds, "higher")


# Work sent to worker processes lives at the top level of this module, so it pickles.


def nap(milliseconds: int) -> int:
    time.sleep(milliseconds / 1000)
    return milliseconds


def arithmetic(seed: int, rounds: int) -> int:
    total = seed
    for step in range(rounds):
        total = (total * 31 + step) % 1_000_003
    return total


class Arithmetic(PipelineStage[int, int]):
    """GIL-bound Python: `rounds` steps of integer arithmetic per item."""

    def __init__(self, rounds: int, *, workers: int = 1) -> None:
        super().__init__(workers=workers)
        self.rounds = rounds

    def process(self, item: int) -> int:
        return arithmetic(item, self.rounds)


def transform_chunk(chunk: array.array[float]) -> array.array[float]:
    """The C transform of one chunk; imports the compiled module here, as cffi does not pickle."""
    from pipeline.native.compiled import transform

    results, _ = transform(chunk)
    copy = array.array("d")  # a memoryview does not pickle; an array does
    copy.frombytes(results.cast("B"))
    return copy


def identity(item: int) -> int:
    return item


def windows(scale: float) -> None:
    count = max(20, int(200 * scale))
    rng = random.Random(7)
    tasks = [80 if rng.random() < 0.25 else 5 for _ in range(count)]
    ideal = sum(tasks) / 1000 / 2
    print(f"windows: {count} tasks of 5 or 80 ms on 2 processes; ideal {ideal:.3f} s")
    with ProcessPoolExecutor(2) as pool:
        pool.submit(nap, 0).result()
        for window in (2, 4, 8, 16):
            for ordered in (True, False):
                stage = ExecutorStage(nap, pool, max_inflight=window)
                pipeline = Pipeline(stage, ordered=ordered)
                seconds = timed(functools.partial(pipeline.run, tasks))
                label = f"window {window} ({window // 2}x), {'ordered' if ordered else 'unordered'}"
                print(f"  {label:<44} {seconds:8.3f} s   {seconds / ideal - 1:+6.1%} over ideal")
                figure(f"{label}: over ideal", seconds / ideal - 1, "lower")


def gil(scale: float) -> None:
    rounds = 25_000
    per_item = timed(lambda: arithmetic(1, rounds))
    rounds = max(1000, int(rounds * 0.005 / per_item))  # about 5 ms per item
    count = max(20, int(400 * scale))
    items = list(range(count))
    print(f"gil: {count} items of ~5 ms pure-Python arithmetic ({rounds} steps each)")
    sequential = timed(lambda: [arithmetic(item, rounds) for item in items])
    row("sequential loop", sequential, sequential, "sequential")
    threads = timed(lambda: Pipeline(Arithmetic(rounds, workers=2)).run(items))
    row("Pipeline, 2 threads", threads, sequential, "sequential")
    stage = ProcessStage(Arithmetic(rounds, workers=2), start_method="fork")
    processes = timed(lambda: Pipeline(stage).run(items))
    row("Pipeline, ProcessStage of 2 processes", processes, sequential, "sequential")
    with ProcessPoolExecutor(2) as pool:
        pool.submit(arithmetic, 1, 1).result()
        function = functools.partial(arithmetic, rounds=rounds)
        warm = timed(lambda: Pipeline(ExecutorStage(function, pool, name="work")).run(items))
    row("Pipeline, ExecutorStage on a started 2-process pool", warm, sequential, "sequential")


def native(scale: float) -> None:
    if importlib.util.find_spec("pipeline.native._native") is None:
        print("native: skipped, the C extension is not built")
        return
    chunks = max(8, int(32 * scale))
    values = [float(value % 1000 - 300) for value in range(65_536)]
    data = [array.array("d", values) for _ in range(chunks)]
    print(f"native: {chunks} chunks of 65,536 floats through the C stage")
    inline = timed(lambda: [transform_chunk(chunk) for chunk in data])
    row("sequential loop", inline, inline, "sequential")
    threads = timed(lambda: Pipeline(FunctionStage(transform_chunk, workers=2)).run(data))
    row("Pipeline, 2 threads", threads, inline, "sequential")
    with ProcessPoolExecutor(2) as pool:
        pool.submit(transform_chunk, data[0]).result()
        stage = ExecutorStage(transform_chunk, pool)
        processes = timed(lambda: Pipeline(stage).run(data))
    row("Pipeline, ExecutorStage on 2 processes", processes, inline, "sequential")
    print(f"  threads are {processes / threads:.1f}x faster than the process pool")


async def wait_10_ms(item: int) -> int:
    await asyncio.sleep(0.01)
    return item


def wait_10_ms_in_a_thread(item: int) -> int:
    threading.Event().wait(0.01)
    return item


def asynchronous(scale: float) -> None:
    count = max(100, int(1000 * scale))
    items = list(range(count))
    print(f"async: {count} items, each waiting 10 ms; ideal for 16 threads {count / 1600:.3f} s")
    threads = timed(lambda: Pipeline(FunctionStage(wait_10_ms_in_a_thread, workers=16)).run(items))
    row("Pipeline, thread stage of 16 workers", threads, threads)
    for workers in (16, 64, count):
        stage = AsyncFunctionStage(wait_10_ms, concurrency=count, workers=workers)
        seconds = timed(functools.partial(Pipeline(stage).run, items))
        row(f"asyncio stage, {workers} workers", seconds, threads)
    # Without a target the engine hands a slow stage one item per batch; with
    # latency_target each worker grows its batches toward it (AIMD), and a batch's
    # coroutines run at once.
    stage = AsyncFunctionStage(wait_10_ms, concurrency=count, workers=2, latency_target=0.05)
    seconds = timed(functools.partial(Pipeline(stage).run, items))
    row("asyncio, 2 workers, latency_target=0.05", seconds, threads)


def per_batch(executor: Executor, batches: int) -> float:
    """Seconds per batch of 100 items, submitted one at a time."""
    batch = list(range(100))
    started = time.perf_counter()
    for _ in range(batches):
        executor.submit(run_batch, identity, batch).result()
    return (time.perf_counter() - started) / batches


def dask(scale: float) -> None:
    if importlib.util.find_spec("distributed") is None:
        print("dask: skipped, the dask extra is not installed")
        return
    from pipeline.executors.dask_cluster import DaskStage, local_cluster

    batches = max(20, int(100 * scale))
    print(f"dask: {batches} batches of 100 ints, one at a time")
    with ProcessPoolExecutor(2) as pool:
        pool.submit(identity, 0).result()
        pool_seconds = per_batch(pool, batches)
    print(f"  {'process pool, per batch':<44} {pool_seconds * 1000:8.2f} ms")
    figure("process pool: ms per batch", pool_seconds * 1000, "lower")
    with local_cluster(2) as client:
        executor = client.get_executor(pure=False)  # type: ignore[no-untyped-call]
        per_batch(executor, 5)
        dask_seconds = per_batch(executor, batches)
        figure("Dask LocalCluster: ms per batch", dask_seconds * 1000, "lower")
        print(
            f"  {'Dask LocalCluster, per batch':<44} {dask_seconds * 1000:8.2f} ms   "
            f"{dask_seconds / pool_seconds:5.1f}x the process pool"
        )
        items = list(range(batches * 10))
        seconds = timed(lambda: Pipeline(DaskStage(identity, client)).run(items))
        print(
            f"  {'Pipeline, DaskStage, cheap items':<44} {seconds:8.3f} s   "
            f"{len(items) / seconds:8.0f} items/s (batches sized toward 0.5 s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run one section")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sizes")
    parser.add_argument("--repeat", type=int, default=3, help="best of how many runs per row")
    arguments = parser.parse_args()
    global REPEAT
    REPEAT = max(1, arguments.repeat)
    chosen = arguments.only or SECTIONS
    runs: dict[str, Callable[[float], Any]] = {
        "windows": windows,
        "gil": gil,
        "native": native,
        "async": asynchronous,
        "dask": dask,
    }
    for section in SECTIONS:
        if section in chosen:
            runs[section](arguments.scale)
    target = os.environ.get("PIPELINE_BENCH_JSON")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
