"""Process and Dask stages against what a user would write instead, interleaved, same run.

- process: 4,000 items of GIL-bound Python, `sum(j * j for j in range(i, i + 2000))`,
  on 2 processes, pool start-up included, under forkserver (`ProcessStage`'s default)
  and fork, both sides with the same start method: a plain loop;
  `ProcessPoolExecutor.map(chunksize=len / (4 * 2))`; mpire's `WorkerPool.map` with the
  same chunk size (when installed); `ProcessStage(FunctionStage(work, workers=2))` with
  the defaults, and with each setting that exists to help (`latency_target`,
  `max_inflight`, `processes=`), each of which must not be slower than the defaults.
- dask: a loopback `LocalCluster` of 2 worker processes (1 thread each), started once:
  200,000 cheap items, and 400 items of ~12 ms CPU each. Against hand-batched
  `client.map` over 4 batches per worker thread, returning lists (what one writes
  first) and returning the batch's outputs pickled to bytes (Dask serialises a list
  of results element by element, so bytes come back faster); `DaskStage` with the
  defaults, and with `max_inflight` and `latency_target` set.

Every contender of a section runs once per rep, in turn (interleaved), so the ratios
compare runs under the same load; every output is checked against the plain loop.
Each row prints min/median/max seconds over the reps and the ratio of its median to
the baseline's median.

Run:  python benchmarks/bench_process_peers.py                 (3 reps, ~2 minutes)
      python benchmarks/bench_process_peers.py --quick         (smaller, 1 rep)
      python benchmarks/bench_process_peers.py --only process --repeat 5 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import multiprocessing
import os
import pickle
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pipeline import Pipeline
from pipeline.executors import ProcessStage
from pipeline.stages import FunctionStage

SECTIONS = ("process", "dask")

# Work sent to other processes lives at the top level of this module, so it pickles.


def squares(item: int) -> int:
    """GIL-bound Python: the sum of 2,000 squares from `item` on."""
    return sum(j * j for j in range(item, item + 2000))


def cheap(item: int) -> int:
    return item * 2 + 1


def spin(rounds: int, item: int) -> int:
    """Integer arithmetic for `rounds` steps: ~12 ms with the calibrated rounds."""
    total = item
    for step in range(rounds):
        total = (total * 31 + step) % 1_000_003
    return total


def map_list(function: Callable[[int], int], items: list[int]) -> list[int]:
    return [function(item) for item in items]


def map_pickled(function: Callable[[int], int], items: list[int]) -> bytes:
    return pickle.dumps([function(item) for item in items], pickle.HIGHEST_PROTOCOL)


Contender = tuple[str, Callable[[], list[Any]]]


def compare(
    section: str, baseline: str, contenders: list[Contender], expected: list[Any], repeat: int
) -> dict[str, Any]:
    """Run every contender once per rep, in turn; check each output; print and return figures."""
    seconds: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for _ in range(repeat):
        for name, action in contenders:
            started = time.perf_counter()
            outputs = action()
            seconds[name].append(time.perf_counter() - started)
            if outputs != expected:
                raise SystemExit(f"{section}: {name} gave wrong outputs")
    base = statistics.median(seconds[baseline])
    print(f"{section}  (ratio: the median of {baseline!r} / the row's median; higher is faster)")
    print(f"  {'':<58} {'min':>7} {'median':>7} {'max':>7}  ratio")
    rows: dict[str, Any] = {}
    for name, _ in contenders:
        times = seconds[name]
        median = statistics.median(times)
        rows[name] = {
            "seconds": times,
            "min": min(times),
            "median": median,
            "max": max(times),
            "ratio": base / median,
        }
        print(
            f"  {name:<58} {min(times):7.3f} {median:7.3f} {max(times):7.3f}  {base / median:5.2f}x"
        )
    return {"baseline": baseline, "rows": rows}


def process_pool_map(items: list[int], method: str, chunk: int) -> list[int]:
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        return list(pool.map(squares, items, chunksize=chunk))


def mpire_map(items: list[int], method: str, chunk: int) -> list[int]:
    from mpire.pool import WorkerPool

    with WorkerPool(n_jobs=2, start_method=method) as pool:
        outputs: list[int] = pool.map(squares, items, chunk_size=chunk)
    return outputs


def process_stage(items: list[int], method: str, **settings: Any) -> list[int]:
    inner = FunctionStage(squares, workers=2, latency_target=settings.pop("latency_target", None))
    if "processes" in settings:
        inner = FunctionStage(squares)
    stage = ProcessStage(inner, start_method=method, **settings)
    return Pipeline(stage).run(items)


def process_section(count: int, repeat: int) -> dict[str, Any]:
    items = list(range(count))
    expected = [squares(item) for item in items]
    chunk = max(1, count // (4 * 2))
    have_mpire = importlib.util.find_spec("mpire") is not None
    if not have_mpire:
        print("process: mpire skipped, not installed (pip install 'threaded-pipeline[bench]')")
    results: dict[str, Any] = {}
    for method in ("forkserver", "fork"):
        if method not in multiprocessing.get_all_start_methods():
            print(f"process: {method} skipped, this platform has no such start method")
            continue
        process_pool_map(items[:4], method, 1)  # a forkserver starts once per parent
        pool = f"ProcessPoolExecutor.map(chunksize={chunk})"
        contenders: list[Contender] = [
            ("plain loop", lambda: [squares(item) for item in items]),
            (pool, functools.partial(process_pool_map, items, method, chunk)),
        ]
        if have_mpire:
            contenders.append(
                (
                    f"mpire WorkerPool.map(chunk_size={chunk})",
                    functools.partial(mpire_map, items, method, chunk),
                )
            )
        contenders += [
            ("ProcessStage, defaults", functools.partial(process_stage, items, method)),
            (
                "ProcessStage, latency_target=0.05 on the inner stage",
                functools.partial(process_stage, items, method, latency_target=0.05),
            ),
            (
                "ProcessStage, max_inflight=4",
                functools.partial(process_stage, items, method, max_inflight=4),
            ),
            (
                "ProcessStage, processes=2 (inner stage of 1 worker)",
                functools.partial(process_stage, items, method, processes=2),
            ),
        ]
        title = f"process, {method}: {count:,} items, 2 processes, pool start-up included"
        results[method] = compare(title, pool, contenders, expected, repeat)
        loop = statistics.median(results[method]["rows"]["plain loop"]["seconds"])
        for name, row in results[method]["rows"].items():
            print(f"    {name:<56} {loop / row['median']:5.2f}x the plain loop")
    return results


def hand_batched(client: Any, function: Callable[..., Any], items: list[int], size: int) -> Any:
    batches = [items[start : start + size] for start in range(0, len(items), size)]
    return client.gather(client.map(function, batches, pure=False))


def hand_lists(client: Any, work: Callable[[int], int], items: list[int], size: int) -> list[int]:
    outputs: list[int] = []
    for part in hand_batched(client, functools.partial(map_list, work), items, size):
        outputs.extend(part)
    return outputs


def hand_bytes(client: Any, work: Callable[[int], int], items: list[int], size: int) -> list[int]:
    outputs: list[int] = []
    for part in hand_batched(client, functools.partial(map_pickled, work), items, size):
        outputs.extend(pickle.loads(part))
    return outputs


def dask_stage(client: Any, work: Callable[[int], int], items: list[int], **settings: Any) -> Any:
    from pipeline.executors.dask_cluster import DaskStage

    return Pipeline(DaskStage(work, client, **settings)).run(items)


def dask_section(cheap_count: int, heavy_count: int, repeat: int) -> dict[str, Any]:
    if importlib.util.find_spec("distributed") is None:
        print("dask: skipped, the dask extra is not installed")
        return {}
    from pipeline.executors.dask_cluster import local_cluster

    rounds = 20_000
    started = time.thread_time()
    spin(rounds, 1)
    rounds = max(1000, int(rounds * 0.012 / max(1e-6, time.thread_time() - started)))
    heavy = functools.partial(spin, rounds)
    results: dict[str, Any] = {}
    with local_cluster(2) as client:
        client.submit(cheap, 0).result()
        for label, work, count in (
            ("cheap items", cheap, cheap_count),
            ("items of ~12 ms CPU", heavy, heavy_count),
        ):
            items = list(range(count))
            expected = [work(item) for item in items]
            size = max(1, count // (4 * 2))
            best = f"client.map, {size}-item batches, outputs as bytes"
            contenders: list[Contender] = [
                (
                    f"client.map, {size}-item batches, outputs as lists",
                    functools.partial(hand_lists, client, work, items, size),
                ),
                (best, functools.partial(hand_bytes, client, work, items, size)),
                ("DaskStage, defaults", functools.partial(dask_stage, client, work, items)),
                (
                    "DaskStage, max_inflight=4",
                    functools.partial(dask_stage, client, work, items, max_inflight=4),
                ),
                (
                    "DaskStage, latency_target=1.0",
                    functools.partial(dask_stage, client, work, items, latency_target=1.0),
                ),
            ]
            title = f"dask, loopback cluster of 2 processes: {count:,} {label}"
            results[label] = compare(title, best, contenders, expected, repeat)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run one section")
    parser.add_argument("--repeat", type=int, default=3, help="reps per contender (default 3)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 1 rep by default")
    parser.add_argument("--json", type=Path, help="write every time and ratio to this file")
    arguments = parser.parse_args(argv)
    repeat = max(1, arguments.repeat if not arguments.quick or arguments.repeat != 3 else 1)
    chosen = arguments.only or SECTIONS
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    results: dict[str, Any] = {"load": os.getloadavg(), "repeat": repeat}
    if "process" in chosen:
        results["process"] = process_section(1000 if arguments.quick else 4000, repeat)
    if "dask" in chosen:
        sizes = (20_000, 40) if arguments.quick else (200_000, 400)
        results["dask"] = dask_section(*sizes, repeat)
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    target = os.environ.get("PIPELINE_BENCH_JSON")  # for benchmarks/suite.py
    if target:
        figures = {
            f"{section} {part}: {name}: x {data['baseline']}": {
                "value": row["ratio"],
                "better": "higher",
            }
            for section in SECTIONS
            for part, data in results.get(section, {}).items()
            for name, row in data["rows"].items()
        }
        Path(target).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
