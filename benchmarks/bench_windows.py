"""Benchmark count windows with `summarize` against the plain Python loop a user would write.

The workload: `--readings` floats (1,000,000 by default; seeded gauss(20, 2)) in count
windows of `--size` (1,000) -> each window's count, mean, population std, min and max.

1. Tumbling windows. `Pipeline(CountWindows(summarize(percentiles=()), 1000)).run(readings)`
   against the plain loop: for each reading, `n += 1; total += x; squares += x * x`,
   compare with the running min and max; at 1,000, emit `total / n`,
   `sqrt(squares / n - mean ** 2)`, min and max, and start again. No `statistics`,
   no `math.fsum`, no NumPy: the loop that a user writes first, and the fastest one in
   plain Python (its textbook variance is not accurate at large offsets, which the
   stage must be: at this stream's scale both agree to far better than 1e-9).
2. Sliding windows (1,000 every `--step`, 100). The plain loop keeps the last 1,000
   readings in a `collections.deque(maxlen=1000)` and running sums, adding each reading
   and subtracting the one that leaves; every 100 readings it emits the mean and std
   from the sums and min/max from `min(window)`/`max(window)` (C loops over the deque).
   The pipeline: `CountWindows(summarize(percentiles=()), 1000, step=100)`.
3. For reference (no goal): the same pipelines with `summarize()`'s default
   percentiles (50, 90, 99), which need each window's values sorted.

The rows of a run are interleaved rep by rep (`--repeat`, 5 by default), so drift on the
shared machine hits them alike; min/median/max are printed, ratios are of medians (in
brackets: of the best runs, the least disturbed on a busy machine).
Every output is checked: the pipeline's windows against the loop's, count equal, mean,
std, min and max to 1e-9 relative (std to 1e-9 of the mean: the loop's textbook
variance is that good here, no better).

Goals: each pipeline >= 1.0x its plain loop (medians, same run).

With `--json PATH` (or the environment variable PIPELINE_BENCH_JSON, which
`benchmarks/suite.py` sets) the figures are also written there as JSON.

Run: .venv/bin/python benchmarks/bench_windows.py [--readings N] [--repeat K]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import Pipeline
from pipeline.stages import CountWindows
from pipeline.stages.windows import WindowSummary, summarize

Row = tuple[int, float, float, float, float]  # count, mean, std, min, max
GOAL = 1.0


def plain_tumbling(readings: list[float], size: int) -> list[Row]:
    """The loop a user writes: running sums, min and max; emit and reset every `size`."""
    rows: list[Row] = []
    n = 0
    total = squares = 0.0
    low, high = math.inf, -math.inf
    for x in readings:
        n += 1
        total += x
        squares += x * x
        if x < low:
            low = x
        if x > high:
            high = x
        if n == size:
            mean = total / n
            rows.append((n, mean, math.sqrt(max(squares / n - mean * mean, 0.0)), low, high))
            n = 0
            total = squares = 0.0
            low, high = math.inf, -math.inf
    if n:
        mean = total / n
        rows.append((n, mean, math.sqrt(max(squares / n - mean * mean, 0.0)), low, high))
    return rows


def plain_sliding(readings: list[float], size: int, step: int) -> list[Row]:
    """The loop a user writes for sliding windows: a deque, sums in and out, min/max at emit."""
    rows: list[Row] = []
    window: collections.deque[float] = collections.deque(maxlen=size)
    total = squares = 0.0
    for index, x in enumerate(readings):
        if len(window) == size:
            old = window[0]
            total -= old
            squares -= old * old
        window.append(x)
        total += x
        squares += x * x
        if index + 1 >= size and (index + 1 - size) % step == 0:
            mean = total / size
            std = math.sqrt(max(squares / size - mean * mean, 0.0))
            rows.append((size, mean, std, min(window), max(window)))
    return rows


def pipeline_rows(readings: list[float], size: int, step: int, percentiles: bool) -> list[Row]:
    summary = summarize() if percentiles else summarize(percentiles=())
    results: list[WindowSummary] = Pipeline(CountWindows(summary, size, step)).run(readings)
    return [
        (result.count, result.mean, result.std, result.min, result.max)
        for result in results
        if result.complete or step == size  # the plain sliding loop emits full windows only
    ]


def check(name: str, got: list[Row], expected: list[Row]) -> None:
    """Raise unless every window of `got` matches `expected` to 1e-9 (see the module)."""
    if len(got) != len(expected):
        raise AssertionError(f"{name}: {len(got)} windows, expected {len(expected)}")
    for index, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        count, mean, std, low, high = mine
        scale = abs(theirs[1])
        if (
            count != theirs[0]
            or not math.isclose(mean, theirs[1], rel_tol=1e-9)
            or not math.isclose(std, theirs[2], rel_tol=1e-9, abs_tol=1e-9 * scale)
            or (low, high) != (theirs[3], theirs[4])
        ):
            raise AssertionError(f"{name}: window {index} is {mine}, expected {theirs}")


def spot_check_exact(readings: list[float], rows: list[Row], size: int, step: int) -> None:
    """Check a few windows against statistics.fmean / pstdev, the exact reference."""
    for index in (0, len(rows) // 2, len(rows) - 1):
        values = readings[index * step : index * step + size]
        count, mean, std, low, high = rows[index]
        assert count == len(values)
        assert math.isclose(mean, statistics.fmean(values), rel_tol=1e-9)
        assert math.isclose(std, statistics.pstdev(values), rel_tol=1e-9)
        assert (low, high) == (min(values), max(values))


def measure(contenders: dict[str, Callable[[], list[Row]]], repeat: int) -> dict[str, list[float]]:
    """Run each contender `repeat` times, interleaved; return its seconds per run."""
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, list[Row]] = {}
    for _ in range(repeat):
        for name, run in contenders.items():
            started = time.perf_counter()
            outputs[name] = run()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000, help="readings (1,000,000)")
    parser.add_argument("--size", type=int, default=1000, help="readings per window (1,000)")
    parser.add_argument("--step", type=int, default=100, help="sliding step (100)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per row (5)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    json_path = args.json or (
        Path(os.environ["PIPELINE_BENCH_JSON"]) if "PIPELINE_BENCH_JSON" in os.environ else None
    )
    rng = random.Random(20)
    readings = [rng.gauss(20.0, 2.0) for _ in range(args.readings)]
    size, step = args.size, args.step

    expected_tumbling = plain_tumbling(readings, size)
    expected_sliding = plain_sliding(readings, size, step)
    for name, percentiles in (("", False), (" with percentiles", True)):
        tumbling = pipeline_rows(readings, size, size, percentiles)
        check(f"tumbling{name}", tumbling, expected_tumbling)
        spot_check_exact(readings, tumbling, size, size)
        sliding = pipeline_rows(readings, size, step, percentiles)
        check(f"sliding{name}", sliding, expected_sliding)
        spot_check_exact(readings, sliding, size, step)

    contenders: dict[str, Callable[[], Any]] = {
        "tumbling: plain loop": lambda: plain_tumbling(readings, size),
        "tumbling: CountWindows + summarize": lambda: pipeline_rows(readings, size, size, False),
        "tumbling: same, percentiles 50/90/99": lambda: pipeline_rows(readings, size, size, True),
        "sliding: plain loop": lambda: plain_sliding(readings, size, step),
        "sliding: CountWindows + summarize": lambda: pipeline_rows(readings, size, step, False),
        "sliding: same, percentiles 50/90/99": lambda: pipeline_rows(readings, size, step, True),
    }
    seconds = measure(contenders, args.repeat)
    rates = {name: [args.readings / s for s in runs] for name, runs in seconds.items()}
    medians = {name: statistics.median(runs) for name, runs in rates.items()}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(
        f"{args.readings:,} readings, windows of {size:,} (sliding: every {step:,}) -> "
        f"count/mean/std/min/max; {args.repeat} interleaved reps; load {load:.1f}"
    )
    print(f"  {'row':<40}{'min':>12}{'median':>12}{'max':>12}  readings/s; vs plain loop (best)")
    figures: dict[str, dict[str, Any]] = {}
    for name, runs in rates.items():
        kind = name.split(":")[0]
        ratio = medians[name] / medians[f"{kind}: plain loop"]
        best = max(runs) / max(rates[f"{kind}: plain loop"])
        print(
            f"  {name:<40}{min(runs):>12,.0f}{medians[name]:>12,.0f}{max(runs):>12,.0f}"
            f"  {ratio:.2f}x ({best:.2f}x)"
        )
        figures[f"{name} readings/s"] = {"value": medians[name], "better": "higher"}
        if "plain loop" not in name:
            figures[f"{name} vs plain loop"] = {"value": ratio, "better": "higher"}
    for kind in ("tumbling", "sliding"):
        ratio = medians[f"{kind}: CountWindows + summarize"] / medians[f"{kind}: plain loop"]
        verdict = "met" if ratio >= GOAL else "NOT met"
        print(
            f"{kind}: CountWindows + summarize {ratio:.2f}x the plain loop; "
            f"goal >= {GOAL}x: {verdict}"
        )
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
