"""Time a pure-Python stage with 1 and 2 workers, on a GIL build and on a free-threaded build.

With the GIL, a second worker on Python code cannot add throughput: one thread runs
bytecode at a time. On a free-threaded CPython (3.13t, `PYTHON_GIL=0`) both workers run
at once. Each interpreter runs in its own subprocess, one after the other in the same
run, with the package taken from `src/` (`PYTHONPATH`), so no install is needed:

    .venv/bin/python benchmarks/bench_freethreaded.py --items 20000 --repeat 5

By default it compares the interpreter running it with the free-threaded one that
`tools/build_freethreaded_python.sh` built (`--python PATH` any number of times to choose).
Figures are the best of `--repeat` runs; CPU/wall shows how many cores a run kept busy
(on a shared machine, a second worker that found no free core shows 1.0 and no speed-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from pipeline import Pipeline
from pipeline.stages import FunctionStage

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "tools" / "build_freethreaded_python.sh"


def work(item: int) -> int:
    """About 10 us of pure-Python arithmetic, the kind of stage the GIL serialises."""
    total = 0
    for step in range(150):
        total = (total + item * step) % 1_000_003
    return total


def plain_loop(items: int) -> list[int]:
    return [work(item) for item in range(items)]


def through_pipeline(items: int, workers: int) -> list[int]:
    return Pipeline(FunctionStage(work, workers=workers)).run(range(items))


def best_of(repeat: int, call: object) -> tuple[float, float]:
    """Return the best wall time of `repeat` calls and that call's CPU/wall."""
    assert callable(call)
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        call()
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        best = min(best, (wall, cpu / wall))
    return best


def measure(items: int, repeat: int) -> dict[str, object]:
    """Time the plain loop and the pipeline with 1 and 2 workers in this interpreter."""
    expected = plain_loop(items)
    assert through_pipeline(items, 2) == expected  # the same results, in order
    rows = {
        "plain loop": best_of(repeat, lambda: plain_loop(items)),
        "1 worker": best_of(repeat, lambda: through_pipeline(items, 1)),
        "2 workers": best_of(repeat, lambda: through_pipeline(items, 2)),
    }
    gil: object = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {
        "version": sys.version.split()[0],
        "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": gil,
        "rows": rows,
    }


def run_child(python: str, items: int, repeat: int) -> dict[str, object]:
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHON_GIL="0")
    script = [python, __file__, "--child", "--items", str(items), "--repeat", str(repeat)]
    result = subprocess.run(
        script, capture_output=True, text=True, env=environment, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"{python} failed:\n{result.stderr}")
    report: dict[str, object] = json.loads(result.stdout)
    return report


def default_pythons() -> list[str]:
    pythons = [sys.executable]
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600, check=False
    )
    if built.returncode != 0:
        raise SystemExit(f"could not build the free-threaded interpreter:\n{built.stderr}")
    pythons.append(built.stdout.strip().splitlines()[-1])
    return pythons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--python", action="append", help="an interpreter to compare")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.items, args.repeat)))
        return 0

    pythons = args.python or default_pythons()
    print(f"{args.items:,} items of ~10 us pure-Python work, best of {args.repeat} runs")
    print(f"{'interpreter':<34} {'run':<11} {'ms':>8} {'CPU/wall':>9} {'x 1 worker':>11}")
    figures: dict[str, dict[str, object]] = {}
    for python in pythons:
        report = run_child(python, args.items, args.repeat)
        rows = report["rows"]
        assert isinstance(rows, dict)
        one_worker = rows["1 worker"][0]
        kind = "free-threaded" if report["free_threaded"] else "GIL"
        gil = "GIL on" if report["gil_enabled"] else "GIL off"
        label = f"{report['version']} {kind} ({gil})"
        for name, (wall, cpu_share) in rows.items():
            ratio = one_worker / wall
            print(f"{label:<34} {name:<11} {wall * 1000:8.1f} {cpu_share:9.2f} {ratio:10.2f}x")
        speedup = one_worker / rows["2 workers"][0]
        figures[f"{label}: 2 workers vs 1"] = {"value": speedup, "better": "higher"}
    json_path = os.environ.get("PIPELINE_BENCH_JSON")
    if json_path:  # benchmarks/suite.py collects the figures from here
        Path(json_path).write_text(json.dumps(figures), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
