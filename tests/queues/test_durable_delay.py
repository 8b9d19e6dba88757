"""Tests for a durable queue's retry delay (a not-before time in the file) and lease renewal."""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

import pytest

from pipeline import Empty
from pipeline.queues.durable import APPLICATION_ID, SCHEMA_VERSION, DurableQueue
from pipeline.queues.errors import LeaseLost

WAIT = 5.0

# The schema as the first files of version 1 had it, before lapses were counted apart
# and before items had a not-before time.
VERSION_1 = (
    "CREATE TABLE queues (name TEXT PRIMARY KEY, codec TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,"
    " priority INTEGER NOT NULL, state INTEGER NOT NULL DEFAULT 0, lease_id TEXT,"
    " lease_owner TEXT, lease_expires REAL, attempts INTEGER NOT NULL DEFAULT 0,"
    " enqueued REAL NOT NULL, payload BLOB NOT NULL)",
    "CREATE INDEX items_order ON items (queue, state, priority, id)",
    "CREATE TABLE dead (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, priority INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL, enqueued REAL NOT NULL, died REAL NOT NULL,"
    " error TEXT NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE results (task_id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
    " ok INTEGER NOT NULL, value BLOB, error TEXT, finished REAL NOT NULL)",
)


# The schema of version 1 once retries could wait: a delayed retry was a ready row
# (state 0) with a not-before time, and the claim looked at that time row by row.
VERSION_1_WITH_DELAYS = (
    *VERSION_1[:1],
    VERSION_1[1].replace("payload BLOB NOT NULL)", "payload BLOB NOT NULL,")
    + " lapses INTEGER NOT NULL DEFAULT 0, not_before REAL)",
    *VERSION_1[2:],
)


def not_before(path: Path, item_id: int) -> float | None:
    with sqlite3.connect(path) as raw:
        value: float | None = raw.execute(
            "SELECT not_before FROM items WHERE id = ?", (item_id,)
        ).fetchone()[0]
    raw.close()
    return value


def test_a_nack_with_a_delay_keeps_the_item_back_across_objects_and_reopens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "delay.db"
    with DurableQueue[str](path, "jobs") as jobs:
        jobs.put("call the service")
        leased = jobs.get()
        nacked_at = time.time()
        jobs.nack(leased, "service down", delay=3600)
        with pytest.raises(Empty):
            jobs.get(block=False)
        other = DurableQueue[str](path, "jobs")  # another consumer of the file
        with other, pytest.raises(Empty):
            other.get(block=False)
    with DurableQueue[str](path, "jobs") as reopened:  # a restart: the delay still holds
        with pytest.raises(Empty):
            reopened.get(block=False)
        counts = reopened.counts()
        assert (counts.ready, counts.delayed, counts.leased) == (0, 1, 0)
    stored = not_before(path, leased.id)
    assert stored is not None
    assert stored >= nacked_at + 3600


def test_a_delayed_item_is_ready_once_its_time_has_come(tmp_path: Path) -> None:
    path = tmp_path / "delay.db"
    with DurableQueue[str](path, "jobs") as jobs:
        jobs.put_many(["a", "b"])
        first = jobs.get()
        jobs.nack(first, "try later", delay=0.2)
        assert jobs.get(block=False).item == "b"  # the delayed one does not block the next
        again = jobs.get(timeout=WAIT)
        assert (again.id, again.attempts) == (first.id, 2)
        stored = not_before(path, first.id)
        assert stored is not None
        assert time.time() >= stored
        jobs.nack(again, "at once")  # no delay: ready now, the old time is gone
        assert not_before(path, first.id) is None
        assert jobs.get(block=False).id == first.id


def test_a_nack_delay_goes_through_the_seconds_check(tmp_path: Path) -> None:
    with DurableQueue[str](tmp_path / "delay.db") as jobs:
        jobs.put("x")
        leased = jobs.get()
        for bad in (math.nan, math.inf, -1.0):
            refused = f"delay must be >= 0 seconds and finite, got {bad}"
            with pytest.raises(ValueError, match=refused):
                jobs.nack(leased, delay=bad)
        with pytest.raises(TypeError, match="delay must be a number, got str"):
            jobs.nack(leased, delay="1")  # type: ignore[arg-type]
        jobs.nack(leased)  # the failed calls changed nothing
        assert jobs.get(block=False).attempts == 2


def test_a_file_from_before_retries_could_wait_gets_the_column_and_keeps_its_items(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.execute("PRAGMA journal_mode = WAL")
        for statement in VERSION_1:
            raw.execute(statement)
        raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        raw.execute("PRAGMA user_version = 1")
        raw.execute("INSERT INTO queues VALUES ('jobs', 'json', 0)")
        raw.execute(
            "INSERT INTO items (queue, priority, enqueued, payload) VALUES ('jobs', 0, 0, ?)",
            (b'"kept"',),
        )
    raw.close()
    with DurableQueue[str](path, "jobs") as jobs:
        leased = jobs.get(block=False)
        assert leased.item == "kept"
        jobs.nack(leased, "later", delay=3600)
        with pytest.raises(Empty):
            jobs.get(block=False)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in raw.execute("PRAGMA table_info(items)")}
    raw.close()
    assert {"lapses", "not_before"} <= columns


