"""Ordered output under skewed item times: the reorder window against a thread pool.

One stage of 16 workers over 2,000 items, each sleeping an exponentially distributed
time (mean 10 ms, capped at 200 ms; the same times for every row, from one seed). The
ideal is the sum of the sleeps divided by 16. `ThreadPoolExecutor(16).map` submits
every item at once, so a slow item never holds the others back; an ordered `Pipeline`
holds at most its reorder window of finished batches, so it stays within a memory
bound and should come close to the pool anyway.

Run: .venv/bin/python benchmarks/bench_skewed.py [--items N] [--workers N]
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pipeline import Pipeline
from pipeline.stages import FunctionStage

_sleeper = threading.Event()


def sleep_for(seconds: float) -> float:
    _sleeper.wait(seconds)
    return seconds


def timed(run: Callable[[], list[float]], expected: list[float]) -> float:
    started = time.perf_counter()
    outputs = run()
    elapsed = time.perf_counter() - started
    if sorted(outputs) != sorted(expected):
        raise SystemExit("a run lost or changed items")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    times = [min(rng.expovariate(1 / 0.010), 0.200) for _ in range(args.items)]
    ideal = sum(times) / args.workers
    stage = FunctionStage(sleep_for, workers=args.workers)

    def pool() -> list[float]:
        with ThreadPoolExecutor(args.workers) as executor:
            return list(executor.map(sleep_for, times))

    rows = {
        "ThreadPoolExecutor.map": timed(pool, times),
        "Pipeline ordered": timed(lambda: Pipeline(stage).run(times), times),
        "Pipeline unordered": timed(lambda: Pipeline(stage, ordered=False).run(times), times),
    }
    print(f"{args.items} items, exponential sleeps (mean 10 ms, cap 200 ms), ", end="")
    print(f"{args.workers} workers")
    print(f"ideal (sum of sleeps / workers): {ideal:.3f} s")
    pool_time = rows["ThreadPoolExecutor.map"]
    for name, elapsed in rows.items():
        print(
            f"{name:<24} {elapsed:7.3f} s  {ideal / elapsed:6.1%} of ideal  "
            f"{pool_time / elapsed:5.2f}x the pool's speed"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
