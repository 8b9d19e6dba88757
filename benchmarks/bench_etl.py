"""Benchmark the ETL demo: the pipeline against the same steps in one thread, and the
adaptive write batches against fixed ones.

1. ETL wall time. `pipeline.demos.etl.run` on the same generated CSV, as a pipeline
   (the I/O-bound conversion on 8 workers, loading in the caller's thread while the
   stages work) and sequentially (every step in turn in one thread, on chunks of rows).
   Runs alternate, best of `--repeat` each. Goal: the pipeline takes at least 40% less
   wall time.
2. Write batches. The same rows written to SQLite (WAL, synchronous=NORMAL) in
   transactions of a fixed 1, 100 or 10,000 rows, and sized by an `AdaptiveBatcher`
   toward `--write-target` ms. For each: rows a second, transactions, mean batch, the
   99th percentile latency, and the share of transactions over the objective. Batches
   of one row write only the first `--single-rows` rows (their rate is per row all the
   same). The goal: the adaptive batches meet the objective (few over it) at a rate
   close to the fastest fixed size that also meets it.

With `--json PATH` (or the environment variable PIPELINE_BENCH_JSON, which
`benchmarks/suite.py` sets) the figures are also written there as JSON.

Run: .venv/bin/python benchmarks/bench_etl.py [--rows N] [--repeat K] [--write-rows N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.batching import AdaptiveBatcher
from pipeline.demos.etl import generate_csv, run
from pipeline.stages.windows import percentile

GOAL_REDUCTION = 0.40


def etl_wall_times(rows: int, repeat: int, workdir: Path) -> dict[str, float]:
    """Return the best wall time of the ETL run as a pipeline and sequentially."""
    csv_path = workdir / "orders.csv"
    generate_csv(csv_path, rows, seed=7)
    best = {"pipeline": float("inf"), "sequential": float("inf")}
    for _ in range(repeat):
        for mode in best:
            result = run(
                input_csv=csv_path,
                workdir=workdir,
                sequential=mode == "sequential",
                out=io.StringIO(),
            )
            if not result.reconciled:
                raise AssertionError(f"{mode}: the totals do not reconcile")
            best[mode] = min(best[mode], result.seconds)
    return best


def write_rows(count: int) -> list[tuple[Any, ...]]:
    rng = random.Random(5)
    return [
        (
            index,
            "2026-03-01",
            "2026-03-03",
            f"user{index}@example.com",
            "FR",
            "Europe",
            rng.choice(("books", "games", "toys")),
            rng.randint(1, 20),
            round(rng.uniform(1, 200), 2),
            "EUR",
            round(rng.uniform(1, 4000), 2),
        )
        for index in range(count)
    ]


def measure_writes(
    path: Path, rows: list[tuple[Any, ...]], plan: Callable[[int], int], record: Callable[..., None]
) -> list[tuple[int, float]]:
    """Write `rows` in transactions of `plan(pending)` rows; return (size, seconds) of each."""
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(
            "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, order_day TEXT, ship_day TEXT,"
            " email TEXT, country TEXT, region TEXT, category TEXT, quantity INTEGER,"
            " unit_price REAL, currency TEXT, amount_eur REAL)"
        )
        done = 0
        writes: list[tuple[int, float]] = []
        while done < len(rows):
            size = plan(len(rows) - done)
            started = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows[done : done + size],
            )
            connection.execute("COMMIT")
            elapsed = time.perf_counter() - started
            record(size, elapsed)
            writes.append((size, elapsed))
            done += size
        return writes
    finally:
        connection.close()


def write_strategies(
    rows: int, single_rows: int, target: float, workdir: Path
) -> dict[str, dict[str, float]]:
    """Return figures per strategy: rows/s, transactions, mean batch, p99, share over."""
    data = write_rows(rows)
    figures: dict[str, dict[str, float]] = {}
    for name, size in (("fixed 1", 1), ("fixed 100", 100), ("fixed 10,000", 10_000)):
        subset = data[:single_rows] if size == 1 else data
        writes = measure_writes(workdir / "writes.db", subset, _fixed(size), _ignore)
        figures[name] = _describe(writes, target)
    batcher = AdaptiveBatcher(target, initial=64)
    writes = measure_writes(workdir / "writes.db", data, batcher.plan_batch, batcher.record_batch)
    figures["adaptive"] = _describe(writes, target)
    figures["adaptive"]["final size"] = batcher.size
    return figures


def _fixed(size: int) -> Callable[[int], int]:
    def plan(pending: int) -> int:
        return min(size, pending)

    return plan


def _ignore(size: int, latency: float) -> None:
    """A fixed size learns nothing from a write."""


def _describe(writes: list[tuple[int, float]], target: float) -> dict[str, float]:
    rows = sum(size for size, _ in writes)
    seconds = sum(latency for _, latency in writes)
    latencies = sorted(latency for _, latency in writes)
    return {
        "rows/s": rows / seconds,
        "transactions": len(writes),
        "mean batch": rows / len(writes),
        "p99 ms": percentile(latencies, 99) * 1e3,
        "over objective": sum(latency > target for latency in latencies) / len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="CSV rows (100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode, best kept (3)")
    parser.add_argument("--write-rows", type=int, default=100_000, help="rows written (100,000)")
    parser.add_argument(
        "--single-rows", type=int, default=2_000, help="rows written one per transaction (2,000)"
    )
    parser.add_argument(
        "--write-target", type=float, default=5.0, metavar="MS", help="write objective (5 ms)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    target = args.write_target / 1e3
    json_path = args.json or (
        Path(os.environ["PIPELINE_BENCH_JSON"]) if "PIPELINE_BENCH_JSON" in os.environ else None
    )

    with tempfile.TemporaryDirectory(prefix="bench-etl-") as directory:
        workdir = Path(directory)
        best = etl_wall_times(args.rows, args.repeat, workdir)
        writes = write_strategies(args.write_rows, args.single_rows, target, workdir)

    reduction = 1 - best["pipeline"] / best["sequential"]
    print(f"ETL demo, {args.rows:,} rows, best of {args.repeat} alternating runs each")
    print(f"  sequential (one thread)        {best['sequential']:8.3f} s")
    print(f"  pipeline (8 I/O workers)       {best['pipeline']:8.3f} s")
    verdict = "met" if reduction >= GOAL_REDUCTION else "NOT met"
    print(
        f"  the pipeline takes {reduction:.0%} less wall time "
        f"({best['sequential'] / best['pipeline']:.2f}x); goal >= {GOAL_REDUCTION:.0%}: {verdict}"
    )
    print()
    print(
        f"SQLite writes of {args.write_rows:,} rows (fixed 1: {args.single_rows:,} rows) "
        f"at a {args.write_target:g} ms objective per transaction"
    )
    header = f"  {'batches':<14}{'rows/s':>12}{'vs adaptive':>13}{'writes':>8}"
    print(header + f"{'mean batch':>12}{'p99':>10}{'over objective':>16}")
    adaptive_rate = writes["adaptive"]["rows/s"]
    for name, row in writes.items():
        print(
            f"  {name:<14}{row['rows/s']:>12,.0f}{row['rows/s'] / adaptive_rate:>12.2f}x"
            f"{row['transactions']:>8,.0f}{row['mean batch']:>12,.0f}"
            f"{row['p99 ms']:>8.1f}ms{row['over objective']:>16.0%}"
        )
    if json_path is not None:
        figures = {
            "etl sequential seconds": {"value": best["sequential"], "better": "lower"},
            "etl pipeline seconds": {"value": best["pipeline"], "better": "lower"},
            "etl wall time reduction": {"value": reduction, "better": "higher"},
        }
        for name, row in writes.items():
            figures[f"writes {name} rows/s"] = {"value": row["rows/s"], "better": "higher"}
            figures[f"writes {name} over objective"] = {
                "value": row["over objective"],
                "better": "lower",
            }
        json_path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
