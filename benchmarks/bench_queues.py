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
4. DurableQueue against its peers with synchronous=NORMAL: litequeue (the `bench`
   extra; skipped with a line saying so when it is not installed) and bare sqlite3
   with the same pragmas and schema, put one at a time and in batches of 100, then
   get+ack the same way. Each round runs every contender in turn on its own file; every
   item that comes out is checked, and every file is empty at the end of a round. The
   ratios are the medians of the rounds' ratios.

Run: .venv/bin/python benchmarks/bench_queues.py            (about a minute or two)
     .venv/bin/python benchmarks/bench_queues.py --quick    (small sizes, a few seconds)
     .venv/bin/python benchmarks/bench_queues.py --part 2   (only the priority queue)
     .venv/bin/python benchmarks/bench_queues.py --part 4 --json durable.json
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
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

from pipeline.queues.durable import _ACK, _CLAIM, _DUE_NOW, _INSERT, _SCHEMA, DurableQueue
from pipeline.queues.priority import PriorityQueue

# Figures for benchmarks/suite.py (written where PIPELINE_BENCH_JSON says, if set).
FIGURES: dict[str, dict[str, Any]] = {}

ITEM = {"id": 0, "name": "sensor-17", "values": [1.5, 2.25, 3.0], "ok": True, "note": "x" * 30}


# 1. Durable queue against a bare sqlite3 loop.


