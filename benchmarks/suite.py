"""Run every benchmark of benchmarks/, store the figures as one JSON file, compare with
the previous one and say what got slower.

Each benchmark runs in its own process with a quick preset of its arguments (`--full`
runs each with its own defaults), and prints its same-run ratios as usual; the suite
shows that output and collects figures from it:
- a benchmark that writes its figures as JSON to the file named by the environment
  variable PIPELINE_BENCH_JSON (`{"name": {"value": 1.0, "better": "higher"}}`,
  `better` being "higher", "lower" or null) gives them directly (bench_etl.py does);
- for the others the suite reads the figures from their printed tables (`EXTRACTORS`);
- every benchmark also gets its wall time, and its exit code.
A benchmark the suite has no preset for runs without arguments (and is named in the
summary), so a new file in benchmarks/ is never skipped.

The results go to `benchmarks/results/<time>.json` (git-ignored) with the machine, the
Python, the versions of the package and its dependencies, and every figure. The newest
earlier file there (or `--compare PATH`) is the baseline: a figure worse than it by
more than `--threshold` (15% by default: the machine is shared and noisy) is listed
as slower. Compare runs of the same preset only.

Run: .venv/bin/python benchmarks/suite.py [--full] [--only NAME ...] [--compare PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_THRESHOLD = 0.15
TIMEOUT = 900  # seconds per benchmark

# Quick arguments per benchmark (`--full` runs each with its defaults instead).
PRESETS: dict[str, list[str]] = {
    "bench_chain.py": ["--items", "200000", "--repeat", "3"],
    "bench_native.py": ["--size", "1000000", "--repeat", "3"],
    "bench_backpressure.py": [],  # fixed at 20,000 items; takes no arguments
    "bench_etl.py": ["--rows", "30000", "--repeat", "2", "--write-rows", "50000"],
    "bench_skewed.py": ["--items", "800"],
    "bench_graph.py": ["--items", "50000", "--repeats", "2", "--pools", "1", "2", "4", "8"],
    "ctrl_c_backoff.py": ["--measure", "5"],
    "stress_faults.py": ["--scenarios", "100"],
    "stress_extras.py": ["--quick"],
    "stress_order.py": ["--runs", "300"],
    "bench_queues.py": ["--quick"],
    "bench_tasks.py": ["--quick"],
    "crash_queues.py": ["--kills", "5", "--items", "5000"],
    # Builds the free-threaded interpreter on its first run (tools/), then reuses it.
    "bench_freethreaded.py": ["--items", "5000", "--repeat", "3"],
    "bench_executors.py": ["--scale", "0.3", "--repeat", "1"],
    "bench_process_peers.py": ["--quick"],
    "bench_windows.py": ["--readings", "200000", "--repeat", "3"],
    "bench_async.py": ["--quick"],
}
SKIP = {"suite.py"}

Figure = dict[str, Any]  # {"value": float, "better": "higher" | "lower" | None}
Figures = dict[str, Figure]


def _figure(value: float, better: str | None) -> Figure:
    return {"value": value, "better": better}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def chain_figures(output: str) -> Figures:
    """bench_chain.py: items/s and the ratio to the sequential chain, per row."""
    figures: Figures = {}
    row = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<rate>[\d,]+)\s+(?P<ratio>[\d.]+)x\s+[\d.]+x$")
    for line in output.splitlines():
        match = row.match(line)
        if match:
            name = match["name"].rstrip("*").strip()
            figures[f"{name}: items/s"] = _figure(_number(match["rate"]), "higher")
            figures[f"{name}: vs sequential"] = _figure(float(match["ratio"]), "higher")
    return figures


def native_figures(output: str) -> Figures:
    """bench_native.py: GB/s per row (input read + output written), and its summary ratios."""
    figures: Figures = {}
    row = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<ms>[\d.]+)\s+(?P<rate>[\d.]+)\s+[\d.]+\s")
    ratio = re.compile(r"^(?P<name>[^:]+?):\s+(?P<value>[\d.]+)(?P<unit>x|%)$")
    for line in output.splitlines():
        if match := row.match(line):
            figures[f"{match['name']}: GB/s"] = _figure(float(match["rate"]), "higher")
        elif match := ratio.match(line):
            figures[match["name"]] = _figure(float(match["value"]), "higher")
    return figures


def backpressure_figures(output: str) -> Figures:
    """bench_backpressure.py: the most items in flight as a share of the bound (must be <= 1)."""
    figures: Figures = {}
    row = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+([\d,]+)\s+([\d,]+)$")
    for line in output.splitlines():
        if match := row.match(line):
            queue, batch, workers, most, bound = match.groups()
            name = f"in flight / bound (queue {queue}, batch {batch}, workers {workers})"
            figures[name] = _figure(_number(most) / _number(bound), None)
    return figures


def ctrl_c_figures(output: str) -> Figures:
    """ctrl_c_backoff.py --measure: how long a stop took, and runs leaving threads."""
    match = re.search(
        r"stopped after median ([\d.]+) ms, max ([\d.]+) ms; runs leaving threads: (\d+); "
        r"stops over 1 s: (\d+)",
        output,
    )
    if match is None:
        return {}
    return {
        "stop after Ctrl-C, median ms": _figure(float(match[1]), "lower"),
        "stop after Ctrl-C, max ms": _figure(float(match[2]), "lower"),
        "runs leaving threads": _figure(float(match[3]), "lower"),
        "stops over 1 s": _figure(float(match[4]), "lower"),
    }


def skewed_figures(output: str) -> Figures:
    """bench_skewed.py: each way's share of the ideal time, and its speed against the pool."""
    figures: Figures = {}
    row = re.compile(
        r"^(?P<name>\S.*?)\s{2,}[\d.]+ s\s+(?P<ideal>[\d.]+)% of ideal\s+(?P<ratio>[\d.]+)x"
    )
    for line in output.splitlines():
        if match := row.match(line):
            figures[f"{match['name']}: % of ideal"] = _figure(float(match["ideal"]), "higher")
            figures[f"{match['name']}: vs the pool"] = _figure(float(match["ratio"]), "higher")
    return figures


