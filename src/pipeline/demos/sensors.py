"""The data example: sensor readings through the native production pipeline.

Generates readings (or reads them from a CSV file), some NaN, +/-Inf or
negative, runs them through ``DataPipeline`` with the C core on
``threads`` worker threads, writes the kept results to a CSV file, and
prints the statistics next to those of the pure-Python reference on the same
data, with a check that both gave the same results bit for bit.

``pipeline.cli`` declares the options of ``pipeline data`` and calls ``run``.
With info logging on, ``run`` logs each step as it starts; the readings are
transformed in C, a chunk at a time, so nothing is logged per reading.
"""

from __future__ import annotations

import array
import csv
import logging
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from pipeline.native.production import DataPipeline, DataStats, Implementation

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_COUNT",
    "DEFAULT_SEED",
    "generate_readings",
    "read_readings",
    "run",
]

logger = logging.getLogger(__name__)

DEFAULT_COUNT = 1_000_000
DEFAULT_BATCH_SIZE = 65_536
DEFAULT_SEED = 42


def run(
    *,
    input_path: Path | None = None,
    column: str = "value",
    count: int = DEFAULT_COUNT,
    seed: int = DEFAULT_SEED,
    threads: int = 2,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output: Path = Path("results.csv"),
    implementation: Implementation = "native",
    skip_reference: bool = False,
    out: TextIO | None = None,
) -> int:
    """Run the example and report to ``out`` (default: stdout).

    The pipelines are made before any reading is generated or read, so a missing C
    extension or a bad argument fails at once. Blocks until both runs end.

    Args:
        input_path: a CSV file to read the readings from, instead of generating them.
        column: the CSV column holding the readings.
        count, seed: how many readings to generate, and the seed of the generator.
        threads: worker threads of the main run.
        batch_size: readings per chunk handed to a worker.
        output: where to write the kept results, as CSV.
        implementation: the transform of the main run: "native" (C) or "reference".
        skip_reference: do not run the pure-Python reference for comparison.
        out: where to print the report.

    Returns:
        0, or 1 if the main run and the reference gave different results.

    Raises:
        ImportError: "native" was asked for and the C extension is not built.
        OSError: ``input_path`` cannot be read or ``output`` cannot be written.
        ValueError: the CSV file lacks ``column`` or holds a cell that is not a number.
        StageError: a worker failed.
    """
    out = sys.stdout if out is None else out
    data_pipeline = DataPipeline(threads, batch_size, implementation)
    reference = None if skip_reference else DataPipeline(1, batch_size, "reference")
    if input_path is not None:
        logger.info("reading column %r of %s", column, input_path)
        readings = read_readings(input_path, column)
        origin = f"read from {input_path}"
    else:
        logger.info("generating %d readings", count)
        readings = generate_readings(count, seed)
        origin = f"generated (seed {seed})"
    say(out, f"{len(readings):,} sensor readings {origin}")

    logger.info("transforming with %s on %d threads", implementation, threads)
    results, stats = data_pipeline.process(readings)
    logger.info("writing the results to %s", output)
    write_results(output, results)
    say(out, f"{len(results):,} results written to {output}\n")

    label = f"{implementation}, {threads} thread{'s' * (threads != 1)}"
    columns = [(label, stats)]
    agree = True
    if reference is not None:
        logger.info("transforming with the pure-Python reference on 1 thread")
        reference_results, reference_stats = reference.process(readings)
        columns.append(("reference, 1 thread", reference_stats))
        agree = reference_results.tobytes() == results.tobytes()
    print_table(columns, out)
    if reference is not None:
        if stats.duration_secs > 0:  # zero readings can take no measurable time
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
