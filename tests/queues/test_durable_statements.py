"""What keeps a durable queue fast, pinned by the statements it runs (never by timings).

A put of one item is one statement; a batch is one transaction; a claim finds the ready
rows in an index that covers its WHERE and ORDER BY, sorts nothing, and a backlog of
delayed retries costs it nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline import Empty
from pipeline.queues.durable import DurableQueue


@contextmanager
def statements_of(queue: DurableQueue[Any]) -> Iterator[list[str]]:
    """Record the SQL this thread's connection runs in the block (executemany: one per row)."""
    seen: list[str] = []
    connection = queue.connection()
    connection.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        connection.set_trace_callback(None)


def verbs(statements: list[str]) -> list[str]:
    return [" ".join(sql.split()[:2]) for sql in statements]


def plan_of(connection: sqlite3.Connection, sql: str) -> list[str]:
    return [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}")]


def test_a_put_of_one_item_is_one_statement_and_a_batch_one_transaction(tmp_path: Path) -> None:
    with DurableQueue[int](tmp_path / "queue.db") as queue:
        with statements_of(queue) as seen:
            queue.put(1)
        assert verbs(seen) == ["INSERT INTO"]  # autocommit: durable when it returns
        with statements_of(queue) as seen:
            queue.put_many([2, 3, 4])
        assert verbs(seen) == ["BEGIN IMMEDIATE", *["INSERT INTO"] * 3, "COMMIT"]
        bounded = DurableQueue[int](tmp_path / "queue.db", maxsize=10)
        with bounded, statements_of(bounded) as seen:  # a bound is checked in the transaction
            bounded.put(5)
        assert verbs(seen) == ["BEGIN IMMEDIATE", "SELECT count(*)", "INSERT INTO", "COMMIT"]
        assert [leased.item for leased in queue.get_many(10)] == [1, 2, 3, 4, 5]


def test_a_claim_is_one_statement_and_an_ack_of_one_item_too(tmp_path: Path) -> None:
    with DurableQueue[int](tmp_path / "queue.db") as queue:
        queue.put_many(list(range(200)))
        queue.ack(queue.get())  # the first get also looks for lapsed leases
        with statements_of(queue) as seen:
            batch = queue.get_many(100)
        assert len(batch) == 100
        claims = [sql for sql in seen if sql.startswith("UPDATE items SET state = 1")]
        assert len(claims) == 1
        assert seen[0] == "BEGIN IMMEDIATE"
        assert seen[-1] == "COMMIT"
        assert len(seen) <= 4  # BEGIN, due retries made ready, the claim, COMMIT
        with statements_of(queue) as seen:
            queue.ack(batch[0])
        assert verbs(seen) == ["DELETE FROM"]
        with statements_of(queue) as seen:
            queue.ack_many(batch[1:])
        assert verbs(seen) == ["BEGIN IMMEDIATE", *["DELETE FROM"] * 99, "COMMIT"]


def test_a_claim_reads_ready_rows_from_a_covering_index_and_sorts_nothing(
    tmp_path: Path,
) -> None:
    with DurableQueue[int](tmp_path / "queue.db") as queue:
        queue.put_many(list(range(50)), priority=1)
        queue.put_many(list(range(50)), priority=0)
        queue.nack(queue.get(), "later", delay=3600)
        with statements_of(queue) as seen:
            queue.get_many(10)
        connection = queue.connection()
        claim = next(sql for sql in seen if sql.startswith("UPDATE items SET state = 1"))
        plan = plan_of(connection, claim)
        assert any("USING COVERING INDEX" in step for step in plan), plan
        assert not any("TEMP B-TREE" in step or step.startswith("SCAN") for step in plan), plan
        for sql in seen:  # every statement of the claim: an index, no sort, no full scan
            if sql.startswith(("UPDATE", "SELECT")):
                steps = plan_of(connection, sql)
                assert not any("TEMP B-TREE" in step or step.startswith("SCAN") for step in steps)


def instructions(connection: sqlite3.Connection, call: Any) -> int:
    """Count the SQLite virtual machine instructions `call` runs on `connection`."""
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    connection.set_progress_handler(tick, 1)
    try:
        call()
    finally:
        connection.set_progress_handler(None, 1)
    return count


def claim_cost(path: Path, delayed: int) -> int:
    with DurableQueue[int](path) as queue:
        queue.put_many(list(range(delayed)))
        for leased in queue.get_many(delayed) if delayed else []:
            queue.nack(leased, "later", delay=3600)
        queue.put(-1)
        queue.ack(queue.get())  # the first get also looks for lapsed leases
        queue.put(-2)
        cost = instructions(queue.connection(), lambda: queue.ack(queue.get(block=False)))
        with pytest.raises(Empty):
            queue.get(block=False)
        assert queue.qsize() == delayed  # the retries, still waiting
    return cost


def test_a_backlog_of_delayed_retries_costs_a_claim_nothing(tmp_path: Path) -> None:
    alone = claim_cost(tmp_path / "alone.db", 0)
    behind_retries = claim_cost(tmp_path / "behind.db", 1000)
    assert behind_retries < alone * 1.5, (alone, behind_retries)
