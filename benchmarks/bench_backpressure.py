"""Measure backpressure: the most items in flight with a slow consumer, against the bound.

Items in flight are those read from the source but not yet handed to the consumer. With
bounded queues they can never exceed `Pipeline.max_items_in_flight`: the feeder's chunk
+ every link's queue_size + per stage (workers + reorder window) batches + the
consumer's batch, where an ordered stage with several workers has a window of
4 batches per worker. The consumer here is slow (it waits 50 µs
per item), so the queues fill and the bound is reached.

Run: .venv/bin/python benchmarks/bench_backpressure.py
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from pipeline import FunctionStage, Pipeline

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


def main() -> int:
    print(f"{ITEMS:,} items through {STAGES} stages to a slow consumer")
    header = ("queue_size", "batch_size", "workers", "most in flight", "bound")
    print(f"{header[0]:>10} {header[1]:>10} {header[2]:>7} {header[3]:>15} {header[4]:>7}")
    for queue_size, batch_size, workers in [(1, 1, 1), (8, 4, 2), (50, 16, 3), (8192, 4096, 1)]:
        most, bound = most_in_flight(queue_size, batch_size, workers)
        print(f"{queue_size:>10} {batch_size:>10} {workers:>7} {most:>15,} {bound:>7,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
