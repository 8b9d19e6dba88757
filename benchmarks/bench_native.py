"""Benchmark the C transform against pure Python, NumPy and a plain memory copy.

Every figure is measured in the same run on the same data: sensor-like
readings with about 1% NaN, 1% +Inf and 30% negative values. Rows are timed
in rounds (each row once per round, --repeat rounds) and each row keeps its
best round, so a burst of load from other processes hits every row alike.
Throughput in GB/s counts the bytes a row must move: input bytes read plus
output bytes written (8 per input item + 8 per kept item; for numpy.copyto,
8 + 8 per item). ``numpy.copyto`` of the same array is the memory-bandwidth
reference: no transform that reads every input and writes its results can
beat it by much. The "faults" column is the minor page faults of the best
round (``getrusage``): the cost of fresh memory, which the kernel hands out
one zeroed page at a time on first touch.

The rows, and what each one isolates:
  C core, output reused         the loop alone: no allocation, no faults
  C core, zero-filled array     the output as native.transform() made it
                                once did: array('d', [0.0]) * n, which
                                writes every byte under the GIL, then the loop
  C core, fresh, 4 KiB pages    a private anonymous mapping, faulted in by the
                                loop: one fault per 4 KiB of results
  native.transform(), fresh     the same on transparent huge pages where
                                available: one fault per 2 MiB
  page faults only, 1/2 threads  fresh huge-page memory the size of the kept
                                results, one double written per page: what
                                the kernel's zeroing alone costs, and whether
                                a second thread shares it (on the Xeon of
                                docs/gil-free.md it does not)
  DataPipeline, fresh / out=    the whole stage, 1 and 2 threads, returning
                                fresh memory or writing into a reused buffer

NumPy is a benchmark-only dependency; the package itself never imports it.

Run:  python benchmarks/bench_native.py            (10,000,000 items)
      python benchmarks/bench_native.py --size 100000 --repeat 1   (smoke test)
"""

from __future__ import annotations

import argparse
import array
import resource
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy
import numpy.typing

from pipeline.native.buffers import fresh_doubles, huge_page_size
from pipeline.native.compiled import move, transform, transform_into
from pipeline.native.production import DataPipeline
from pipeline.native.reference import transform_reference

ITEM_BYTES = 8
PAGE_BYTES = 4096
PYTHON = "pure-Python loop (reference)"
NUMPY = "NumPy: mask, sqrt, multiply"
COPY = "numpy.copyto (bandwidth reference)"
C_REUSED = "C core, 1 thread, output reused"
C_ZERO_FILLED = "C core, 1 thread, zero-filled array"
C_SMALL_PAGES = "C core, 1 thread, fresh, 4 KiB pages"
C_FRESH = "native.transform(), fresh"
FAULTS_ONLY = "page faults only, {} thread(s)"
PIPELINE_FRESH = "DataPipeline, {} fresh"
PIPELINE_OUT = "DataPipeline, {} out="


@dataclass
class Row:
    """One measured implementation and its best round so far."""

    name: str
    function: Callable[[], object]
    items: int
    bytes_moved: int
    note: str = ""
    seconds: float = float("inf")
    cpu_seconds: float = float("inf")
    faults: int = 0
    scale: float = field(default=1.0)

    def measure(self) -> None:
        """Run the function once; keep the round if it is the best so far."""
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cpu_start = time.process_time()
        start = time.perf_counter()
        result = self.function()
        wall = (time.perf_counter() - start) * self.scale
        cpu = (time.process_time() - cpu_start) * self.scale
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
        del result  # freed after the clocks stopped
        if wall < self.seconds:
            self.seconds, self.cpu_seconds, self.faults = wall, cpu, faults

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


