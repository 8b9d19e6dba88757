"""The data example: sensor readings through the native production pipeline.

Generates readings (or reads them from a CSV file), some NaN, +/-Inf or
negative, runs them through ``DataPipeline`` with the C core on
``--threads`` worker threads, writes the kept results to a CSV file, and
prints the statistics next to those of the pure-Python reference on the same
data, with a check that both gave the same results bit for bit.

Wired into the command line by ``pipeline.cli`` (``./run_data_example.py``,
``python -m pipeline``): ``add_arguments`` declares the flags, ``run`` does the work.
"""

from __future__ import annotations

import argparse
import array
import csv
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from pipeline.native.production import DataPipeline, DataStats

__all__ = ["add_arguments", "generate_readings", "read_readings", "run"]

DEFAULT_COUNT = 1_000_000
DEFAULT_BATCH_SIZE = 65_536


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the data example's flags on ``parser``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        type=Path,
        metavar="CSV",
        help="read readings from this CSV file (a header row, then one reading per row) "
        "instead of generating them",
    )
    source.add_argument(
        "--count",
        type=int,
        default=DEFAULT_COUNT,
        help=f"readings to generate (default {DEFAULT_COUNT:,})",
    )
    parser.add_argument(
        "--column", default="value", help="the CSV column holding the readings (default: value)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed for generated readings")
    parser.add_argument("--threads", type=int, default=2, help="worker threads (default 2)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"readings per chunk handed to a worker (default {DEFAULT_BATCH_SIZE:,})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("results.csv"),
        metavar="CSV",
        help="where to write the results (default: results.csv)",
    )
    parser.add_argument(
        "--implementation",
        choices=["native", "reference"],
        default="native",
        help="the transform for the main run (default: native, the C core)",
    )
    parser.add_argument(
        "--skip-reference",
        action="store_true",
        help="do not run the pure-Python reference for comparison",
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the example with parsed ``args``, reporting to ``out`` (default: stdout).

    Returns 0, or 1 if the native and reference runs gave different results.
    """
    out = sys.stdout if out is None else out
    if args.input is not None:
        readings = read_readings(args.input, args.column)
        origin = f"read from {args.input}"
    else:
        readings = generate_readings(args.count, args.seed)
        origin = f"generated (seed {args.seed})"
    say(out, f"{len(readings):,} sensor readings {origin}")

    data_pipeline = DataPipeline(args.threads, args.batch_size, args.implementation)
    results, stats = data_pipeline.process(readings)
    write_results(args.output, results)
    say(out, f"{len(results):,} results written to {args.output}\n")

    label = f"{args.implementation}, {args.threads} thread{'s' * (args.threads != 1)}"
    columns = [(label, stats)]
    agree = True
    if not args.skip_reference:
        reference_results, reference_stats = DataPipeline(1, args.batch_size, "reference").process(
            readings
        )
        columns.append(("reference, 1 thread", reference_stats))
        agree = reference_results.tobytes() == results.tobytes()
    print_table(columns, out)
    if not args.skip_reference:
        ratio = columns[1][1].duration_secs / stats.duration_secs
        say(out, f"\n{label} ran {ratio:.1f}x the speed of the pure-Python reference")
        say(out, f"results identical bit for bit: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


def generate_readings(count: int, seed: int) -> array.array[float]:
    """Return ``count`` readings: about 1% NaN, 1% +/-Inf, the rest around 20, 25% below 0."""
    generator = random.Random(seed)
    readings = array.array("d")
    for _ in range(count):
        kind = generator.random()
        if kind < 0.01:
            readings.append(float("nan"))
        elif kind < 0.02:
            readings.append(generator.choice((float("inf"), float("-inf"))))
        else:
            readings.append(generator.gauss(20.0, 30.0))
    return readings


def read_readings(path: Path, column: str) -> array.array[float]:
    """Return the readings in ``column`` of the CSV file at ``path``.

    Cells are parsed with ``float``, so "nan", "inf" and "-inf" are readings too.

    Raises:
        ValueError: the column is missing, or a cell is not a number (naming its line).
    """
    readings = array.array("d")
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{path} has no column {column!r} (columns: {reader.fieldnames})")
        for row in reader:
            try:
                readings.append(float(row[column]))
            except ValueError as exc:
                raise ValueError(
                    f"{path}, line {reader.line_num}: {row[column]!r} is not a number"
                ) from exc
    return readings


def write_results(path: Path, results: Sequence[float]) -> None:
    """Write ``results`` to ``path`` as a one-column CSV file with a header."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["result"])
        writer.writerows((repr(value),) for value in results)


def print_table(columns: list[tuple[str, DataStats]], out: TextIO) -> None:
    """Write a table to ``out`` with one column of statistics per run."""
    rows: list[tuple[str, Callable[[DataStats], str]]] = [
        ("processed (kept)", lambda stats: f"{stats.items_processed:,}"),
        ("filtered (negative)", lambda stats: f"{stats.items_filtered:,}"),
        ("invalid (NaN/Inf)", lambda stats: f"{stats.items_invalid:,}"),
        ("  of which after transform", lambda stats: f"{stats.items_invalid_after_transform:,}"),
        ("duration", lambda stats: f"{stats.duration_secs * 1e3:,.1f} ms"),
        ("throughput", lambda stats: f"{stats.throughput / 1e6:,.1f} M items/s"),
    ]
    width = max(len(name) for name, _ in columns) + 2
    say(out, f"{'':<28}" + "".join(f"{name:>{width}}" for name, _ in columns))
    for title, cell in rows:
        say(out, f"{title:<28}" + "".join(f"{cell(stats):>{width}}" for _, stats in columns))


def say(out: TextIO, line: str) -> None:
    """Write one line of the report (library code writes to a stream it is given)."""
    out.write(line + "\n")
