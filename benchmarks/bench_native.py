"""Benchmark the C transform against pure Python, NumPy and a plain memory copy.

Every figure is measured in the same run on the same data: sensor-like
readings with about 1% NaN, 1% +Inf and 30% negative values. Each row is the
best of --repeat runs. Throughput in GB/s counts the bytes a row must move:
input bytes read plus output bytes written (8 per input item + 8 per kept
item; for numpy.copyto, 8 + 8 per item). ``numpy.copyto`` of the same array is
the memory-bandwidth reference: no transform that reads every input and
writes its results can beat it by much.

Fresh memory is expensive on its own: the first write to each 4 KiB page of a
new allocation takes a page fault. So the C core is timed three ways: into an
output reused from call to call (no faults: the speed of the loop), through
``native.transform`` (allocates an ``array('d')``, which writes every byte with
the GIL held, then transforms), and into a fresh anonymous ``mmap`` (the pages
are faulted in by the loop itself, only for the results: the least any call
that returns new results can cost). ``DataPipeline.process`` returns new
results, so the last is its fair comparison. Each row keeps its result alive
until its clock has stopped, so freeing it is not timed.

NumPy is a benchmark-only dependency; the package itself never imports it.

Run:  python benchmarks/bench_native.py            (10,000,000 items)
      python benchmarks/bench_native.py --size 100000 --repeat 1   (smoke test)
"""

from __future__ import annotations

import argparse
import array
import functools
import mmap
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy
import numpy.typing

from pipeline.native.compiled import transform, transform_into
from pipeline.native.production import DataPipeline
from pipeline.native.reference import transform_reference

ITEM_BYTES = 8
PYTHON = "pure-Python loop (reference)"
NUMPY = "NumPy: mask, sqrt, multiply"
COPY = "numpy.copyto (bandwidth reference)"


@dataclass(frozen=True)
class Row:
    """One measured implementation."""

    name: str
    seconds: float  # for the whole input (scaled, if measured on part of it)
    items: int
    bytes_moved: int
    note: str = ""
    cpu_seconds: float | None = None  # process CPU time, where it tells something

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds

    @property
    def gigabytes_per_second(self) -> float:
        return self.bytes_moved / self.seconds / 1e9


def make_data(size: int, seed: int) -> numpy.typing.NDArray[numpy.float64]:
    """Return ``size`` readings: uniform in [0, 1000), 30% negated, 1% NaN, 1% +Inf."""
    generator = numpy.random.default_rng(seed)
    data = generator.uniform(0.0, 1000.0, size)
    kind = generator.random(size)
    data[kind < 0.32] *= -1.0
    data[kind < 0.02] = numpy.inf
    data[kind < 0.01] = numpy.nan
    return data