def test_renew_extends_a_held_lease_and_refuses_a_lost_one(tmp_path: Path) -> None:
    path = tmp_path / "renew.db"
    with DurableQueue[str](path, "jobs", visibility_timeout=60) as jobs:
        jobs.put_many(["a", "b"])
        first, second = jobs.get_many(2)
        renewed_at = time.time()
        jobs.renew([first], 3600)
        with sqlite3.connect(path) as raw:
            expires = dict(raw.execute("SELECT id, lease_expires FROM items").fetchall())
        raw.close()
        assert expires[first.id] >= renewed_at + 3600 > expires[second.id]
        jobs.ack(second)
        lost = "1 of 2 leases in queue 'jobs' of '.*' are no longer held; nothing was renewed"
        with pytest.raises(LeaseLost, match=lost):
            jobs.renew([first, second])
        with pytest.raises(ValueError, match="seconds must be > 0 seconds and finite, got nan"):
            jobs.renew([first], math.nan)
        jobs.ack(first)  # still held


def test_renew_takes_back_a_lapsed_lease_nobody_claimed_since(tmp_path: Path) -> None:
    path = tmp_path / "renew.db"
    with DurableQueue[str](path, "jobs", visibility_timeout=60) as jobs:
        jobs.put("a")
        leased = jobs.get()
        with jobs.transaction() as connection:  # its lease runs out
            connection.execute("UPDATE items SET lease_expires = 0 WHERE id = ?", (leased.id,))
        assert jobs.release_expired() == 1
        jobs.renew([leased])  # the consumer is alive after all: its lease again
        with pytest.raises(Empty):
            jobs.get(block=False)
        assert jobs.counts().leased == 1
        jobs.ack(leased)
        assert jobs.qsize() == 0
        jobs.put("b")
        lapsing = jobs.get()
        with jobs.transaction() as connection:
            connection.execute("UPDATE items SET lease_expires = 0 WHERE id = ?", (lapsing.id,))
        assert jobs.release_expired() == 1
        again = jobs.get()  # claimed by another delivery: the first lease is gone for good
        with pytest.raises(LeaseLost):
            jobs.renew([lapsing])
        assert again.attempts == 1  # the lapse was not counted as an attempt
        jobs.ack(again)


def test_counts_tell_delayed_retries_from_ready_ones(tmp_path: Path) -> None:
    with DurableQueue[str](tmp_path / "delay.db", "jobs") as jobs:
        jobs.put_many(["a", "b", "c"])
        first, second = jobs.get_many(2)
        jobs.nack(first, "try later", delay=3600)
        jobs.nack(second, "try again")
        counts = jobs.counts()
        assert (counts.ready, counts.delayed, counts.leased) == (2, 1, 0)
        assert sorted(leased.item for leased in jobs.get_many(10)) == ["b", "c"]
        counts = jobs.counts()
        assert (counts.ready, counts.delayed, counts.leased) == (0, 1, 2)


def test_a_file_of_schema_version_1_with_delayed_retries_opens_and_keeps_every_item(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.execute("PRAGMA auto_vacuum = INCREMENTAL")
        raw.execute("PRAGMA journal_mode = WAL")
        for statement in VERSION_1_WITH_DELAYS:
            raw.execute(statement)
        raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        raw.execute("PRAGMA user_version = 1")
        raw.execute("INSERT INTO queues VALUES ('jobs', 'json', 0)")
        rows = [  # (payload, state, not_before, attempts)
            (b'"ready"', 0, None, 0),
            (b'"waits"', 0, time.time() + 3600, 1),
            (b'"due"', 0, 1.0, 1),
            (b'"leased"', 1, None, 1),
        ]
        for payload, state, ready_at, attempts in rows:
            raw.execute(
                "INSERT INTO items (queue, priority, state, lease_id, lease_owner,"
                " lease_expires, attempts, enqueued, payload, not_before)"
                " VALUES ('jobs', 0, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    *(state, "held" if state else None, "elsewhere:1" if state else None),
                    *(time.time() + 3600 if state else None, attempts, payload, ready_at),
                ),
            )
    raw.close()
    with DurableQueue[str](path, "jobs", read_only=True) as looking:  # the old file, as it is
        assert looking.counts().ready + looking.counts().delayed == 3
    with DurableQueue[str](path, "jobs") as jobs:
        counts = jobs.counts()
        assert (counts.ready, counts.delayed, counts.leased) == (2, 1, 1)
        taken = jobs.get_many(10, block=False)
        assert [(leased.item, leased.attempts) for leased in taken] == [("ready", 1), ("due", 2)]
        with pytest.raises(Empty):
            jobs.get(block=False)  # "waits" still waits
        jobs.ack_many(taken)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        left = raw.execute("SELECT payload FROM items ORDER BY id").fetchall()
    raw.close()
    assert left == [(b'"waits"',), (b'"leased"',)]
    with DurableQueue[str](path, "jobs") as reopened:
        counts = reopened.counts()
        assert (counts.ready, counts.delayed, counts.leased) == (0, 1, 1)
