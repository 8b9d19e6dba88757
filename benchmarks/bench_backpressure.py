"""Measure backpressure: the most items in flight with a slow consumer, against the bound.

Items in flight are those read from the source but not yet handed to the consumer. With
bounded queues they can never exceed `Pipeline.max_items_in_flight`: the feeder's chunk
+ every link's queue_size + per stage (workers + reorder window) batches + the
consumer's batch, where an ordered stage with several workers has a window of
4 batches per worker. The consumer here is slow (it waits 50 µs
per item), so the queues fill and the bound is reached.

Then the memory a run holds with the defaults: 4,000 items of 100 KB through three
stages whose middle one is slower than the source (200 µs per item), each run in a
fresh interpreter that reports its peak RSS above what it had before the run, with the
byte budget on (`queue_bytes`, the default) and off (`queue_bytes=0`, item counts only),
interleaved, `--repeat` times each; every run checks its outputs.

Run: .venv/bin/python benchmarks/bench_backpressure.py [--quick] [--repeat K] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from pipeline import Pipeline, PipelineStage
from pipeline.pipeline import DEFAULT_QUEUE_BYTES
from pipeline.stages import FunctionStage

ITEMS = 20_000
STAGES = 3


def identity(item: Any) -> Any:
    return item


def most_in_flight(queue_size: int, batch_size: int, workers: int) -> tuple[int, int]:
    """Return the most items in flight seen over a run, and the bound they must stay under."""
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for item in range(ITEMS):
            pulled += 1
            yield item

    stages = [FunctionStage(identity, workers=workers) for _ in range(STAGES)]
    pipeline = Pipeline(stages, queue_size=queue_size, batch_size=batch_size)
    bound = pipeline.max_items_in_flight
    slow_consumer = threading.Event()
    most = 0
    for consumed, _ in enumerate(pipeline.stream(source()), start=1):
        slow_consumer.wait(0.00005)
        most = max(most, pulled - consumed)
    return most, bound


PAGE = 100_000  # bytes per item of the memory runs
MIB = 1024 * 1024


class SlowerThanTheSource(PipelineStage[bytes, bytes]):
    """The middle stage: 200 µs per item, slower than a source that makes 100 KB items."""

    def __init__(self) -> None:
        super().__init__()
        self.pause = threading.Event()

    def process(self, item: bytes) -> bytes:
        self.pause.wait(0.0002)
        return item


def peak_rss_of_one_run(items: int, queue_bytes: int) -> float:
    """Run the memory scenario here; return the peak RSS it added, in MiB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    pipeline = Pipeline(
        FunctionStage(identity) >> SlowerThanTheSource() >> FunctionStage(identity),
        queue_bytes=queue_bytes,
    )
    delivered = 0
    for output in pipeline.stream(b"x" * PAGE for _ in range(items)):
        if len(output) != PAGE:
            raise AssertionError("an output is not the 100 KB item that went in")
        delivered += 1
    if delivered != items:
        raise AssertionError(f"{delivered} outputs for {items} items")
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def peak_rss(items: int, queue_bytes: int) -> float:
    """Return `peak_rss_of_one_run` measured in a fresh interpreter."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import bench_backpressure as bench; "
        "print(bench.peak_rss_of_one_run(int(sys.argv[2]), int(sys.argv[3])))"
    )
    here = __file__.rsplit("/", 1)[0]
    done = subprocess.run(
        [sys.executable, "-c", code, here, str(items), str(queue_bytes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(done.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 items per memory run")
    parser.add_argument("--repeat", type=int, default=3, help="memory runs per setting")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    print(f"{ITEMS:,} items through {STAGES} stages to a slow consumer")
    header = ("queue_size", "batch_size", "workers", "most in flight", "bound")
    print(f"{header[0]:>10} {header[1]:>10} {header[2]:>7} {header[3]:>15} {header[4]:>7}")
    for queue_size, batch_size, workers in [(1, 1, 1), (8, 4, 2), (50, 16, 3), (8192, 4096, 1)]:
        most, bound = most_in_flight(queue_size, batch_size, workers)
        print(f"{queue_size:>10} {batch_size:>10} {workers:>7} {most:>15,} {bound:>7,}")
    fetch = Pipeline(FunctionStage(identity, workers=16))
    print(
        f"defaults, one stage of 16 workers: at most {fetch.max_items_in_flight:,} items "
        f"and {fetch.max_bytes_in_flight / MIB:.0f} MiB in flight"
    )

    items = 1_000 if args.quick else 4_000
    settings = {"byte budget (default)": DEFAULT_QUEUE_BYTES, "queue_bytes=0": 0}
    peaks: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.repeat):
        for name, queue_bytes in settings.items():
            peaks[name].append(peak_rss(items, queue_bytes))
    print(f"\n{items:,} items of 100 KB, 3 stages, the middle one slower than the source:")
    print("peak RSS added by the run, MiB (min / median / max of", args.repeat, "runs)")
    for name, values in peaks.items():
        low, middle, high = min(values), statistics.median(values), max(values)
        print(f"  {name:24} {low:7.1f} / {middle:7.1f} / {high:7.1f}")
    bound_mib = Pipeline([FunctionStage(identity) for _ in range(3)]).max_bytes_in_flight / MIB
    print(f"  the byte bound of that chain (max_bytes_in_flight): {bound_mib:.0f} MiB")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"items": items, "peak_rss_mib": peaks, "bound_mib": bound_mib}, file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
