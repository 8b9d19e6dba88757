"""Measure the queues extra against baselines run in the same process, and the file's size.

1. DurableQueue put, and get+ack, one item at a time and in batches of 100, with
   synchronous=NORMAL and FULL, against a bare sqlite3 loop running the same statements
   on the same schema (BEGIN IMMEDIATE; INSERT; COMMIT / the claiming UPDATE ...
   RETURNING; DELETE; COMMIT), JSON-encoding the same items. Goal: within 20% in batches.
2. PriorityQueue put+get, one item at a time and in batches of 100, against
   queue.PriorityQueue of (priority, seq, item) tuples and heapq under a threading.Lock,
   taking turns in each round, every output checked for priority order and FIFO among
   equals; and how many equal-priority neighbours a queue.PriorityQueue of
   (priority, job) hands out of put order.
3. The file's size under a steady put/ack load (--size-items, 1,000,000 by default in
   the full run), and what compact() gives back afterwards.

Run: .venv/bin/python benchmarks/bench_queues.py            (about a minute or two)
     .venv/bin/python benchmarks/bench_queues.py --quick    (small sizes, a few seconds)
     .venv/bin/python benchmarks/bench_queues.py --part 2   (only the priority queue)
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import queue
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.queues.durable import _CLAIM, _SCHEMA, DurableQueue
from pipeline.queues.priority import PriorityQueue

# Figures for benchmarks/suite.py (written where PIPELINE_BENCH_JSON says, if set).
FIGURES: dict[str, dict[str, Any]] = {}

ITEM = {"id": 0, "name": "sensor-17", "values": [1.5, 2.25, 3.0], "ok": True, "note": "x" * 30}


# 1. Durable queue against a bare sqlite3 loop.


class BareLoop:
    """The same statements as DurableQueue, written out by hand: the baseline."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute(f"PRAGMA synchronous = {synchronous}")
        for statement in _SCHEMA:
            self.connection.execute(statement)

    def put_many(self, items: list[Any]) -> None:
        rows = [("q", 0, time.time(), json.dumps(item).encode()) for item in items]
        c = self.connection
        c.execute("BEGIN IMMEDIATE")
        c.executemany(
            "INSERT INTO items (queue, priority, enqueued, payload) VALUES (?,?,?,?)", rows
        )
        c.execute("COMMIT")

    def get_ack_many(self, n: int) -> list[Any]:
        c = self.connection
        now = time.time()
        c.execute("BEGIN IMMEDIATE")
        rows = c.execute(_CLAIM, ("lease", "me", now + 60, "q", n)).fetchall()
        items = [json.loads(row[3]) for row in rows]
        c.execute("COMMIT")
        c.execute("BEGIN IMMEDIATE")
        c.executemany(
            "DELETE FROM items WHERE id = ? AND lease_id = ?", [(r[0], "lease") for r in rows]
        )
        c.execute("COMMIT")
        return items