class BareLoop:
    """The statements DurableQueue runs, written out by hand, with its pragmas: the baseline.

    A put of one item is one autocommit INSERT, a batch one transaction; a claim is one
    transaction (delayed retries whose time has come made ready, then the claim); an
    ack of one item is one autocommit DELETE, of a batch one transaction.
    """

    def __init__(self, path: Path, synchronous: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute(f"PRAGMA synchronous = {synchronous}")
        self.connection.execute("PRAGMA journal_size_limit = 67108864")
        for statement in _SCHEMA:
            self.connection.execute(statement)
        self.encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

    def put(self, item: Any) -> None:
        self.connection.execute(_INSERT, ("q", 0, time.time(), self.encoder.encode(item).encode()))

    def put_many(self, items: list[Any]) -> None:
        if len(items) == 1:
            self.put(items[0])
            return
        now = time.time()
        rows = [("q", 0, now, self.encoder.encode(item).encode()) for item in items]
        c = self.connection
        c.execute("BEGIN IMMEDIATE")
        c.executemany(_INSERT, rows)
        c.execute("COMMIT")

    def get_ack_many(self, n: int) -> list[Any]:
        c = self.connection
        now = time.time()
        lease = os.urandom(16).hex()
        c.execute("BEGIN IMMEDIATE")
        c.execute(_DUE_NOW, ("q", now))
        rows = c.execute(_CLAIM, (lease, "me", now + 60, "q", n)).fetchall()
        items = [json.loads(row[3]) for row in rows]
        c.execute("COMMIT")
        if len(rows) == 1:
            c.execute(_ACK, (rows[0][0], lease, "lapsed:" + lease))
            return items
        c.execute("BEGIN IMMEDIATE")
        c.executemany(_ACK, [(row[0], lease, "lapsed:" + lease) for row in rows])
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


# 4. Durable queue against its peers.


class Contender:
    """One way to store items durably, driven the same way as the others."""

    def __init__(self, name: str, rows: set[tuple[str, int]]) -> None:
        self.name = name
        self.rows = rows  # the (operation, batch) rows it takes part in

    def put(self, item: Any) -> None:
        raise NotImplementedError

    def put_many(self, items: list[Any]) -> None:
        raise NotImplementedError

    def get_ack(self) -> Any:
        raise NotImplementedError

    def get_ack_many(self, n: int) -> list[Any]:
        raise NotImplementedError

    def remaining(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


ALL_ROWS = {("put", 1), ("get+ack", 1), ("put", 100), ("get+ack", 100)}


class Durable(Contender):
    def __init__(self, path: Path) -> None:
        super().__init__("DurableQueue", ALL_ROWS)
        self.queue = DurableQueue[Any](path, "q")

    def put(self, item: Any) -> None:
        self.queue.put(item)

    def put_many(self, items: list[Any]) -> None:
        self.queue.put_many(items)

    def get_ack(self) -> Any:
        leased = self.queue.get(block=False)
        self.queue.ack(leased)
        return leased.item

    def get_ack_many(self, n: int) -> list[Any]:
        batch = self.queue.get_many(n, block=False)
        self.queue.ack_many(batch)
        return [leased.item for leased in batch]

    def remaining(self) -> int:
        return self.queue.qsize()

    def close(self) -> None:
        self.queue.close()


class Bare(Contender):
    def __init__(self, path: Path) -> None:
        super().__init__("bare sqlite3, the same statements", ALL_ROWS)
        self.loop = BareLoop(path, "NORMAL")

    def put(self, item: Any) -> None:
        self.loop.put(item)

    def put_many(self, items: list[Any]) -> None:
        self.loop.put_many(items)

    def get_ack(self) -> Any:
        return self.loop.get_ack_many(1)[0]

    def get_ack_many(self, n: int) -> list[Any]:
        return self.loop.get_ack_many(n)

    def remaining(self) -> int:
        count: int = self.loop.connection.execute("SELECT count(*) FROM items").fetchone()[0]
        return count

    def close(self) -> None:
        self.loop.connection.close()


class BareTransactions(Bare):
    """A put as an explicit transaction (BEGIN IMMEDIATE; INSERT; COMMIT)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.name = "bare sqlite3, BEGIN+INSERT+COMMIT"
        self.rows = {("put", 1)}

    def put(self, item: Any) -> None:
        c = self.loop.connection
        c.execute("BEGIN IMMEDIATE")
        self.loop.put(item)
        c.execute("COMMIT")


class Lite(Contender):
    """litequeue: a put is one autocommit INSERT; a pop a transaction; done marks the row."""

    def __init__(self, path: Path) -> None:
        import litequeue  # type: ignore[import-untyped]  # the bench extra; checked before

        # No batch row for get+ack: it has no batch pop, and its done rows stay in the
        # table, so that a pop among 30,000 of them runs at a few hundred a second.
        super().__init__(f"litequeue {litequeue.__version__}", ALL_ROWS - {("get+ack", 100)})
        self.queue = litequeue.LiteQueue(str(path))

    def put(self, item: Any) -> None:
        self.queue.put(json.dumps(item))

    def put_many(self, items: list[Any]) -> None:
        with self.queue.transaction("IMMEDIATE"):  # it has no batch put: one transaction
            for item in items:
                self.queue.put(json.dumps(item))

    def get_ack(self) -> Any:
        message = self.queue.pop()
        self.queue.done(message.message_id)
        return json.loads(message.data)

    def get_ack_many(self, n: int) -> list[Any]:
        raise NotImplementedError("litequeue has no batch pop")

    def remaining(self) -> int:
        count: int = self.queue.qsize()
        return count

    def close(self) -> None:
        self.queue.conn.close()


def run_round(
    contenders: list[Contender], single: int, batched: int
) -> dict[str, dict[tuple[str, int], float]]:
    """Put, then get+ack, one at a time and then in batches; return items/s per contender.

    Each phase goes in slices, every contender taking its turn at each slice, so that a
    burst of load from elsewhere hits them all alike. Every item is checked.
    """
    seconds: dict[str, dict[tuple[str, int], float]] = {each.name: {} for each in contenders}
    for batch, count in ((1, single), (PEER_BATCH, batched)):
        items = [{**ITEM, "id": n} for n in range(count)]
        step = 100 * batch  # items per slice
        out: dict[str, list[Any]] = {each.name: [] for each in contenders}
        for operation in ("put", "get+ack"):
            for start in range(0, count, step):
                for contender in contenders:
                    if (operation, batch) not in contender.rows:
                        continue
                    chunk = items[start : start + step]
                    started = time.perf_counter()
                    if operation == "put" and batch == 1:
                        for item in chunk:
                            contender.put(item)
                    elif operation == "put":
                        for first in range(0, len(chunk), batch):
                            contender.put_many(chunk[first : first + batch])
                    elif batch == 1:
                        got = out[contender.name]
                        for _ in chunk:
                            got.append(contender.get_ack())
                    else:
                        got = out[contender.name]
                        for _ in range(0, len(chunk), batch):
                            got.extend(contender.get_ack_many(batch))
                    elapsed = time.perf_counter() - started
                    row = seconds[contender.name]
                    row[operation, batch] = row.get((operation, batch), 0.0) + elapsed
        for contender in contenders:
            if ("get+ack", batch) not in contender.rows:
                continue
            if out[contender.name] != items:
                raise SystemExit(f"{contender.name}: items came back wrong or out of order")
            if contender.remaining():
                raise SystemExit(f"{contender.name}: {contender.remaining()} items left unacked")
    return {
        each.name: {
            row: (single if row[1] == 1 else batched) / elapsed
            for row, elapsed in seconds[each.name].items()
        }
        for each in contenders
    }


PEER_BATCH = 100
RATES: dict[str, list[float]] = {}


def bench_peers(single: int, batched: int, rounds: int) -> None:
    print(
        f"\n4. DurableQueue against its peers, synchronous=NORMAL: {single:,} items one at a "
        f"time, {batched:,} in batches of {PEER_BATCH}; {rounds} rounds, contenders in turn"
    )
    makers: list[Callable[[Path], Contender]] = [Durable, Bare, BareTransactions]
    if importlib.util.find_spec("litequeue") is None:
        print("  litequeue is not installed (pip install -e '.[bench]'): its rows are skipped")
    else:
        makers.append(Lite)
    loads = [os.getloadavg()[0]]
    per_round: list[dict[str, dict[tuple[str, int], float]]] = []
    names: list[str] = []
    for round_number in range(rounds):
        shift = round_number % len(makers)  # each contender goes first in some round
        with tempfile.TemporaryDirectory() as folder:
            contenders = [
                make(Path(folder) / f"{index}.db")
                for index, make in enumerate(makers[shift:] + makers[:shift])
            ]
            try:
                per_round.append(run_round(contenders, single, batched))
            finally:
                for contender in contenders:
                    contender.close()
        if not names:  # the first round runs them in the order of `makers`
            names = [each.name for each in contenders]
        loads.append(os.getloadavg()[0])
    print(f"  load average {min(loads):.1f} to {max(loads):.1f}; every item checked")
    print(
        f"  {'operation':<9} {'batch':>5} {'contender':<36} {'items/s: min':>12} "
        f"{'median':>8} {'max':>8} {'DurableQueue vs it':>19}"
    )
    ours = "DurableQueue"
    for operation, batch in (("put", 1), ("get+ack", 1), ("put", PEER_BATCH), ("get+ack", 100)):
        for name in names:
            if (operation, batch) not in per_round[0][name]:
                continue
            rates_of = sorted(each[name][operation, batch] for each in per_round)
            RATES[f"{name} {operation} batch {batch}"] = rates_of
            ratio = statistics.median(
                each[ours][operation, batch] / each[name][operation, batch] for each in per_round
            )
            shown = "" if name == ours else f"{ratio:.2f}x"
            print(
                f"  {operation:<9} {batch:>5} {name:<36} {rates_of[0]:>12,.0f} "
                f"{statistics.median(rates_of):>8,.0f} {rates_of[-1]:>8,.0f} {shown:>19}"
            )
            if name != ours:
                FIGURES[f"DurableQueue vs {name.split(' 0.')[0]}, {operation} batch {batch}"] = {
                    "value": ratio,
                    "better": "higher",
                }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--size-items", type=int, default=None, help="items for part 3")
    parser.add_argument(
        "--part", type=int, choices=(1, 2, 3, 4), action="append", help="run only these parts"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds of part 4")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    parts = set(args.part or (1, 2, 3, 4))
    if args.quick:
        if 1 in parts:
            bench_durable(items_single=500, items_batch=5_000, repeats=1)
        if 2 in parts:
            bench_priority(items=20_000, repeats=3)
        if 3 in parts:
            bench_size(items=args.size_items or 20_000, backlog=1_000)
        if 4 in parts:
            bench_peers(single=300, batched=3_000, rounds=args.rounds or 3)
    else:
        if 1 in parts:
            bench_durable(items_single=3_000, items_batch=50_000, repeats=3)
        if 2 in parts:
            bench_priority(items=200_000, repeats=3)
        if 3 in parts:
            bench_size(items=args.size_items or 1_000_000, backlog=10_000)
        if 4 in parts:
            bench_peers(single=3_000, batched=30_000, rounds=args.rounds or 5)
    if args.json is not None:
        report = {"figures": FIGURES, "rates": RATES, "load_average": os.getloadavg()}
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    if "PIPELINE_BENCH_JSON" in os.environ:
        Path(os.environ["PIPELINE_BENCH_JSON"]).write_text(json.dumps(FIGURES), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
