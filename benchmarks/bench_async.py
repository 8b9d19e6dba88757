"""asyncio stages against asyncio peers: many awaits of skewed length, a hundred at once.

2,000 items, each `await asyncio.sleep(d)` with d exponentially distributed (mean 10 ms,
capped at 200 ms; the same delays for every contender, from one seed), at most 100 at
once. The ideal is the larger of sum(delays) / 100 and the longest delay. Contenders:
- `asyncio.gather` over every item, with an `asyncio.Semaphore(100)`, in `asyncio.run`;
- `pypeln.task.map(..., workers=100)` (the `bench` extra; skipped with a line if absent);
- `AsyncFunctionStage(..., concurrency=100)` in a `Pipeline`: with the defaults, and with
  the settings a user would try (`workers=100`, `latency_target=`, unordered, two
  workers), and with `latency_target=None` (the engine's own batch policy).

The rows run interleaved, one rep of each in turn (each rep starting one row later),
`--repeat` times; every output is checked for completeness, and for order where the
contender promises it. Each row's ratio is its median time against the best peer's
median of the same run.

Run: .venv/bin/python benchmarks/bench_async.py [--quick] [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import random
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipeline import Pipeline
from pipeline.aio import AsyncFunctionStage

CONCURRENCY = 100
PEERS = ("asyncio.gather + Semaphore", "pypeln.task")


class Delays:
    """The seeded delays; `wait(index)` awaits the index-th one and returns the index."""

    def __init__(self, count: int, seed: int) -> None:
        rng = random.Random(seed)
        self.seconds = [min(rng.expovariate(1 / 0.010), 0.200) for _ in range(count)]

    async def wait(self, index: int) -> int:
        await asyncio.sleep(self.seconds[index])
        return index

    def ideal(self) -> float:
        return max(sum(self.seconds) / CONCURRENCY, max(self.seconds))


def gather_with_semaphore(delays: Delays) -> list[int]:
    async def run() -> list[int]:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(index: int) -> int:
            async with limit:
                return await delays.wait(index)

        return list(await asyncio.gather(*(one(i) for i in range(len(delays.seconds)))))

    return asyncio.run(run())


def import_pypeln() -> types.ModuleType | None:
    """Return `pypeln`, or None if it is not installed.

    pypeln imports stopit, whose `__init__` imports `pkg_resources` only to read its own
    version and carries on without it; setuptools 81 and later no longer ship
    `pkg_resources`, so a stand-in that answers that one question lets it import.
    """
    if importlib.util.find_spec("pypeln") is None:
        return None
    if importlib.util.find_spec("pkg_resources") is None:
        stand_in = types.ModuleType("pkg_resources")
        stand_in.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
            version=importlib.metadata.version(name)
        )
        sys.modules["pkg_resources"] = stand_in
    return importlib.import_module("pypeln")


def pypeln_task(pypeln: Any, delays: Delays) -> list[int]:
    stage = pypeln.task.map(delays.wait, range(len(delays.seconds)), workers=CONCURRENCY)
    return list(stage)


def stage_run(delays: Delays, ordered: bool = True, **settings: Any) -> Callable[[], list[int]]:
    def run() -> list[int]:
        stage = AsyncFunctionStage(delays.wait, concurrency=CONCURRENCY, **settings)
        return Pipeline(stage, ordered=ordered).run(range(len(delays.seconds)))

    return run


def contenders(delays: Delays) -> dict[str, tuple[Callable[[], list[int]], bool]]:
    """Return each contender's run and whether it promises input order."""
    rows: dict[str, tuple[Callable[[], list[int]], bool]] = {
        PEERS[0]: (lambda: gather_with_semaphore(delays), True),
    }
    pypeln = import_pypeln()
    if pypeln is None:
        print("pypeln is not installed (pip install 'threaded-pipeline[bench]'): row skipped")
    else:
        rows[PEERS[1]] = (lambda: pypeln_task(pypeln, delays), False)
    rows["AsyncStage, defaults"] = (stage_run(delays), True)
    rows["AsyncStage, unordered"] = (stage_run(delays, ordered=False), False)
    rows["AsyncStage, workers=100"] = (stage_run(delays, workers=CONCURRENCY), True)
    rows["AsyncStage, latency_target=0.05"] = (stage_run(delays, latency_target=0.05), True)
    rows["AsyncStage, latency_target=0.01"] = (stage_run(delays, latency_target=0.01), True)
    rows["AsyncStage, workers=2, latency_target=0.05"] = (
        stage_run(delays, workers=2, latency_target=0.05),
        True,
    )
    # The engine's own batch policy, the asyncio stage's default before it set a target.
    rows["AsyncStage, latency_target=None"] = (stage_run(delays, latency_target=None), True)
    return rows


def check(name: str, outputs: Iterable[int], count: int, ordered: bool) -> None:
    got = list(outputs)
    expected = list(range(count))
    if (got if ordered else sorted(got)) != expected:
        what = "in order" if ordered else "each once"
        raise SystemExit(f"{name}: the outputs are not the {count} items {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved reps (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="500 items, 3 reps")
    parser.add_argument("--only", nargs="+", metavar="ROW", help="rows whose name has this")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.repeat = 500, 3
    delays = Delays(args.items, args.seed)
    rows = contenders(delays)
    if args.only:
        rows = {
            name: row
            for name, row in rows.items()
            if name in PEERS or any(part in name for part in args.only)
        }
    times: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for rep in range(args.repeat):
        # Each rep starts one row later, so no row always follows the same one, and each
        # run starts with the garbage of the one before collected.
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            run, ordered = rows[name]
            gc.collect()
            started = time.perf_counter()
            outputs = run()
            times[name].append(time.perf_counter() - started)
            check(name, outputs, args.items, ordered)
    ideal = delays.ideal()
    medians = {name: statistics.median(seconds) for name, seconds in times.items()}
    best_peer = min((name for name in medians if name in PEERS), key=medians.__getitem__)
    print(
        f"{args.items} awaits of exp(10 ms) capped at 200 ms, {CONCURRENCY} at once; "
        f"{args.repeat} interleaved reps; load {os.getloadavg()[0]:.2f}"
    )
    print(f"ideal (sum of delays / {CONCURRENCY}, or the longest): {ideal:.3f} s")
    print(f"{'row':<42} {'min':>7} {'median':>7} {'max':>7}  {'of ideal':>8}  vs best peer")
    figures: dict[str, dict[str, Any]] = {}
    for name, seconds in times.items():
        median = medians[name]
        ratio = medians[best_peer] / median
        print(
            f"{name:<42} {min(seconds):7.3f} {median:7.3f} {max(seconds):7.3f}  "
            f"{ideal / median:8.1%}  {ratio:5.2f}x"
        )
        figures[f"{name}: % of ideal"] = {"value": 100 * ideal / median, "better": "higher"}
        figures[f"{name}: vs best peer"] = {"value": ratio, "better": "higher"}
    print(f"best peer: {best_peer}")
    report = os.environ.get("PIPELINE_BENCH_JSON")
    for path in (args.json, Path(report) if report else None):
        if path is not None:
            path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