def bench_durable(items_single: int, items_batch: int, repeats: int) -> None:
    print("\n1. DurableQueue against a bare sqlite3 loop (same statements, same file layout)")
    header = f"{'synchronous':>11} {'batch':>5} {'operation':>9} {'bare items/s':>13}"
    print(f"{header} {'durable items/s':>16} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as folder:
        for synchronous in ("NORMAL", "FULL"):
            # FULL waits for the disk on every commit: fewer single items keep it short.
            single = items_single if synchronous == "NORMAL" else max(100, items_single // 10)
            for batch, items in ((1, single), (100, items_batch)):
                best = compare(Path(folder), synchronous, batch, items, repeats)
                for operation in ("put", "get+ack"):
                    theirs, ours = best["bare", operation], best["durable", operation]
                    FIGURES[f"durable/bare {operation} {synchronous} batch {batch}"] = {
                        "value": ours / theirs,
                        "better": "higher",
                    }
                    print(
                        f"{synchronous:>11} {batch:>5} {operation:>9} {theirs:>13,.0f} "
                        f"{ours:>16,.0f} {ours / theirs:>5.2f}x"
                    )


def compare(
    directory: Path, synchronous: str, batch: int, items: int, repeats: int
) -> dict[tuple[str, str], float]:
    """Best items/s of `repeats` rounds; the two take turns in each, so load noise hits both."""
    bare = BareLoop(directory / f"bare-{synchronous}-{batch}.db", synchronous)
    durable = DurableQueue[Any](
        directory / f"durable-{synchronous}-{batch}.db",
        synchronous="FULL" if synchronous == "FULL" else "NORMAL",
    )
    chunk = [ITEM] * batch
    puts: dict[str, Callable[[], object]] = {
        "bare": lambda: bare.put_many(chunk),
        "durable": lambda: durable.put_many(chunk),
    }
    takes: dict[str, Callable[[], object]] = {
        "bare": lambda: bare.get_ack_many(batch),
        "durable": lambda: durable.ack_many(durable.get_many(batch)),
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeats):
        for operation, calls in (("put", puts), ("get+ack", takes)):
            for name, call in calls.items():
                started = time.perf_counter()
                for _ in range(items // batch):
                    call()
                rate = items / (time.perf_counter() - started)
                best[name, operation] = max(best.get((name, operation), 0.0), rate)
    durable.close()
    bare.connection.close()
    return best


# 2. Priority queue against queue.PriorityQueue.


def out_of_order(order: list[tuple[int, int]]) -> int:
    """Count adjacent equal-priority outputs whose put order is reversed."""
    return sum(1 for a, b in itertools.pairwise(order) if a[0] == b[0] and a[1] > b[1])


def bench_priority(items: int, repeats: int) -> None:
    print(f"\n2. PriorityQueue against queue.PriorityQueue, {items:,} items, 6 priorities")
    rng = random.Random(7)
    priorities = [rng.randrange(6) for _ in range(items)]

    def stdlib_single() -> tuple[float, list[int]]:
        q: queue.PriorityQueue[tuple[int, int, int]] = queue.PriorityQueue()
        sequence = itertools.count()
        started = time.perf_counter()
        for n, p in enumerate(priorities):
            q.put((p, next(sequence), n))
        out = [q.get()[2] for _ in range(items)]
        return time.perf_counter() - started, out

    def heapq_single() -> tuple[float, list[int]]:
        heap: list[tuple[int, int, int]] = []
        lock = threading.Lock()
        sequence = itertools.count()
        started = time.perf_counter()
        for n, p in enumerate(priorities):
            with lock:
                heapq.heappush(heap, (p, next(sequence), n))
        out = []
        for _ in range(items):
            with lock:
                out.append(heapq.heappop(heap)[2])
        return time.perf_counter() - started, out

    def ours_single() -> tuple[float, list[int]]:
        q: PriorityQueue[int] = PriorityQueue()
        started = time.perf_counter()
        for n, p in enumerate(priorities):
            q.put(n, priority=p)
        out = [q.get() for _ in range(items)]
        return time.perf_counter() - started, out

    runs = 100
    groups: list[tuple[int, list[int]]] = [
        (rng.randrange(6), list(range(start, min(items, start + runs))))
        for start in range(0, items, runs)
    ]

    def ours_batches() -> tuple[float, list[int]]:
        q: PriorityQueue[int] = PriorityQueue()
        started = time.perf_counter()
        for p, chunk in groups:
            q.put_many(chunk, priority=p)
        out: list[int] = []
        while len(out) < items:
            out.extend(q.get_many(100))
        return time.perf_counter() - started, out

    # Priority order with FIFO among equals is exactly a stable sort by priority.
    one_at_a_time = sorted(range(items), key=priorities.__getitem__)
    in_batches = [n for _, chunk in sorted(groups, key=lambda group: group[0]) for n in chunk]
    rows: list[tuple[str, Callable[[], tuple[float, list[int]]], list[int]]] = [
        ("queue.PriorityQueue, (priority, seq, item)", stdlib_single, one_at_a_time),
        ("heapq + threading.Lock, (priority, seq, item)", heapq_single, one_at_a_time),
        ("PriorityQueue, put/get", ours_single, one_at_a_time),
        ("PriorityQueue, put_many/get_many of 100", ours_batches, in_batches),
    ]
    # The rows take turns in each round, so the machine's load hits all of them alike.
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    for _ in range(repeats):
        for name, run, expected in rows:
            elapsed, out = run()
            if out != expected:
                raise SystemExit(f"{name}: wrong order (not by priority, FIFO among equals)")
            seconds[name].append(elapsed)
    stdlib = seconds[rows[0][0]]
    print(f"load average {os.getloadavg()[0]:.1f}; {repeats} rounds; every output checked")
    print(f"{'queue':<46} {'put+get ops/s: min':>19} {'median':>10} {'max':>10} {'vs stdlib':>10}")
    for name, _, _ in rows:
        rates = sorted(2 * items / elapsed for elapsed in seconds[name])
        ratio = statistics.median(s / o for s, o in zip(stdlib, seconds[name], strict=True))
        print(
            f"{name:<46} {rates[0]:>19,.0f} {statistics.median(rates):>10,.0f} "
            f"{rates[-1]:>10,.0f} {ratio:>9.2f}x"
        )
        FIGURES[f"{name} vs queue.PriorityQueue"] = {"value": ratio, "better": "higher"}
    single, batches = (seconds[name] for name, _, _ in rows[2:])
    ratio = statistics.median(s / b for s, b in zip(single, batches, strict=True))
    print(f"batches against one at a time: {ratio:.1f}x")

    class Job:
        def __init__(self, n: int) -> None:
            self.n = n

        def __lt__(self, other: Job) -> bool:
            return False  # jobs carry no order of their own

    plain: queue.PriorityQueue[tuple[int, Job]] = queue.PriorityQueue()
    ours: PriorityQueue[int] = PriorityQueue()
    for n, p in enumerate(priorities):
        plain.put((p, Job(n)))
        ours.put(n, priority=p)
    plain_order = [(p, job.n) for p, job in (plain.get() for _ in range(items))]
    ours_order = [(priorities[n], n) for n in (ours.get() for _ in range(items))]
    print(
        f"equal-priority neighbours out of put order: queue.PriorityQueue of (priority, job) "
        f"{out_of_order(plain_order):,} of {items - 1:,}; PriorityQueue {out_of_order(ours_order)}"
    )


# 3. File size under a steady load.


def bench_size(items: int, backlog: int) -> None:
    print(f"\n3. File size, {items:,} items put and acked in batches of 100, backlog {backlog:,}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "steady.db"

        def on_disk() -> int:
            return sum(
                (path.parent / (path.name + s)).stat().st_size
                for s in ("", "-wal")
                if (path.parent / (path.name + s)).exists()
            )

        with DurableQueue[Any](path) as durable:
            durable.put_many([ITEM] * backlog)
            largest = 0
            checkpoints = max(1, items // 10)
            started = time.perf_counter()
            for done in range(0, items, 100):
                durable.put_many([ITEM] * 100)
                durable.ack_many(durable.get_many(100))
                largest = max(largest, path.stat().st_size)
                if (done + 100) % checkpoints == 0:
                    print(
                        f"  after {done + 100:>9,}: file {path.stat().st_size:>11,} bytes, "
                        f"with WAL {on_disk():>11,}"
                    )
            elapsed = time.perf_counter() - started
            print(
                f"  largest file seen {largest:,} bytes; {items / elapsed:,.0f} items/s put+get+ack"
            )
            while durable.qsize():
                durable.ack_many(durable.get_many(1000))
            before = on_disk()
            after = durable.compact()
            print(f"  emptied: {before:,} bytes with WAL; after compact(): {after:,} bytes")
            FIGURES["largest queue file, bytes"] = {"value": largest, "better": "lower"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--size-items", type=int, default=None, help="items for part 3")
    parser.add_argument(
        "--part", type=int, choices=(1, 2, 3), action="append", help="run only these parts"
    )
    args = parser.parse_args(argv)
    parts = set(args.part or (1, 2, 3))
    if args.quick:
        if 1 in parts:
            bench_durable(items_single=500, items_batch=5_000, repeats=1)
        if 2 in parts:
            bench_priority(items=20_000, repeats=3)
        if 3 in parts:
            bench_size(items=args.size_items or 20_000, backlog=1_000)
    else:
        if 1 in parts:
            bench_durable(items_single=3_000, items_batch=50_000, repeats=3)
        if 2 in parts:
            bench_priority(items=200_000, repeats=3)
        if 3 in parts:
            bench_size(items=args.size_items or 1_000_000, backlog=10_000)
    if "PIPELINE_BENCH_JSON" in os.environ:
        Path(os.environ["PIPELINE_BENCH_JSON"]).write_text(json.dumps(FIGURES), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