def numpy_straightforward(
    data: numpy.typing.NDArray[numpy.float64],
) -> numpy.typing.NDArray[numpy.float64]:
    """The transform as a NumPy user would first write it: mask, sqrt, multiply."""
    keep = numpy.isfinite(data) & (data >= 0.0)
    with numpy.errstate(invalid="ignore"):
        result = numpy.sqrt(data[keep]) * 2.0
    return result[numpy.isfinite(result)]


def make_rows(
    data: numpy.typing.NDArray[numpy.float64], kept: int, python_size: int, batch_size: int
) -> list[Row]:
    """Return every row to measure, in the order they are printed."""
    size = len(data)
    moved = ITEM_BYTES * (size + kept)
    view = data.data  # the C core reads the NumPy array's memory directly
    reused = fresh_doubles(size)
    transform_into(view, reused)  # fault the reused output in before timing

    def two_threads_on_halves() -> None:
        half = size // 2
        threads = [
            threading.Thread(
                target=transform_into, args=(view[start : start + half], reused[start:])
            )
            for start in (0, half)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def zero_filled_array() -> array.array[float]:
        output = array.array("d", [0.0]) * size
        counts = transform_into(view, output)
        del output[counts.kept :]
        return output

    def fresh_small_pages() -> memoryview[float]:
        output = fresh_doubles(size, huge_pages=False)
        counts = transform_into(view, output)
        return output[: counts.kept]

    one = array.array("d", [1.0])

    def faults_only(thread_count: int) -> memoryview[float]:
        touched = fresh_doubles(kept)
        step = (huge_page_size() or PAGE_BYTES) // ITEM_BYTES
        pages = range(0, kept, step)

        def touch(part: range) -> None:
            for index in part:
                move(one, touched[index : index + 1])  # the fault happens with the GIL released

        threads = [
            threading.Thread(target=touch, args=(pages[number::thread_count],))
            for number in range(thread_count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return touched

    python_part = array.array("d", data[:python_size].tobytes())
    scale = size / python_size
    rows = [
        Row(
            PYTHON,
            lambda: transform_reference(python_part),
            size,
            moved,
            f"timed on {python_size:,} items, scaled x{scale:g}" if scale != 1 else "",
            scale=scale,
        ),
        Row(NUMPY, lambda: numpy_straightforward(data), size, moved),
        Row(C_REUSED, lambda: transform_into(view, reused), size, moved),
        Row("C core, 2 threads, one half each", two_threads_on_halves, size, moved, "reused"),
        Row(C_ZERO_FILLED, zero_filled_array, size, moved, "native.transform() before"),
        Row(C_SMALL_PAGES, fresh_small_pages, size, moved, "private mmap"),
        Row(
            C_FRESH,
            lambda: transform(view),
            size,
            moved,
            "private mmap + MADV_HUGEPAGE" if huge_page_size() else "no huge pages here",
        ),
    ]
    for thread_count in (1, 2):
        rows.append(
            Row(
                FAULTS_ONLY.format(thread_count),
                lambda count=thread_count: faults_only(count),  # type: ignore[misc]
                size,
                ITEM_BYTES * kept,
                f"{ITEM_BYTES * kept / 1e6:.0f} MB touched, not a transform",
            )
        )
    reused_out = fresh_doubles(size)
    DataPipeline(2, batch_size).process(view, out=reused_out)  # fault it in before timing
    for thread_count in (1, 2):
        threads = f"{thread_count} thread{'s' if thread_count > 1 else ''},"
        data_pipeline = DataPipeline(thread_count=thread_count, batch_size=batch_size)
        rows.append(
            Row(
                PIPELINE_FRESH.format(threads),
                lambda pipeline=data_pipeline: pipeline.process(view),  # type: ignore[misc]
                size,
                moved,
                f"batch_size={batch_size:,}",
            )
        )
        rows.append(
            Row(
                PIPELINE_OUT.format(threads),
                lambda pipeline=data_pipeline: pipeline.process(view, out=reused_out),  # type: ignore[misc]
                size,
                moved,
                "output reused",
            )
        )
    copy_target = numpy.empty_like(data)
    numpy.copyto(copy_target, data)
    rows.append(Row(COPY, lambda: numpy.copyto(copy_target, data), size, 2 * ITEM_BYTES * size))
    return rows


def print_table(rows: list[Row]) -> None:
    """Print every row with its throughput and its ratio to the baselines."""
    by_name = {row.name: row for row in rows}
    python = by_name[PYTHON]
    numpy_row = by_name[NUMPY]
    copy = by_name[COPY]
    print(
        f"{'implementation':<40}{'ms':>8}{'GB/s':>7}{'x Python':>10}{'x NumPy':>9}"
        f"{'% copyto':>10}{'CPU/wall':>9}{'faults':>8}  note"
    )
    for row in rows:
        print(
            f"{row.name:<40}{row.seconds * 1e3:>8.1f}{row.gigabytes_per_second:>7.2f}"
            f"{python.seconds / row.seconds:>10.1f}{numpy_row.seconds / row.seconds:>9.2f}"
            f"{100 * row.gigabytes_per_second / copy.gigabytes_per_second:>9.0f}%"
            f"{row.cpu_seconds / row.seconds:>9.2f}{row.faults:>8,}  {row.note}"
        )


def print_targets(rows: list[Row]) -> None:
    """Print the ratios the C stage is held to (a ratio > 1 means faster)."""
    by_name = {row.name: row for row in rows}

    def speedup(faster: str, slower: str) -> str:
        return f"{by_name[slower].seconds / by_name[faster].seconds:.2f}x"

    def copy_share(name: str) -> str:
        share = by_name[name].gigabytes_per_second / by_name[COPY].gigabytes_per_second
        return f"{100 * share:.0f}%"

    one_fresh, two_fresh = (PIPELINE_FRESH.format(t) for t in ("1 thread,", "2 threads,"))
    two_out = PIPELINE_OUT.format("2 threads,")
    targets = [
        ("C core reused vs NumPy (>= 10x)", speedup(C_REUSED, NUMPY)),
        ("C core reused vs pure Python (>= 30x)", speedup(C_REUSED, PYTHON)),
        ("DataPipeline 2 threads fresh vs NumPy (>= 10x)", speedup(two_fresh, NUMPY)),
        ("DataPipeline 2 threads fresh vs 1 thread (>= 1.3x)", speedup(two_fresh, one_fresh)),
        ("native.transform() fresh vs zero-filled array (>= 2x)", speedup(C_FRESH, C_ZERO_FILLED)),
        ("DataPipeline 2 threads out=, share of copyto (>= 80%)", copy_share(two_out)),
        ("huge pages vs 4 KiB pages, fresh output", speedup(C_FRESH, C_SMALL_PAGES)),
    ]
    print()
    for label, figure in targets:
        print(f"{label + ':':<56}{figure}")


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
    parser.add_argument("--repeat", type=int, default=5, help="rounds, best kept per row")
    parser.add_argument(
        "--batch-size", type=int, default=1_048_576, help="DataPipeline batch (default 1,048,576)"
    )
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)

    data = make_data(args.size, args.seed)
    _, counts = transform(data.data)
    print(
        f"{args.size:,} float64 items: {counts.kept:,} kept, {counts.negative:,} negative, "
        f"{counts.invalid_input:,} NaN/Inf, {counts.invalid_output:,} invalid after transform"
    )
    huge_page = huge_page_size()
    print(
        f"GB/s counts input bytes read + output bytes written; best of {args.repeat} rounds; "
        f"transparent huge pages: {f'{huge_page // 1024:,} KiB' if huge_page else 'not available'}"
    )
    rows = make_rows(data, counts.kept, min(args.python_size, args.size), args.batch_size)
    for round_number in range(args.repeat):
        for row in rows:
            if row.name != PYTHON or round_number == 0:
                row.measure()
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