def stress_figures(output: str) -> Figures:
    """stress_faults.py and stress_extras.py: every count of problems (all should stay 0)."""
    figures: Figures = {}
    names = ("hangs", "leaked threads", "leaked processes", "leaked files", "lost", "duplicated")
    for name in (*names, "wrong"):
        match = re.search(rf"\b{name}: (\d+)", output)
        if match:
            figures[name] = _figure(float(match[1]), "lower")
    return figures


def order_figures(output: str) -> Figures:
    """stress_order.py: runs whose outputs differed from a plain loop (should stay 0)."""
    match = re.search(r"\bwrong (\d+);", output)
    return {} if match is None else {"wrong": _figure(float(match[1]), "lower")}


EXTRACTORS: dict[str, Callable[[str], Figures]] = {
    "bench_chain.py": chain_figures,
    "bench_native.py": native_figures,
    "bench_backpressure.py": backpressure_figures,
    "bench_skewed.py": skewed_figures,
    "ctrl_c_backoff.py": ctrl_c_figures,
    "stress_faults.py": stress_figures,
    "stress_extras.py": stress_figures,
    "stress_order.py": order_figures,
}


def run_benchmark(path: Path, arguments: list[str]) -> dict[str, Any]:
    """Run one benchmark, echo its output, and return its figures and what it printed."""
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as directory:
        figures_path = Path(directory) / "figures.json"
        environment = {**os.environ, "PIPELINE_BENCH_JSON": str(figures_path)}
        started = time.perf_counter()
        try:
            completed = subprocess.run(
                [sys.executable, str(path), *arguments],
                cwd=HERE.parent,
                env=environment,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
            code, output, errors = completed.returncode, completed.stdout, completed.stderr
        except subprocess.TimeoutExpired as timeout:
            code, output = -1, _text(timeout.stdout)
            errors = f"{_text(timeout.stderr)}\ntimed out after {TIMEOUT} s"
        seconds = time.perf_counter() - started
        if figures_path.exists():
            figures: Figures = json.loads(figures_path.read_text(encoding="utf-8"))
        else:
            extract = EXTRACTORS.get(path.name)
            figures = extract(output) if extract else {}
    print(output, end="")
    if errors.strip():
        print(errors, end="" if errors.endswith("\n") else "\n", file=sys.stderr)
    figures["wall seconds"] = _figure(seconds, "lower")
    return {
        "arguments": arguments,
        "exit_code": code,
        "seconds": seconds,
        "figures": figures,
        "output": output,
    }


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def environment() -> dict[str, Any]:
    """Return the machine, the Python and the versions a result was measured with."""
    versions: dict[str, str | None] = {"sqlite": sqlite3.sqlite_version}
    for package in ("pipeline", "cffi", "numpy", "matplotlib", "tqdm", "prometheus_client"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    versions["git commit"] = commit.stdout.strip() or None
    return {
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "load average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "build": " ".join(platform.python_build()),
        },
        "versions": versions,
    }


def compare(current: dict[str, Any], baseline: dict[str, Any], threshold: float) -> list[str]:
    """Return one line per figure worse than in `baseline` by more than `threshold`."""
    worse = []
    for name, run in current["benchmarks"].items():
        before = baseline.get("benchmarks", {}).get(name, {}).get("figures", {})
        for figure, now in run["figures"].items():
            old = before.get(figure)
            better = now.get("better")
            if old is None or better is None:
                continue
            change = _worse_by(old["value"], now["value"], better)
            if change > threshold:
                worse.append(
                    f"{name}: {figure}: {old['value']:.4g} -> {now['value']:.4g} "
                    f"({'+' if now['value'] >= old['value'] else ''}"
                    f"{_relative(old['value'], now['value'])}; {better} is better)"
                )
    return worse


def _worse_by(old: float, new: float, better: str) -> float:
    """Return how much worse `new` is than `old`, as a share (inf from a zero baseline)."""
    if better == "higher":
        return (old - new) / old if old > 0 else 0.0
    if old == 0:
        return float("inf") if new > 0 else 0.0
    return (new - old) / old


def _relative(old: float, new: float) -> str:
    return f"{(new - old) / old:.0%}" if old else "from 0"


def newest_result(excluding: Path | None = None) -> Path | None:
    candidates = sorted(path for path in RESULTS.glob("*.json") if path != excluding)
    return candidates[-1] if candidates else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run each with its own defaults")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these files")
    parser.add_argument("--compare", type=Path, help="the baseline JSON (default: the newest)")
    parser.add_argument("--output", type=Path, help="where to store the results JSON")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"how much worse counts as slower ({DEFAULT_THRESHOLD:.0%})",
    )
    args = parser.parse_args(argv)
    paths = sorted(path for path in HERE.glob("*.py") if path.name not in SKIP)
    if args.only:
        unknown = set(args.only) - {path.name for path in paths}
        if unknown:
            parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")
        paths = [path for path in paths if path.name in args.only]
    preset = "full" if args.full else "quick"
    baseline_path = args.compare or newest_result()
    results: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "preset": preset,
        **environment(),
        "benchmarks": {},
    }
    no_preset = []
    for path in paths:
        if path.name not in PRESETS:
            no_preset.append(path.name)
        arguments = [] if args.full else PRESETS.get(path.name, [])
        print(f"\n=== {path.name} {' '.join(arguments)}".rstrip(), flush=True)
        results["benchmarks"][path.name] = run_benchmark(path, arguments)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS / f"{stamp}-{preset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2), encoding="utf-8")

    print("\n=== summary")
    failed = [name for name, run in results["benchmarks"].items() if run["exit_code"] != 0]
    for name, run in results["benchmarks"].items():
        status = "ok" if run["exit_code"] == 0 else f"FAILED (exit {run['exit_code']})"
        print(f"  {name:<24} {run['seconds']:7.1f} s  {len(run['figures']):3} figures  {status}")
    if no_preset:
        print(f"  no quick preset (ran with defaults): {', '.join(no_preset)}")
    print(f"results stored in {output}")
    if baseline_path is None or not baseline_path.exists():
        print("no earlier results to compare with")
    else:
        baseline = json.loads(baseline_path.read_text(encoding="utf-8"))
        if baseline.get("preset") != preset:
            print(f"note: {baseline_path.name} used the {baseline.get('preset')} preset")
        worse = compare(results, baseline, args.threshold)
        print(f"compared with {baseline_path}: ", end="")
        if worse:
            print(f"{len(worse)} figure(s) worse by more than {args.threshold:.0%}:")
            for line in worse:
                print(f"  {line}")
        else:
            print(f"nothing worse by more than {args.threshold:.0%}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
