"""A durable queue in one SQLite file: items survive a crash, are leased, and are acknowledged.

`DurableQueue` stores each item as a row (standard library `sqlite3` only). A put is
durable when it returns. A get *leases* items: they stay in the file, marked with a
lease id and an expiry, until `ack_many` deletes them, `nack` returns them (counting
the attempt; after `max_attempts` they move to the dead-letter table), or the lease
lapses: when it expires, or when the file is next opened and the process that held it
is gone. So a consumer killed at any moment loses nothing; what it had leased comes
back, with no attempt counted (a lapse is counted apart, against `max_lapses`).

How it uses SQLite, and why:
- WAL mode; `synchronous=NORMAL` survives a killed process, `FULL` also power loss.
- One connection per thread, in autocommit mode with explicit transactions: a shared
  connection can return wrong results through its statement cache (cpython#118172).
  A thread's connection is closed when the thread ends, and a forked child opens its
  own (a connection must not cross a fork; the parent's are left alone).
- `BEGIN IMMEDIATE` for every transaction that writes: it takes the write lock up
  front, so two writers wait for each other (busy timeout) instead of failing with
  "database is locked" half-way. A put or an ack of one item is one statement, which
  SQLite runs as a transaction of its own (it too waits for the write lock).
- A batch is claimed by one `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`,
  whose ready rows come from one index in the order they are served. A nack with a
  delay gives the row a state of its own (delayed), in an index of its own; each
  claim first makes ready the delayed rows whose time has come, so a backlog of
  delayed retries costs a claim nothing.
- Acked rows are deleted; their pages are reused, so the file is bounded by the
  largest backlog. It is created with `auto_vacuum=INCREMENTAL`, so `compact()` gives
  free pages back to the file system.

One file can hold several named queues (the `name` argument), which is what makes a
same-file sink possible: outputs put into one queue and the inputs acked from another
commit in a single transaction (see `pipeline.queues.resumable`).

A `DurableQueue` implements the engine's `LinkQueue` protocol (batch put, batch get,
shutdown, statistics), but it is meant as a source or a sink of a run rather than an
inner link: its gets return `Leased` records, not bare items, because an item is only
done when acknowledged, and the engine's end-of-stream marker, an in-memory object of
one run, is refused rather than stored where a later run would find it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from queue import Empty, Full
from typing import Any, Generic, Literal, NamedTuple, NoReturn, TypeVar

from pipeline._checks import integer, non_empty_str, positive_int, seconds
from pipeline._interrupts import ctrl_c_held
from pipeline.errors import ShutDown
from pipeline.queues.codecs import JSON, Codec
from pipeline.queues.errors import (
    CodecError,
    CorruptItem,
    LeaseLost,
    NotAQueueFile,
    QueueDamaged,
    QueueFileError,
    QueueLocked,
    QueueReadOnly,
    SchemaTooNew,
)
from pipeline.safequeue import QueueStatistics
from pipeline.worker import END_OF_STREAM

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "DeadItem",
    "DurableQueue",
    "Leased",
    "QueueCounts",
    "queues_in",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x50504C51  # "PPLQ", in the SQLite header: this file is a pipeline queue
SCHEMA_VERSION = 2  # PRAGMA user_version; a newer file is refused, never rewritten
_END_OF_STREAM_TYPE = type(END_OF_STREAM)
READY, LEASED, DELAYED = 0, 1, 2  # DELAYED: a nacked item waiting for its not_before time
_LAPSED = "lapsed:"  # prefixed to the lease id a lapse leaves on a ready row (late acks)

# Only the delayed rows: a put or a claim of a ready row never writes to it.
_DELAYED_INDEX = "CREATE INDEX items_delayed ON items (queue, not_before) WHERE state = 2"
_SCHEMA = (
    "CREATE TABLE queues (name TEXT PRIMARY KEY, codec TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,"
    " priority INTEGER NOT NULL, state INTEGER NOT NULL DEFAULT 0, lease_id TEXT,"
    " lease_owner TEXT, lease_expires REAL, attempts INTEGER NOT NULL DEFAULT 0,"
    " enqueued REAL NOT NULL, payload BLOB NOT NULL, lapses INTEGER NOT NULL DEFAULT 0,"
    " not_before REAL)",  # a nacked item's retry time (wall clock); NULL: at once
    # Covers the claim: the ready rows of a queue in the order they are served.
    "CREATE INDEX items_order ON items (queue, state, priority, id)",
    _DELAYED_INDEX,
    "CREATE TABLE dead (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, priority INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL, enqueued REAL NOT NULL, died REAL NOT NULL,"
    " error TEXT NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE results (task_id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
    " ok INTEGER NOT NULL, value BLOB, error TEXT, finished REAL NOT NULL)",
)
_INSERT = "INSERT INTO items (queue, priority, enqueued, payload) VALUES (?, ?, ?, ?)"
_DUE_NOW = (  # delayed rows whose retry time has come are ready: run before each claim
    "UPDATE items SET state = 0 WHERE queue = ? AND state = 2 AND not_before <= ?"
)
_CLAIM = (
    "UPDATE items SET state = 1, lease_id = ?, lease_owner = ?, lease_expires = ?,"
    " attempts = attempts + 1 WHERE id IN (SELECT id FROM items WHERE queue = ? AND state = 0"
    " ORDER BY priority, id LIMIT ?) RETURNING id, priority, attempts, payload"
)
_CLAIM_ONE = (  # the claim of one row, around a damaged page
    "UPDATE items SET state = 1, lease_id = ?, lease_owner = ?, lease_expires = ?,"
    " attempts = attempts + 1 WHERE id = ? AND state = 0"
    " RETURNING id, priority, attempts, payload"
)
_ACK = "DELETE FROM items WHERE id = ? AND lease_id IN (?, ?)"
# One statement, so one snapshot. A delayed row whose time has come counts as ready
# (the next claim makes it so).
_COUNTS = (
    "SELECT (SELECT count(*) FROM items WHERE queue = ?1 AND state = 0),"
    " (SELECT count(*) FROM items WHERE queue = ?1 AND state = 1),"
    " (SELECT count(*) FROM items WHERE queue = ?1 AND state = 2),"
    " (SELECT count(*) FROM items WHERE queue = ?1 AND state = 2 AND not_before <= ?2),"
    " (SELECT count(*) FROM dead WHERE queue = ?1),"
    " (SELECT min(enqueued) FROM items WHERE queue = ?1 AND state = 0),"
    " (SELECT min(enqueued) FROM items WHERE queue = ?1 AND state = 2 AND not_before <= ?2)"
)
_TO_DEAD = (
    "INSERT INTO dead (id, queue, priority, attempts, enqueued, died, error, payload)"
    " SELECT id, queue, priority, attempts, enqueued, ?, ?, payload FROM items WHERE id = ?"
)


class Leased(NamedTuple, Generic[T]):
    """An item taken from a durable queue: it stays stored until acked with its lease."""

    id: int
    item: T
    priority: int
    attempts: int  # this delivery's number: 1 + the failed (nacked) ones before it
    lease_id: str


@dataclass(frozen=True, slots=True)
class DeadItem:
    """A row of the dead-letter table: an item given up on, and why."""

    id: int
    payload: bytes
    priority: int
    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """How many items of one queue are ready, leased, dead and delayed; the oldest ready age.

    `delayed` counts the items nacked with a `delay` whose time has not come yet; they
    are not in `ready`.
    """

    name: str
    codec: str
    ready: int
    leased: int
    dead: int
    oldest_ready_seconds: float | None
    delayed: int = 0


class DurableQueue(Generic[T]):
    """Open (or create) the queue `name` in the SQLite file at `path`.

    Opening releases the leases held by processes of this host that are no longer
    running (a consumer that was killed), so their items are ready again at once.

    Every SQLite error reaches the caller as a `QueueFileError` naming the file and
    saying what to do (`QueueLocked`, `QueueReadOnly`, `QueueDamaged`, `NotAQueueFile`),
    with the SQLite error chained; every method after `close()` raises `ShutDown`.

    Args:
        path: the queue file; created if missing.
        name: which queue of the file (one file may hold several).
        codec: how items become bytes (JSON by default; see `pipeline.queues.codecs`).
        maxsize: the most items (ready and leased) the queue holds; 0: unbounded.
        visibility_timeout: seconds a lease lasts before its items are ready again.
        max_attempts: failed deliveries (nacks) before an item goes to the dead-letter
            table; None: never. A lease that lapses (its consumer was killed or too
            slow) is not a failed attempt.
        max_lapses: lapsed leases before an item goes to the dead-letter table (an item
            that crashes every consumer it reaches); None: never.
        default_priority: the priority of items put without one (lower is served first).
        synchronous: "NORMAL" (survives a killed process) or "FULL" (also power loss).
        timeout: seconds a transaction waits for another writer, or another program
            holding the file locked, before `QueueLocked`.
        poll_interval: how often a blocked get or put looks for changes made by other
            processes (changes made through this object wake it at once).
        read_only: only look: the file is opened read-only (as SQLite's immutable file
            when no other process has it open, so nothing is created beside it), the
            queue must exist, no lease is released, and every write raises
            `QueueReadOnly`. This is how `pipeline queue status` looks.

    Raises:
        NotAQueueFile: the file is not SQLite, or is another application's database.
        SchemaTooNew: the file was written by a newer version of this package.
        QueueLocked: another connection held the file locked for longer than `timeout`.
        QueueReadOnly: the file (or its folder) cannot be written; open it `read_only`.
        QueueDamaged: SQLite found the file damaged.
        CodecError: the queue was created with another codec.
        FileNotFoundError, KeyError: with `read_only`, no such file, or no such queue in it.
        TypeError, ValueError: an argument of the wrong type or out of range, named.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str = "default",
        *,
        codec: Codec = JSON,
        maxsize: int = 0,
        visibility_timeout: float = 60.0,
        max_attempts: int | None = 5,
        max_lapses: int | None = 20,
        default_priority: int = 0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        timeout: float = 30.0,
        poll_interval: float = 0.05,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.name = non_empty_str("name", name)
        if not isinstance(getattr(codec, "name", None), str) or not (
            callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))
        ):
            raise TypeError(
                f"codec must have a str name and encode/decode methods, got {type(codec).__name__}"
            )
        self.codec = codec
        if integer("maxsize", maxsize) < 0:
            raise ValueError(f"maxsize must be >= 0 (0 means unbounded), got {maxsize}")
        self.maxsize = maxsize
        self.visibility_timeout = seconds("visibility_timeout", visibility_timeout)
        self.max_attempts = (
            None if max_attempts is None else positive_int("max_attempts", max_attempts)
        )
        self.max_lapses = None if max_lapses is None else positive_int("max_lapses", max_lapses)
        self.default_priority = integer("default_priority", default_priority)
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.synchronous = synchronous
        self.timeout = seconds("timeout", timeout)
        self.poll_interval = seconds("poll_interval", poll_interval)
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only must be a bool, got {type(read_only).__name__}")
        self.read_only = read_only
        self._host = socket.gethostname()
        # `_changed` (with its lock) guards the flags below and _closers; it is
        # notified after every commit through this object that adds, returns or removes
        # items, and on shutdown, so waiters here wake at once; waits on other
        # processes' changes are bounded by poll_interval. `_waiting` counts the threads
        # that may wait on it (counted before they look again); a commit that finds none
        # (read without the lock) skips the notify: a thread counted after that read
        # looks after the commit, so it sees what the commit stored.
        self._changed = threading.Condition()
        self._waiting = 0
        # One finalizer per open connection: it closes the connection when its thread
        # ends (the thread's `_local` entry goes) or when close() calls it.
        self._closers: set[weakref.finalize[Any, Any]] = set()
        self.is_shutdown = False
        self._immediate = False
        self._closed = False
        self._high_water_mark = 0
        self._put_blocked_seconds = 0.0
        self._get_waited_seconds = 0.0
        self._local = threading.local()
        # Gets look for lapsed leases at most this often (a scan of the leased rows);
        # unguarded: a race only makes two threads scan.
        self._lapse_check_interval = min(1.0, self.visibility_timeout / 4)
        self._next_lapse_check = 0.0
        # Ids of rows on damaged pages, passed over by claims (unguarded: a race only
        # makes two threads try one).
        self._unreadable: set[int] = set()
        _OPEN_QUEUES.add(self)
        try:
            with self._file_errors(opening=True):
                self._prepare_file()
        except BaseException:
            self.close()
            raise

    @property
    def owner(self) -> str:
        """Return the name this process leases in: host and pid, read at each use (fork)."""
        return f"{self._host}:{os.getpid()}"

    # The link protocol and the queue API.

    def put(
        self,
        item: T,
        block: bool = True,
        timeout: float | None = None,
        *,
        priority: int | None = None,
    ) -> None:
        """Store `item`; durable on return. See `put_many`."""
        if self.maxsize or self.is_shutdown or isinstance(item, _END_OF_STREAM_TYPE):
            self.put_many([item], block, timeout, priority=priority)  # may wait, or refuse
            return
        # The common case, one statement and no more Python than it needs.
        if timeout is not None:
            seconds("timeout", timeout, zero_allowed=True)
        rank = self.default_priority if priority is None else integer("priority", priority)
        try:
            payload = self.codec.encode(item)
        except Exception:
            payload = self._encode([item])[0]  # raises the CodecError naming the item
        if not self._insert_alone(payload, rank):
            self.put_many([item], block, timeout, priority=priority)

    def put_many(
        self,
        items: Iterable[T],
        block: bool = True,
        timeout: float | None = None,
        *,
        copy: bool = True,
        priority: int | None = None,
    ) -> None:
        """Store all of `items` in one transaction, in order: all or nothing, durable on return.

        Every item is encoded before the transaction starts, so an item the codec
        refuses stores nothing of its batch. With a `maxsize`, blocks until the whole
        batch fits (`queue.Full` after `timeout`). `copy` is accepted for the link
        protocol; the items are encoded, never kept.

        Raises:
            CodecError: the codec cannot encode an item (its index and type are named).
            TypeError: the batch holds the engine's end-of-stream marker.
            ValueError: the batch is larger than `maxsize`.
            queue.Full: no room in time.
            ShutDown: the queue has been shut down or closed.
        """
        batch = list(items)
        payloads = self._encode(batch)
        if 0 < self.maxsize < len(payloads):
            raise ValueError(
                f"put_many got {len(payloads)} items, "
                f"more than maxsize={self.maxsize} of {self!r} could ever hold"
            )
        rank = self.default_priority if priority is None else integer("priority", priority)
        if not payloads:
            return
        if len(payloads) == 1 and not self.maxsize and not self.is_shutdown:
            # Nothing to wait for: one autocommit INSERT is a transaction of its own.
            seconds("timeout", timeout, zero_allowed=True, none_allowed=True)
            if self._insert_alone(payloads[0], rank):
                return
        self._wait_until(block, timeout, Full, lambda: self._insert(payloads, rank))

    def get_many(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Leased[T]]:
        """Lease up to `max_items` ready items, most urgent first (then oldest first).

        Blocks until at least one is ready, as `SafeQueue.get_many` does. The items stay
        stored until `ack_many`; after `visibility_timeout` seconds without an ack they
        are ready again for anyone.

        Raises:
            CorruptItem: a stored item cannot be decoded; it was moved to the dead-letter
                table (kept), and the next call goes on with the others.
            queue.Empty: nothing ready in time.
            ShutDown: shut down and nothing ready, or shut down immediately, or closed.
        """
        positive_int("max_items", max_items)
        leased: list[Leased[T]] = self._wait_until(
            block, timeout, Empty, lambda: self._claim_holding_ctrl_c(max_items)
        )
        return leased

    def get(self, block: bool = True, timeout: float | None = None) -> Leased[T]:
        """Lease one item; see `get_many`."""
        return self.get_many(1, block, timeout)[0]

    def ack_many(self, leased: Iterable[Leased[T]]) -> None:
        """Delete leased items for good, in one transaction; they are done.

        A lease that lapsed still acks its item as long as no other consumer has taken
        the item since (as SQS lets such a delete succeed): the work was done.

        Raises:
            LeaseLost: a lease expired and its item went to another consumer; nothing
                of this call was deleted.
        """
        entries = [(item.id, item.lease_id, _LAPSED + item.lease_id) for item in leased]
        if len(entries) == 1:
            connection = self.connection()
            if not connection.in_transaction:  # one DELETE is a transaction of its own
                try:
                    deleted = connection.execute(_ACK, entries[0]).rowcount
                except sqlite3.Error as exc:
                    raise self._file_error(exc) from exc
                if deleted != 1:
                    raise self._lease_lost(1, 1)
                return
        with self._transaction() as connection:
            self._delete_leased(connection, entries)

    def ack(self, leased: Leased[T]) -> None:
        """Delete one leased item; see `ack_many`."""
        self.ack_many([leased])

    def nack(self, leased: Leased[T], error: str = "nacked", *, delay: float = 0.0) -> None:
        """Return a leased item to the queue, or to the dead-letter table after `max_attempts`.

        With a `delay` (seconds), the item is handed out again only once that time has
        passed: the time is stored in the file, so it holds for every consumer of the
        file and across a restart (timed by the wall clock, as leases are).

        Raises:
            LeaseLost: the lease expired and the item went to another consumer.
            TypeError, ValueError: `delay` is not a finite number of seconds >= 0.
        """
        seconds("delay", delay, zero_allowed=True)
        with self._transaction() as connection:
            self.nack_in(connection, leased, error, delay=delay)
        self._notify()

    def renew(self, leased: Iterable[Leased[T]], seconds: float | None = None) -> None:
        """Extend leases to `seconds` from now (default: `visibility_timeout`), in one transaction.

        A consumer working on items longer than a lease calls it now and then (a
        heartbeat), so that nobody else takes them over while it works. A lease that
        lapsed but whose item nobody has claimed since is taken back, as a late ack
        would count.

        Raises:
            LeaseLost: a lease is no longer held (another consumer claimed the item, or
                it was acked); nothing of this call was renewed.
            TypeError, ValueError: `seconds` is not a finite number of seconds > 0.
        """
        length = self.visibility_timeout if seconds is None else _lease_length(seconds)
        expires = time.time() + length
        entries = [
            (item.lease_id, self.owner, expires, item.id, item.lease_id, _LAPSED + item.lease_id)
            for item in leased
        ]
        with self._transaction() as connection:
            before = connection.total_changes
            connection.executemany(
                "UPDATE items SET lease_id = ?, lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + 1 - state, lapses = lapses - 1 + state, state = 1"
                " WHERE id = ? AND lease_id IN (?, ?)",
                entries,
            )
            renewed = connection.total_changes - before
            if renewed != len(entries):
                raise LeaseLost(
                    f"{len(entries) - renewed} of {len(entries)} leases in queue {self.name!r} "
                    f"of {str(self.path)!r} are no longer held; nothing was renewed"
                )

    def shutdown(self, immediate: bool = False) -> None:
        """Refuse further puts here; gets raise `ShutDown` once nothing is ready.

        With `immediate`, gets raise `ShutDown` at once and blocked callers wake. Nothing
        stored is ever discarded: the items stay in the file for the next open.
        """
        with self._changed:
            self.is_shutdown = True
            self._immediate = self._immediate or immediate
            self._changed.notify_all()

    def statistics(self) -> QueueStatistics:
        """Return the depth (ready and leased) now, and what this object saw and waited.

        The high-water mark is the largest depth this object observed (on puts into a
        bounded queue and on calls of this method), not one kept in the file.
        """
        depth = self._count("SELECT count(*) FROM items WHERE queue = ?")
        with self._changed:
            self._high_water_mark = max(self._high_water_mark, depth)
            return QueueStatistics(
                depth=depth,
                maxsize=self.maxsize,
                high_water_mark=self._high_water_mark,
                put_blocked_seconds=self._put_blocked_seconds,
                get_waited_seconds=self._get_waited_seconds,
            )

    def qsize(self) -> int:
        """Return the items stored now, ready or leased (a snapshot)."""
        return self._count("SELECT count(*) FROM items WHERE queue = ?")

    # Looking inside, dead letters and housekeeping.

    def counts(self) -> QueueCounts:
        """Return the ready, leased, dead and delayed counts of this queue; its oldest ready age.

        A delayed retry (a `nack` with a `delay`) counts as delayed until its time has
        come, and as ready from then on.
        """
        now = time.time()
        with self._file_errors():
            ready, leased, delayed, due, dead, oldest, oldest_due = (
                self.connection().execute(_COUNTS, (self.name, now)).fetchone()
            )
        if oldest is None or (oldest_due is not None and oldest_due < oldest):
            oldest = oldest_due
        return QueueCounts(
            self.name,
            self.codec.name,
            ready + due,
            leased,
            dead,
            None if oldest is None else max(0.0, now - oldest),
            delayed - due,
        )

    def peek(self, max_items: int = 10) -> list[tuple[int, int, bytes]]:
        """Return (id, priority, payload bytes) of the next ready items, leasing nothing."""
        positive_int("max_items", max_items)
        with self._file_errors():
            rows = self.connection().execute(
                "SELECT id, priority, payload FROM items WHERE queue = ? AND state = 0"
                " ORDER BY priority, id LIMIT ?",
                (self.name, max_items),
            )
            return [(row[0], row[1], bytes(row[2])) for row in rows]

    def dead_letters(self, max_items: int = 100) -> list[DeadItem]:
        """Return the oldest dead-letter rows of this queue, payloads undecoded (maybe corrupt)."""
        positive_int("max_items", max_items)
        with self._file_errors():
            rows = self.connection().execute(
                "SELECT id, payload, priority, attempts, error FROM dead WHERE queue = ?"
                " ORDER BY id LIMIT ?",
                (self.name, max_items),
            )
            return [DeadItem(row[0], bytes(row[1]), row[2], row[3], row[4]) for row in rows]

    def requeue_dead(self) -> int:
        """Move this queue's dead-letter rows back to ready, attempts reset; return how many."""
        with self._transaction() as connection:
            moved = connection.execute(
                "INSERT INTO items (id, queue, priority, state, attempts, enqueued, payload)"
                " SELECT id, queue, priority, 0, 0, enqueued, payload FROM dead WHERE queue = ?",
                (self.name,),
            ).rowcount
            # A requeued task runs again: its stored failure no longer stands.
            connection.execute(
                "DELETE FROM results WHERE task_id IN (SELECT id FROM dead WHERE queue = ?)",
                (self.name,),
            )
            connection.execute("DELETE FROM dead WHERE queue = ?", (self.name,))
        self._notify()
        return moved

    def release_expired(self) -> int:
        """Make ready again the items whose lease expired (or go dead); return how many.

        Gets do this themselves; call it to see the count.
        """
        with self._transaction() as connection:
            released = self._release(connection, "lease_expires < ?", (time.time(),))
        if released:
            self._notify()
        return released

    def compact(self) -> int:
        """Give the file's free pages back to the file system and truncate the WAL; return the size.

        Blocks other writers for as long as it runs (a moment per thousand free pages).
        """
        connection = self.connection()
        with self._file_errors():
            # executescript, because a plain execute() of incremental_vacuum frees one page.
            connection.executescript("PRAGMA incremental_vacuum;")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return self.path.stat().st_size

    def consume(self, batch_size: int = 100) -> Generator[T]:
        """Yield the ready items one by one, acking each batch when the next is asked for.

        At least once: a batch is acked only after the loop body ran for all its items;
        if the loop stops early (`break`, an exception) the rest of the batch is
        returned to the queue. It ends when nothing is ready or the queue is shut down
        (`ShutDown` once it is closed). For a pipeline, use
        `run_resumable` instead, which acks only once the outputs are stored.
        """
        positive_int("batch_size", batch_size)
        while True:
            try:
                batch = self.get_many(batch_size, block=False)
            except Empty:
                return
            except ShutDown:
                if self._closed:
                    raise
                return
            done = 0
            try:
                for leased in batch:
                    yield leased.item
                    done += 1
            finally:
                if done == len(batch):
                    self.ack_many(batch)
                else:
                    self.ack_many(batch[:done])
                    self.release(batch[done:])

    def release(self, leased: Iterable[Leased[T]]) -> None:
        """Return leased items to ready without counting a failure (an early stop).

        A lease no longer held (lapsed, or taken over) is left as it is.
        """
        entries = [(item.id, item.lease_id) for item in leased]
        with self._transaction() as connection:
            connection.executemany(
                "UPDATE items SET state = 0, lease_id = NULL, lease_owner = NULL,"
                " lease_expires = NULL, attempts = attempts - 1"
                " WHERE id = ? AND lease_id = ? AND state = 1",
                entries,
            )
        self._notify()

    def close(self) -> None:
        """Close every connection this object opened; later calls raise `ShutDown`.

        Call it once no other thread uses the queue. Calling it again is harmless.
        """
        with self._changed:
            self._closed = True
            self.is_shutdown = self._immediate = True
            closers, self._closers = self._closers, set()
            self._changed.notify_all()
        for closer in closers:
            closer()

    def __enter__(self) -> DurableQueue[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DurableQueue({str(self.path)!r}, {self.name!r}, codec={self.codec.name!r})"

    # For the other modules of this extra: writes inside a caller's transaction.

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one `BEGIN IMMEDIATE` transaction of this thread's connection.

        Committed if the block returns, rolled back if it raises. This is how outputs
        stored elsewhere in the same file commit together with an ack.
        """
        with self._transaction() as connection:
            yield connection
        self._notify()

    def ack_in(self, connection: sqlite3.Connection, leased: Iterable[Leased[Any]]) -> None:
        """Delete leased items inside the caller's transaction (see `transaction`).

        Raises:
            LeaseLost: a lease is no longer held; the caller's transaction must roll back.
        """
        self._delete_leased(
            connection, [(item.id, item.lease_id, _LAPSED + item.lease_id) for item in leased]
        )

    def nack_in(
        self,
        connection: sqlite3.Connection,
        leased: Leased[Any],
        error: str,
        *,
        delay: float = 0.0,
    ) -> None:
        """Return a leased item (or bury it after `max_attempts`) inside the caller's transaction.

        With a `delay`, it is handed out again only after that many seconds (see `nack`).

        Raises:
            LeaseLost: the lease is no longer held; the caller's transaction must roll back.
        """
        ready_at = time.time() + seconds("delay", delay, zero_allowed=True) if delay else None
        self._check_held(connection, leased)
        self._return_rows(connection, [leased.id], error, ready_at)

    def bury_in(self, connection: sqlite3.Connection, leased: Leased[Any], error: str) -> None:
        """Move a leased item to the dead-letter table now, inside the caller's transaction.

        For a consumer that decides itself when an item is given up on (a task queue's
        retry policy), whatever `max_attempts` says.

        Raises:
            LeaseLost: the lease is no longer held; the caller's transaction must roll back.
        """
        self._check_held(connection, leased)
        connection.execute(_TO_DEAD, (time.time(), error, leased.id))
        connection.execute("DELETE FROM items WHERE id = ?", (leased.id,))

    def _check_held(self, connection: sqlite3.Connection, leased: Leased[Any]) -> None:
        """Raise `LeaseLost` unless `leased` is held, or lapsed with nobody holding it since.

        As for a late ack: the outcome of work that was done stands while no other
        consumer has taken the item.
        """
        owned = connection.execute(
            "SELECT 1 FROM items WHERE id = ? AND lease_id IN (?, ?)",
            (leased.id, leased.lease_id, _LAPSED + leased.lease_id),
        ).fetchone()
        if owned is None:
            raise LeaseLost(
                f"item {leased.id} of queue {self.name!r} in {str(self.path)!r}: lease "
                f"{leased.lease_id} expired and the item went to another consumer"
            )

    def wait_for_change(self, timeout: float) -> None:
        """Block until this object commits a change or shuts down, or `timeout` seconds pass.

        Changes made by other processes or objects do not wake it: callers loop with a
        bounded `timeout` (`poll_interval`) and look again.
        """
        timeout = seconds("timeout", timeout, zero_allowed=True)
        with self._changed:
            if not self._closed:
                self._waiting += 1
                try:
                    self._changed.wait(timeout)
                finally:
                    self._waiting -= 1

    def insert_in(
        self, connection: sqlite3.Connection, items: list[Any], priority: int | None = None
    ) -> list[int]:
        """Encode and insert `items` inside the caller's transaction; return their ids.

        Raises:
            CodecError: the codec cannot encode an item.
        """
        payloads = self._encode(items)
        rank = self.default_priority if priority is None else integer("priority", priority)
        return self._insert_rows(connection, payloads, rank)

    # Private helpers.

    def _encode(self, items: list[Any]) -> list[bytes]:
        if any(map(isinstance, items, repeat(_END_OF_STREAM_TYPE))):
            raise TypeError(
                "a DurableQueue cannot store the pipeline's end-of-stream marker: "
                "use it as a run's source or sink (run_resumable), not as an inner link"
            )
        encode = self.codec.encode
        try:
            return [encode(item) for item in items]
        except Exception as exc:
            index = next(i for i, item in enumerate(items) if not _encodes(encode, item))
            raise CodecError(
                f"codec {self.codec.name!r} cannot encode item {index} of the batch "
                f"({type(items[index]).__name__}): {exc}; nothing of the batch was stored "
                f"in {self!r}"
            ) from exc

    def _insert_alone(self, payload: bytes, priority: int) -> bool:
        """Insert one payload in one autocommit statement; False if in a transaction already.

        Inside a transaction (the caller's, or one a Ctrl-C left open) the statement would
        join it and not be durable on return: `_insert` handles that case.
        """
        connection = self.connection()
        if connection.in_transaction:
            return False
        try:
            connection.execute(_INSERT, (self.name, priority, time.time(), payload))
        except sqlite3.Error as exc:
            raise self._file_error(exc) from exc
        self._notify()
        return True

    def _insert(self, payloads: list[bytes], priority: int) -> bool:
        """Insert the payloads if they fit; return False (nothing written) if they do not."""
        with self._transaction() as connection:
            if self.maxsize:
                depth = connection.execute(
                    "SELECT count(*) FROM items WHERE queue = ?", (self.name,)
                ).fetchone()[0]
                with self._changed:
                    self._high_water_mark = max(self._high_water_mark, depth)
                if depth + len(payloads) > self.maxsize:
                    return False
            self._insert_rows(connection, payloads, priority, want_ids=False)
        self._notify()
        return True

    def _insert_rows(
        self,
        connection: sqlite3.Connection,
        payloads: list[bytes],
        priority: int,
        *,
        want_ids: bool = True,
    ) -> list[int]:
        now = time.time()
        connection.executemany(
            _INSERT, [(self.name, priority, now, payload) for payload in payloads]
        )
        if not want_ids:
            return []
        # Under the write lock, AUTOINCREMENT hands out consecutive ids.
        last = connection.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'items'"
        ).fetchone()[0]
        return list(range(last - len(payloads) + 1, last + 1))

    def _claim_holding_ctrl_c(self, max_items: int) -> list[Leased[T]] | None:
        """Claim with Ctrl-C held, so that a press is raised with the leases in hand.

        A press between the claim's COMMIT and the return would otherwise leave the
        items leased to nobody until their lease lapses; here they are released first.
        """
        leased: list[Leased[T]] | None = None
        try:
            with ctrl_c_held():
                leased = self._claim(max_items)
        except BaseException:
            if leased:
                try:
                    with ctrl_c_held():
                        self.release(leased)
                except Exception:
                    logger.exception(
                        "could not release %d items claimed as Ctrl-C came; "
                        "they return when their lease lapses",
                        len(leased),
                    )
            raise
        return leased

    def _claim(self, max_items: int) -> list[Leased[T]] | None:
        """Lease up to `max_items` ready items in one transaction; None if none is ready."""
        lease_id = os.urandom(16).hex()  # as random as uuid4().hex, a fifth of the cost
        now = time.time()
        try:
            with self._transaction() as connection:
                if now >= self._next_lapse_check:
                    self._next_lapse_check = now + self._lapse_check_interval
                    self._release(connection, "lease_expires < ?", (now,))
                connection.execute(_DUE_NOW, (self.name, now))
                rows = connection.execute(
                    _CLAIM,
                    (
                        *(lease_id, self.owner, now + self.visibility_timeout),
                        *(self.name, max_items),
                    ),
                ).fetchall()
                if len(rows) > 1:  # RETURNING gives no order
                    rows.sort(key=lambda row: (row[1], row[0]))
                decode = self.codec.decode
                leased = []
                for row_id, priority, attempts, payload in rows:
                    try:
                        item = decode(payload)
                    except Exception as exc:
                        raise _Undecodable(row_id, exc) from exc
                    leased.append(Leased(row_id, item, priority, attempts, lease_id))
        except _Undecodable as bad:
            self._bury_corrupt(bad.row_id, bad.__cause__)
        except QueueDamaged as damaged:
            return self._claim_around_damage(max_items, lease_id, now, damaged)
        return leased or None

    def _claim_around_damage(
        self, max_items: int, lease_id: str, now: float, damaged: QueueDamaged
    ) -> list[Leased[T]] | None:
        """Lease the readable ready items one by one, passing over rows SQLite cannot read.

        The candidates come from the index alone, so damage in the rows' own pages
        spares them; a row that cannot be read stays in the file untouched, and is
        logged once. Damage in the index itself raises `QueueDamaged`.
        """
        with contextlib.suppress(QueueDamaged), self._transaction() as promoting:
            promoting.execute(_DUE_NOW, (self.name, now))
        connection = self.connection()
        with self._file_errors():
            candidates = [
                row[0]
                for row in connection.execute(
                    "SELECT id FROM items WHERE queue = ? AND state = 0 ORDER BY priority, id",
                    (self.name,),
                )
            ]
        leased: list[Leased[T]] = []
        for row_id in candidates:
            if len(leased) == max_items:
                break
            if row_id in self._unreadable:
                continue
            try:
                with self._transaction() as claiming:
                    row = claiming.execute(
                        _CLAIM_ONE, (lease_id, self.owner, now + self.visibility_timeout, row_id)
                    ).fetchone()
            except QueueDamaged as exc:
                self._unreadable.add(row_id)
                logger.error("item %d of %r cannot be read, left in place: %s", row_id, self, exc)
                continue
            if row is None:  # taken by another consumer meanwhile
                continue
            _, priority, attempts, payload = row
            try:
                item = self.codec.decode(payload)
            except Exception as exc:
                self.release(leased)
                self._bury_corrupt(row_id, exc)
            leased.append(Leased(row_id, item, priority, attempts, lease_id))
        if not leased and self._unreadable.issuperset(candidates) and candidates:
            logger.warning("%s", damaged)
        return leased or None

    def _bury_corrupt(self, row_id: int, cause: BaseException | None) -> NoReturn:
        """Move an undecodable row to the dead-letter table (kept, not lost) and raise."""
        reason = f"codec {self.codec.name!r} cannot decode it: {type(cause).__name__}: {cause}"
        with self._transaction() as connection:
            connection.execute(_TO_DEAD, (time.time(), reason, row_id))
            connection.execute("DELETE FROM items WHERE id = ?", (row_id,))
        raise CorruptItem(
            f"item {row_id} of queue {self.name!r} in {str(self.path)!r} is corrupt ({reason}); "
            "it was moved to the dead-letter table"
        ) from cause

    def _release(
        self, connection: sqlite3.Connection, condition: str, parameters: tuple[Any, ...]
    ) -> int:
        """Return lapsed leased rows matching `condition` to ready, or to dead after max_lapses.

        A lapse is not a failed attempt (the consumer was killed, or too slow): the
        delivery's attempt is given back and the lapse counted apart.
        """
        selected = f"queue = ? AND state = 1 AND {condition}"
        ids = [
            (row[0],)
            for row in connection.execute(
                f"SELECT id FROM items WHERE {selected}", (self.name, *parameters)
            )
        ]
        if not ids:
            return 0
        limit = self.max_lapses
        doomed = []
        if limit is not None:
            doomed = connection.execute(  # one statement: no list of ids, however many
                f"SELECT id FROM items WHERE {selected} AND lapses + 1 >= ?",
                (self.name, *parameters, limit),
            ).fetchall()
        connection.executemany(
            "UPDATE items SET state = 0, lease_id = ? || lease_id, lease_owner = NULL,"
            " lease_expires = NULL, attempts = attempts - 1, lapses = lapses + 1 WHERE id = ?",
            [(_LAPSED, row_id) for (row_id,) in ids],
        )
        if doomed:
            error = f"lease lapsed {limit} times (consumer killed or too slow; max_lapses={limit})"
            connection.executemany(_TO_DEAD, [(time.time(), error, row_id) for (row_id,) in doomed])
            connection.executemany("DELETE FROM items WHERE id = ?", doomed)
        return len(ids)

    def _return_rows(
        self,
        connection: sqlite3.Connection,
        ids: list[int],
        error: str,
        ready_at: float | None = None,
    ) -> None:
        limit = self.max_attempts
        if limit is not None:
            doomed = [
                (row_id,)
                for row_id, attempts in connection.execute(
                    f"SELECT id, attempts FROM items WHERE id IN ({','.join('?' * len(ids))})", ids
                )
                if attempts >= limit
            ]
            now = time.time()
            connection.executemany(_TO_DEAD, [(now, error, row_id) for (row_id,) in doomed])
            connection.executemany("DELETE FROM items WHERE id = ?", doomed)
        state = READY if ready_at is None else DELAYED
        connection.executemany(
            "UPDATE items SET state = ?, lease_id = NULL, lease_owner = NULL, lease_expires = NULL,"
            " not_before = ? WHERE id = ?",
            [(state, ready_at, row_id) for row_id in ids],
        )

    def _delete_leased(
        self, connection: sqlite3.Connection, entries: list[tuple[int, str, str]]
    ) -> None:
        """Delete (id, lease id, lapsed lease id) rows; raise `LeaseLost` unless all were held.

        A lapsed lease keeps its id (marked) on the ready row until a claim replaces it,
        so the late ack of work that was done still counts.
        """
        before = connection.total_changes
        connection.executemany(_ACK, entries)
        deleted = connection.total_changes - before
        if deleted != len(entries):
            raise self._lease_lost(len(entries) - deleted, len(entries))

    def _lease_lost(self, lost: int, leases: int) -> LeaseLost:
        return LeaseLost(
            f"{lost} of {leases} leases in queue {self.name!r} "
            f"of {str(self.path)!r} expired and went to another consumer; nothing was acked"
        )

    def _wait_until(
        self,
        block: bool,
        timeout: float | None,
        timed_out: type[Exception],
        attempt: Callable[[], Any],
    ) -> Any:
        """Call `attempt` until it returns something but None/False, waiting between tries."""
        timeout = seconds("timeout", timeout, zero_allowed=True, none_allowed=True)
        getting = timed_out is Empty
        # The first try needs no lock: the flags are only ever set, and a close meanwhile
        # makes the attempt raise ShutDown. Nothing is waited for, so nothing is timed.
        if not (self._closed or (self.is_shutdown and (self._immediate or not getting))):
            result = attempt()
            if result:
                return result
            if not block:
                if getting and self.is_shutdown:
                    raise ShutDown(f"{self!r} is shut down and nothing is ready")
                raise timed_out
        with self._changed:  # from here on, every commit through this object notifies
            self._waiting += 1
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        try:
            while True:
                with self._changed:
                    if self._closed:
                        raise self._closed_error()
                    if self.is_shutdown and (self._immediate or not getting):
                        raise ShutDown(f"{self!r} is shut down")
                result = attempt()
                if result:
                    return result
                with self._changed:
                    if getting and self.is_shutdown:
                        raise ShutDown(f"{self!r} is shut down and nothing is ready")
                    if not block:
                        raise timed_out
                    wait = self.poll_interval
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise timed_out
                        wait = min(wait, remaining)
                    self._changed.wait(wait)
        finally:
            waited = time.monotonic() - started
            with self._changed:
                self._waiting -= 1
                if getting:
                    self._get_waited_seconds += waited
                else:
                    self._put_blocked_seconds += waited

    def _notify(self) -> None:
        if not self._waiting:
            return
        with self._changed:
            self._changed.notify_all()

    def _count(self, sql: str) -> int:
        connection = self.connection()
        with self._file_errors():
            count: int = connection.execute(sql, (self.name,)).fetchone()[0]
        return count

    def _transaction(self) -> _Transaction:
        """Return a `BEGIN IMMEDIATE` transaction of this thread's connection, to enter."""
        return _Transaction(self)

    @contextlib.contextmanager
    def _file_errors(self, *, opening: bool = False) -> Iterator[None]:
        """Raise every SQLite error of the block as the package's error naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._file_error(exc, opening=opening) from exc

    def _file_error(self, exc: sqlite3.Error, *, opening: bool = False) -> Exception:
        """Return the package's error for an SQLite error of this queue (see `_file_errors`)."""
        if self._closed:
            closed: Exception = self._closed_error()
            return closed
        if (
            self.read_only
            and isinstance(exc, sqlite3.OperationalError)
            and ((getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == _SQLITE_READONLY)
        ):
            return QueueReadOnly(
                f"{str(self.path)!r} was opened read_only=True: {self!r} only looks; "
                "open it without read_only to change it"
            )
        return _file_error(exc, self.path, self.timeout, opening=opening)

    def _closed_error(self) -> ShutDown:
        return ShutDown(f"{self!r} is closed")

    def connection(self) -> sqlite3.Connection:
        """Return this thread's connection to the file, opening it on first use.

        For reading the file alongside the queue; write only inside `transaction()`. It
        is closed when the thread ends; a forked child opens its own.

        Raises:
            ShutDown: the queue is closed.
        """
        if self._closed:  # set once, never cleared: read without the lock
            raise self._closed_error()
        local = self._local
        held: _ThreadConnection | None = getattr(local, "held", None)
        if held is not None and held.pid == os.getpid():
            return held.connection
        with self._file_errors(opening=True):
            connection = _connect(self.path, self.timeout, self.synchronous, self.read_only)
        held = _ThreadConnection(connection)
        closer = weakref.finalize(held, _close_in_own_process, held.pid, connection)
        closer.atexit = False  # at exit the process closes its files; daemon threads may run
        with self._changed:
            if self._closed:
                closer()
                raise self._closed_error()
            self._closers = {each for each in self._closers if each.alive}
            self._closers.add(closer)
        local.held = held
        return connection

    def _prepare_file(self) -> None:
        """Create the schema in a new file, or check an existing one; register this queue."""
        if self.read_only:
            self._check_read_only()
            return
        connection = self.connection()
        if _header(connection, self.path) == (0, 0, 0):
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only before the first table
            connection.execute("PRAGMA journal_mode = WAL")
            with self._transaction() as creating:
                if _header(creating, self.path) == (0, 0, 0):  # no other process was first
                    for statement in _SCHEMA:
                        creating.execute(statement)
                    creating.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    creating.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        _check_header(*_header(connection, self.path)[:2], self.path)
        connection.execute("PRAGMA journal_mode = WAL")
        with self._transaction() as registering:
            stored = registering.execute(
                "SELECT codec FROM queues WHERE name = ?", (self.name,)
            ).fetchone()
            if stored is None:
                registering.execute(
                    "INSERT INTO queues (name, codec, created) VALUES (?, ?, ?)",
                    (self.name, self.codec.name, time.time()),
                )
            elif stored[0] != self.codec.name:
                raise CodecError(
                    f"queue {self.name!r} in {str(self.path)!r} was written with codec "
                    f"{stored[0]!r}; it cannot be opened with codec {self.codec.name!r}"
                )
            if registering.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                _upgrade(registering)
            released = self._release_dead_owners(registering)
        if released:
            logger.info("%r: %d items leased by stopped processes are ready again", self, released)

    def _check_read_only(self) -> None:
        connection = self.connection()
        _check_header(*_header(connection, self.path)[:2], self.path)
        stored = connection.execute(
            "SELECT codec FROM queues WHERE name = ?", (self.name,)
        ).fetchone()
        if stored is None:
            raise KeyError(f"no queue named {self.name!r} in {str(self.path)!r}")
        if stored[0] != self.codec.name:
            raise CodecError(
                f"queue {self.name!r} in {str(self.path)!r} was written with codec "
                f"{stored[0]!r}; it cannot be opened with codec {self.codec.name!r}"
            )

    def _release_dead_owners(self, connection: sqlite3.Connection) -> int:
        host = self._host
        owners = [
            row[0]
            for row in connection.execute(
                "SELECT DISTINCT lease_owner FROM items WHERE queue = ? AND state = 1", (self.name,)
            )
        ]
        released = 0
        for owner in owners:
            owner_host, _, pid = str(owner).rpartition(":")
            if owner_host == host and pid.isdigit() and not _running(int(pid)):
                released += self._release(connection, "lease_owner = ?", (owner,))
        return released


def queues_in(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Return the (name, codec name) of every queue in the file, reading it only.

    Raises:
        FileNotFoundError: there is no file at `path`.
        NotAQueueFile: the file is not a queue file.
        SchemaTooNew: the file was written by a newer version of this package.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no queue file at {str(file)!r}")
    try:
        connection = _connect(file, 30.0, "NORMAL", read_only=True)
        try:
            _check_header(*_header(connection, file)[:2], file)
            rows = connection.execute("SELECT name, codec FROM queues ORDER BY name").fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise _file_error(exc, file, 30.0, opening=True) from exc
    return [(str(name), str(codec)) for name, codec in rows]


class _Undecodable(Exception):
    def __init__(self, row_id: int, cause: Exception) -> None:
        super().__init__(row_id, cause)
        self.row_id = row_id


# Every queue object, so that a forked child can give each a fresh lock: one another
# thread held at the moment of the fork would be held for ever in the child.
_OPEN_QUEUES: weakref.WeakSet[DurableQueue[Any]] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for queue in list(_OPEN_QUEUES):
        queue._changed = threading.Condition()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_in_child)


class _ThreadConnection:
    """One thread's connection, held by the thread's `threading.local` entry only."""

    __slots__ = ("__weakref__", "connection", "depth", "pid")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.pid = os.getpid()
        self.depth = 0  # the transactions of this package open on it (nested: an error)


class _Transaction:
    """One `BEGIN IMMEDIATE` ... `COMMIT` (rolled back if the block raises) on one connection.

    Every SQLite error of it, the block's included, reaches the caller as the queue's
    error naming the file. A class rather than a generator-based context manager: every
    claim and batch enters one, and this costs a fraction.
    """

    __slots__ = ("connection", "held", "queue")

    def __init__(self, queue: DurableQueue[Any]) -> None:
        self.queue = queue
        self.connection = queue.connection()
        self.held: _ThreadConnection = queue._local.held

    def __enter__(self) -> sqlite3.Connection:
        connection, held = self.connection, self.held
        try:
            if connection.in_transaction and not held.depth:
                # A Ctrl-C between this thread's BEGIN and the block that ends it (two
                # calls) left a transaction open that nothing of ours is in: none of it
                # was committed, so it is rolled back, as it would have been.
                connection.rollback()
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.queue._file_error(exc) from exc
        held.depth += 1
        return connection

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        # The try comes first: a Ctrl-C at any point of it still gives the depth back,
        # and leaves at worst a transaction that the next one rolls back.
        try:
            if kind is None:
                self.connection.execute("COMMIT")
            elif self.connection.in_transaction:
                self.connection.rollback()
        except sqlite3.Error as exc:
            raise self.queue._file_error(exc) from exc
        finally:
            self.held.depth -= 1
        if isinstance(error, sqlite3.Error):
            raise self.queue._file_error(error) from error


# Connections a forked child inherited: never used there, and not closed there either
# (closing could checkpoint or delete the parent's WAL); kept, so that no garbage
# collection closes them while the child runs.
_INHERITED: list[sqlite3.Connection] = []


def _close_in_own_process(pid: int, connection: sqlite3.Connection) -> None:
    if os.getpid() == pid:
        connection.close()
    else:
        _INHERITED.append(connection)


def _connect(
    path: Path, timeout: float, synchronous: str, read_only: bool = False
) -> sqlite3.Connection:
    """Open the file; raise sqlite3 errors for the caller to name (`_file_error`).

    Read-only, it is opened `mode=ro`, and as `immutable` when it has no -wal file
    beside it (no process has it open in WAL mode), so that looking creates nothing.
    """
    if read_only:
        if not path.is_file():
            raise FileNotFoundError(f"no queue file at {str(path)!r}")
        wal = path.with_name(path.name + "-wal")
        mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?{mode}",
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    else:
        connection = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
    try:
        if not read_only:
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            connection.execute("PRAGMA journal_size_limit = 67108864")  # the WAL shrinks to 64 MiB
    except BaseException:
        connection.close()
        raise
    return connection


def _upgrade(connection: sqlite3.Connection) -> None:
    """Bring a file of schema version 1 to this version, inside the caller's transaction.

    Every item stays as it was; a delayed retry, stored in version 1 as a ready row with
    a not-before time, gets the delayed state, so that claims pass it over by index.
    """
    columns = {row[1] for row in connection.execute("PRAGMA table_info(items)")}
    if "lapses" not in columns:  # a file from before lapses were counted apart
        connection.execute("ALTER TABLE items ADD COLUMN lapses INTEGER NOT NULL DEFAULT 0")
    if "not_before" not in columns:  # a file from before retries could wait
        connection.execute("ALTER TABLE items ADD COLUMN not_before REAL")
    connection.execute(_DELAYED_INDEX)
    connection.execute("UPDATE items SET state = 2 WHERE state = 0 AND not_before IS NOT NULL")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _header(connection: sqlite3.Connection, path: Path) -> tuple[int, int, int]:
    """Return (application_id, user_version, number of tables) of the file."""
    application = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return application, version, tables


# Primary SQLite result codes (the low byte of an extended one).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26


def _file_error(exc: sqlite3.Error, path: Path, timeout: float, *, opening: bool) -> QueueFileError:
    """Return the package's error for an SQLite error met on `path`: what, and what to do."""
    name = str(path)
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return QueueLocked(
            f"{name!r} is locked by another connection: waited {timeout:g} s for it (another "
            "program, or a long transaction of this one; SQLite cannot tell which, and "
            f"`fuser {name}` lists the processes that have it open): try again once it lets "
            "go, or give a longer timeout"
        )
    if code == _SQLITE_READONLY or (code == _SQLITE_CANTOPEN and not _writable(path)):
        return QueueReadOnly(
            f"{name!r} is read-only ({exc}): a DurableQueue writes to the file and beside it "
            "(its -wal and -shm files); give this user write access to the file and its "
            f"folder, or only look: open it with read_only=True, or `pipeline queue {name} status`"
        )
    if code == _SQLITE_NOTADB and opening:
        return NotAQueueFile(f"{name!r} is not a queue file: {exc}")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return QueueDamaged(
            f"{name!r} is damaged ({exc}); what can still be read is still served: copy the "
            f"file aside, then rebuild it with `sqlite3 {name} .recover` or restore a backup"
        )
    if code == _SQLITE_FULL:
        return QueueFileError(
            f"{name!r}: {exc}: free some disk space; nothing of the failed call was written"
        )
    if code == _SQLITE_CANTOPEN:
        return QueueFileError(
            f"cannot open {name!r} ({exc}): check that its folder exists and that this "
            "process may open more files"
        )
    return QueueFileError(f"{name!r}: SQLite {type(exc).__name__}: {exc}")


def _writable(path: Path) -> bool:
    """Return False if the file, or its folder (for -wal and -shm), cannot be written."""
    folder = path.resolve().parent
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _check_header(application: int, version: int, path: Path) -> None:
    if application != APPLICATION_ID:
        raise NotAQueueFile(
            f"{str(path)!r} is an SQLite database of another application "
            f"(application_id {application:#x}), not a pipeline queue file"
        )
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{str(path)!r} has queue schema version {version}; this version of "
            f"pipeline reads up to {SCHEMA_VERSION}: upgrade pipeline to open it"
        )


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _encodes(encode: Callable[[Any], bytes], item: Any) -> bool:
    try:
        encode(item)
    except Exception:
        return False
    return True


def _lease_length(value: object) -> float:
    return seconds("seconds", value)  # renew's parameter shadows the check's name there