def best_time(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Return the best wall time of ``repeat`` calls and the CPU time of that call."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        cpu_start = time.process_time()
        start = time.perf_counter()
        result = function()
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        del result  # freed after the clocks stopped
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
    return best_wall, best_cpu


def numpy_straightforward(
    data: numpy.typing.NDArray[numpy.float64],
) -> numpy.typing.NDArray[numpy.float64]:
    """The transform as a NumPy user would first write it: mask, sqrt, multiply."""
    keep = numpy.isfinite(data) & (data >= 0.0)
    result = numpy.sqrt(data[keep]) * 2.0
    return result[numpy.isfinite(result)]


def measure_baselines(
    data: numpy.typing.NDArray[numpy.float64], kept: int, python_size: int, repeat: int
) -> list[Row]:
    """Measure the pure-Python loop, NumPy, the C core and numpy.copyto."""
    size = len(data)
    moved = ITEM_BYTES * (size + kept)
    view = data.data  # the C core reads the NumPy array's memory directly
    rows = []

    python_part = array.array("d", data[:python_size].tobytes())
    python_seconds, _ = best_time(lambda: transform_reference(python_part), 1)
    scale = size / python_size
    note = f"timed on {python_size:,} items, scaled x{scale:g}" if scale != 1 else ""
    rows.append(Row(PYTHON, python_seconds * scale, size, moved, note))

    with numpy.errstate(invalid="ignore"):
        seconds, _ = best_time(lambda: numpy_straightforward(data), repeat)
    rows.append(Row(NUMPY, seconds, size, moved))

    output = array.array("d", [0.0]) * size
    seconds, _ = best_time(lambda: transform_into(view, output), repeat)
    rows.append(Row("C core, 1 thread, output reused", seconds, size, moved))

    def two_threads_on_halves() -> None:
        half = size // 2
        output_view = memoryview(output)
        threads = [
            threading.Thread(
                target=transform_into, args=(view[start : start + half], output_view[start:])
            )
            for start in (0, half)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    seconds, cpu_seconds = best_time(two_threads_on_halves, repeat)
    rows.append(
        Row("C core, 2 threads, one half each", seconds, size, moved, "output reused", cpu_seconds)
    )

    seconds, _ = best_time(lambda: transform(view), repeat)
    rows.append(
        Row("C core, 1 thread, fresh array", seconds, size, moved, "native.transform(): array * n")
    )

    def into_fresh_mapping() -> mmap.mmap:
        mapping = mmap.mmap(-1, ITEM_BYTES * size)
        with memoryview(mapping) as mapping_view:
            transform_into(view, mapping_view)
        return mapping

    seconds, _ = best_time(into_fresh_mapping, repeat)
    rows.append(
        Row("C core, 1 thread, fresh mmap", seconds, size, moved, "pages faulted in by the loop")
    )

    copy_target = numpy.empty_like(data)
    seconds, _ = best_time(lambda: numpy.copyto(copy_target, data), repeat)
    rows.append(Row(COPY, seconds, size, 2 * ITEM_BYTES * size))
    return rows


def measure_data_pipeline(
    data: numpy.typing.NDArray[numpy.float64], kept: int, repeat: int, batch_size: int
) -> list[Row]:
    """Measure DataPipeline(thread_count=1 and 2) end to end, input to results array."""
    rows = []
    view = data.data
    for thread_count in (1, 2):
        data_pipeline = DataPipeline(thread_count=thread_count, batch_size=batch_size)
        seconds, cpu_seconds = best_time(functools.partial(data_pipeline.process, view), repeat)
        rows.append(
            Row(
                f"DataPipeline, {thread_count} thread{'s' if thread_count > 1 else ''}",
                seconds,
                len(data),
                ITEM_BYTES * (len(data) + kept),
                f"batch_size={batch_size:,}",
                cpu_seconds,
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    """Print every row with its throughput and its ratio to the baselines."""
    by_name = {row.name: row for row in rows}
    python = by_name[PYTHON]
    numpy_row = by_name[NUMPY]
    copy = by_name[COPY]
    print(
        f"{'implementation':<38}{'ms':>9}{'Mitems/s':>10}{'GB/s':>7}"
        f"{'x Python':>10}{'x NumPy':>9}{'% copyto':>10}{'CPU/wall':>10}  note"
    )
    for row in rows:
        cpu = f"{row.cpu_seconds / row.seconds:.2f}" if row.cpu_seconds is not None else ""
        print(
            f"{row.name:<38}{row.seconds * 1e3:>9.1f}{row.items_per_second / 1e6:>10.1f}"
            f"{row.gigabytes_per_second:>7.2f}"
            f"{python.seconds / row.seconds:>10.1f}{numpy_row.seconds / row.seconds:>9.2f}"
            f"{100 * row.gigabytes_per_second / copy.gigabytes_per_second:>9.0f}%"
            f"{cpu:>10}  {row.note}"
        )


def print_targets(rows: list[Row]) -> None:
    """Print the ratios issue 3's acceptance names (a ratio > 1 means faster)."""
    by_name = {row.name: row for row in rows}

    def speedup(faster: str, slower: str) -> str:
        ratio = by_name[slower].seconds / by_name[faster].seconds
        return f"{ratio:.2f}x"

    one, two = "DataPipeline, 1 thread", "DataPipeline, 2 threads"
    c_reused = "C core, 1 thread, output reused"
    print()
    print(f"C core reused vs NumPy (target >= 10x):        {speedup(c_reused, NUMPY)}")
    print(f"C core reused vs pure Python (target >= 30x):  {speedup(c_reused, PYTHON)}")
    copy_share = by_name[c_reused].gigabytes_per_second / by_name[COPY].gigabytes_per_second
    print(f"C core reused, share of copyto GB/s (>= 50%):  {100 * copy_share:.0f}%")
    print(f"DataPipeline 2 threads vs 1 (target >= 1.3x):  {speedup(two, one)}")
    for c_row in (c_reused, "C core, 1 thread, fresh array", "C core, 1 thread, fresh mmap"):
        label = c_row.removeprefix("C core, 1 thread, ")
        print(f"DataPipeline 1 thread vs C {label:<14} (>= 0.8x): {speedup(one, c_row)}")


def stream_memory_growth(total: int, chunk_size: int) -> int:
    """Return the peak traced memory growth of streaming ``total`` values through DataPipeline.

    The chunks are made on demand (as a reader of a large file would), so the
    figure is what the streaming form itself holds: the chunks in flight and
    their results.
    """

    def chunks() -> Iterator[array.array[float]]:
        for index in range(total // chunk_size):
            chunk = array.array("d", [float(index)]) * chunk_size
            chunk[::3] = array.array("d", [-1.0]) * len(chunk[::3])
            yield chunk

    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        for _ in DataPipeline(thread_count=2, batch_size=chunk_size).stream(chunks()):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - baseline


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, measure every row and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=10_000_000, help="items (default 10M)")
    parser.add_argument(
        "--python-size",
        type=int,
        default=1_000_000,
        help="items the pure-Python loop is timed on, scaled to --size (default 1M)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per row, best kept")
    parser.add_argument(
        "--batch-size", type=int, default=262_144, help="DataPipeline batch (default 262,144)"
    )
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)

    data = make_data(args.size, args.seed)
    _, counts = transform(data.data)
    print(
        f"{args.size:,} float64 items: {counts.kept:,} kept, {counts.negative:,} negative, "
        f"{counts.invalid_input:,} NaN/Inf, {counts.invalid_output:,} invalid after transform"
    )
    print("GB/s counts input bytes read + output bytes written; best of", args.repeat, "runs")
    python_size = min(args.python_size, args.size)
    rows = measure_baselines(data, counts.kept, python_size, args.repeat)
    rows[-1:-1] = measure_data_pipeline(data, counts.kept, args.repeat, args.batch_size)
    print_table(rows)
    print_targets(rows)
    print()
    chunk_size = 65_536
    for total in (1_048_576, 10_027_008):
        growth = stream_memory_growth(total, chunk_size)
        print(
            f"DataPipeline(2).stream of {total:,} values in chunks of {chunk_size:,}: "
            f"peak traced memory growth {growth / 1e6:.1f} MB (target < 10 MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
