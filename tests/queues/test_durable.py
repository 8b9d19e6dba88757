"""Tests for DurableQueue: leases and acks, lapses, dead letters, bad files, threads, processes."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Empty, Full, LinkQueue, ShutDown
from pipeline.queues.codecs import PICKLE
from pipeline.queues.durable import SCHEMA_VERSION, DurableQueue, Leased
from pipeline.queues.errors import (
    CodecError,
    CorruptItem,
    LeaseLost,
    NotAQueueFile,
    QueueDamaged,
    QueueLocked,
    QueueReadOnly,
    SchemaTooNew,
)
from pipeline.worker import END_OF_STREAM

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


def items_of(leased: list[Leased[Any]]) -> list[Any]:
    return [entry.item for entry in leased]


def test_items_come_back_by_priority_then_age_and_stay_until_acked(path: Path) -> None:
    with DurableQueue[Any](path) as queue:
        queue.put_many([{"n": 1}, [2], "three"], priority=2)
        queue.put(None, priority=0)
        first = queue.get_many(3)
        assert items_of(first) == [None, {"n": 1}, [2]]
        assert len({entry.lease_id for entry in first}) == 1
        queue.ack_many(first[:2])
        counts = queue.counts()
        assert (counts.ready, counts.leased, counts.dead) == (1, 1, 0)
    with DurableQueue[Any](path) as reopened:
        # The lease is held by this (running) process, so it lapses only by expiry.
        assert items_of(reopened.get_many(10, block=False)) == ["three"]
        assert reopened.counts().leased == 2


def test_it_is_a_link_queue(path: Path) -> None:
    with DurableQueue[int](path) as durable:
        link: LinkQueue[Leased[int]] = durable
        link.put_many([1, 2], True, None, copy=False)
        assert [entry.item for entry in link.get_many(5)] == [1, 2]
        assert link.statistics().depth == 2  # leased, not yet acked
        link.shutdown(immediate=True)
        with pytest.raises(ShutDown):
            link.get_many(1)
        with pytest.raises(ShutDown):
            link.put_many([3])
    with DurableQueue[int](path) as again:
        assert again.qsize() == 2  # shutting down discarded nothing


def test_the_end_of_stream_marker_is_refused(path: Path) -> None:
    with DurableQueue[Any](path, codec=PICKLE) as queue:
        with pytest.raises(TypeError, match="cannot store the pipeline's end-of-stream marker"):
            queue.put_many([1, END_OF_STREAM])
        assert queue.qsize() == 0


def test_a_lapsed_lease_goes_to_another_consumer_and_the_late_ack_fails(path: Path) -> None:
    with DurableQueue[str](path, visibility_timeout=0.05) as queue:
        queue.put("job")
        slow = queue.get()
        again = queue.get(timeout=5)  # waits for the lease to lapse, then takes it over
        assert (again.item, again.attempts) == ("job", 1)  # a lapse is no failed attempt
        with pytest.raises(LeaseLost, match=r"1 of 1 leases in queue 'default' of .* expired"):
            queue.ack(slow)
        queue.ack(again)
        assert queue.qsize() == 0


def test_nack_retries_then_dead_letters_and_requeue_brings_it_back(path: Path) -> None:
    with DurableQueue[str](path, max_attempts=2) as queue:
        queue.put("poison")
        queue.nack(queue.get(), "boom 1")
        queue.nack(queue.get(), "boom 2")
        with pytest.raises(Empty):
            queue.get(block=False)
        (dead,) = queue.dead_letters()
        assert (dead.payload, dead.attempts, dead.error) == (b'"poison"', 2, "boom 2")
        assert queue.requeue_dead() == 1
        assert queue.get(block=False).item == "poison"


def test_leases_of_a_killed_process_are_ready_on_reopen(path: Path) -> None:
    with DurableQueue[int](path) as queue:
        queue.put_many(list(range(10)))
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {SRC!r})
        from pipeline.queues.durable import DurableQueue
        queue = DurableQueue({str(path)!r})
        print(len(queue.get_many(4)), flush=True)
        os._exit(0)  # gone without acking or closing
        """)
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert child.stdout.strip() == "4"
    with DurableQueue[int](path) as reopened:
        assert reopened.counts().leased == 0
        assert items_of(reopened.get_many(20)) == list(range(10))


def test_a_bounded_queue_blocks_a_put_until_an_ack_makes_room(path: Path) -> None:
    with DurableQueue[int](path, maxsize=2) as queue:
        queue.put_many([1, 2])
        with pytest.raises(Full):
            queue.put(3, block=False)
        with pytest.raises(
            ValueError, match=r"more than maxsize=2 of DurableQueue\(.* could ever hold"
        ):
            queue.put_many([1, 2, 3])
        done = threading.Event()

        def putter() -> None:
            queue.put(3, timeout=10)
            done.set()

        thread = threading.Thread(target=putter)
        thread.start()
        assert not done.wait(0.1)
        queue.ack(queue.get())
        assert done.wait(10)
        thread.join(10)
        assert items_of(queue.get_many(5)) == [2, 3]


def test_a_blocked_get_wakes_on_a_put_and_on_shutdown(path: Path) -> None:
    with DurableQueue[int](path, poll_interval=10) as queue:
        got: list[Any] = []

        def getter() -> None:
            try:
                got.append(queue.get(timeout=20).item)
                queue.get(timeout=20)
            except ShutDown:
                got.append("shut down")

        thread = threading.Thread(target=getter)
        thread.start()
        queue.put(7)  # wakes the getter at once although it polls every 10 s
        queue.shutdown()
        thread.join(10)
        assert got == [7, "shut down"]


def test_a_codec_that_cannot_encode_stores_nothing_of_the_batch(path: Path) -> None:
    with DurableQueue[Any](path) as queue:
        queue.put("kept")
        with pytest.raises(
            CodecError,
            match=r"codec 'json' cannot encode item 1 of the batch \(set\): .*not JSON "
            r"serializable; nothing of the batch was stored",
        ):
            queue.put_many([1, {2}, 3])
        with pytest.raises(CodecError, match=r"cannot encode item 0 .*float"):
            queue.put(float("nan"))
        assert items_of(queue.get_many(10)) == ["kept"]


def test_a_corrupt_row_is_named_and_kept_and_the_rest_goes_on(path: Path) -> None:
    with DurableQueue[int](path) as queue:
        queue.put_many([1, 2, 3])
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE items SET payload = x'ff00' WHERE id = 2")
    raw.close()
    with DurableQueue[int](path) as queue:
        with pytest.raises(
            CorruptItem,
            match=r"item 2 of queue 'default' in .* is corrupt \(codec 'json' cannot decode it: "
            r"UnicodeDecodeError: .*invalid start byte\); it was moved to the dead-letter table",
        ):
            queue.get_many(10)
        assert items_of(queue.get_many(10)) == [1, 3]
        (dead,) = queue.dead_letters()
        assert (dead.id, dead.payload) == (2, b"\xff\x00")


def test_a_file_that_is_not_a_queue_is_refused_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a database, just some notes\n" * 100)
    with pytest.raises(
        NotAQueueFile, match=r"notes.txt' is not a queue file: file is not a database"
    ):
        DurableQueue(text)
    assert text.read_bytes() == b"not a database, just some notes\n" * 100
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE mine (x)")
        raw.execute("INSERT INTO mine VALUES (1)")
    raw.close()
    with pytest.raises(NotAQueueFile, match=r"another application \(application_id 0x0\)"):
        DurableQueue(other)
    with sqlite3.connect(other) as raw:
        assert raw.execute("SELECT x FROM mine").fetchall() == [(1,)]
    raw.close()


def test_a_queue_from_a_newer_schema_is_refused_untouched(path: Path) -> None:
    with DurableQueue[int](path) as queue:
        queue.put(1)
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}; .* upgrade"):
        DurableQueue(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM items").fetchone() == (1,)
    raw.close()


def test_a_queue_is_never_read_with_another_codec(path: Path) -> None:
    with DurableQueue[Any](path, "jobs", codec=PICKLE) as queue:
        queue.put({1, 2})
    with pytest.raises(CodecError, match=r"'jobs' .* written with codec 'pickle'; .* codec 'json'"):
        DurableQueue(path, "jobs")
    with DurableQueue[Any](path, "jobs", codec=PICKLE) as queue:
        assert queue.get().item == {1, 2}


def test_bad_arguments_are_named(path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"visibility_timeout must be > 0 seconds and finite, got 0"
    ):
        DurableQueue(path, visibility_timeout=0)
    with pytest.raises(ValueError, match="synchronous must be 'NORMAL' or 'FULL', got 'OFF'"):
        DurableQueue(path, synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must not be empty"):
        DurableQueue(path, "")
    with pytest.raises(TypeError, match="codec must have a str name and encode/decode methods"):
        DurableQueue(path, codec="json")  # type: ignore[arg-type]
    with (
        DurableQueue[int](path) as queue,
        pytest.raises(ValueError, match="max_items must be >= 1"),
    ):
        queue.get_many(0)


def test_consume_acks_what_the_loop_finished_and_returns_the_rest(path: Path) -> None:
    with DurableQueue[int](path) as queue:
        queue.put_many(list(range(10)))
        seen = []
        for item in queue.consume(batch_size=4):
            if item == 6:
                break
            seen.append(item)
        assert seen == [0, 1, 2, 3, 4, 5]
        assert list(queue.consume()) == [6, 7, 8, 9]
        assert queue.qsize() == 0


def test_compact_gives_free_pages_back(path: Path) -> None:
    with DurableQueue[str](path) as queue:
        for _ in range(20):
            queue.put_many(["x" * 500] * 100)
        queue.compact()
        full = path.stat().st_size
        while True:
            try:
                queue.ack_many(queue.get_many(500, block=False))
            except Empty:
                break
        assert queue.compact() < full / 4


def test_threads_lose_and_duplicate_nothing_and_never_see_a_locked_database(path: Path) -> None:
    producers, consumers, per_producer = 3, 3, 400
    errors: list[BaseException] = []
    received: list[int] = []
    received_lock = threading.Lock()
    start = threading.Barrier(producers + consumers)
    with DurableQueue[int](path, poll_interval=0.01) as queue:

        def produce(index: int) -> None:
            try:
                start.wait(10)
                for n in range(0, per_producer, 20):
                    base = index * per_producer + n
                    if n % 40:
                        queue.put_many(list(range(base, base + 20)))
                    else:
                        for k in range(20):
                            queue.put(base + k)
            except BaseException as exc:
                errors.append(exc)

        def consume() -> None:
            try:
                start.wait(10)
                while True:
                    batch = queue.get_many(7, timeout=20)
                    queue.ack_many(batch)
                    with received_lock:
                        received.extend(items_of(batch))
            except ShutDown:
                return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
        threads += [threading.Thread(target=consume) for _ in range(consumers)]
        for thread in threads:
            thread.start()
        for thread in threads[:producers]:
            thread.join(60)
        queue.shutdown()
        for thread in threads[producers:]:
            thread.join(60)
    assert errors == []
    assert sorted(received) == list(range(producers * per_producer))


CONSUMER = """
import sys
sys.path.insert(0, {src!r})
from pipeline import Empty
from pipeline.queues.durable import DurableQueue
source = DurableQueue({path!r}, "in", poll_interval=0.01)
sink = DurableQueue({path!r}, "out")
source.put_many([[{tag}, n] for n in range(500)])  # produce while the other process consumes
while True:
    try:
        batch = source.get_many(25, timeout=0.5)
    except Empty:
        break
    with source.transaction() as connection:
        sink.insert_in(connection, [entry.item for entry in batch])
        source.ack_in(connection, batch)
print("done", flush=True)
"""


def test_two_processes_on_one_file_lose_and_duplicate_nothing(path: Path) -> None:
    with DurableQueue[list[int]](path, "in") as source:
        source.put_many([[0, n] for n in range(1000)])
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER.format(src=SRC, path=str(path), tag=tag)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in (1, 2)
    ]
    for child in children:
        out, err = child.communicate(timeout=60)
        assert (out, err) == ("done\n", "")
    with (
        DurableQueue[list[int]](path, "in") as source,
        DurableQueue[list[int]](path, "out") as sink,
    ):
        left = items_of(source.get_many(10_000, block=False)) if source.qsize() else []
        stored = items_of(sink.get_many(10_000, block=False))
    expected = sorted([tag, n] for tag in (1, 2) for n in range(500)) + [
        [0, n] for n in range(1000)
    ]
    assert sorted(stored + left) == sorted(expected)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(-2, 2), st.integers(1, 4)),
        st.tuples(st.just("get"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("nack"), st.integers(0, 9), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=25, deadline=None)
@given(OPERATIONS)
def test_it_behaves_like_a_sorted_model(operations: list[tuple[str, int, int]]) -> None:
    """Ready items come out by (priority, put order); acked ones never again; nacked ones do."""
    with (
        tempfile.TemporaryDirectory() as folder,
        DurableQueue[int](Path(folder) / "model.db", max_attempts=None) as queue,
    ):
        ready: list[tuple[int, int]] = []  # (priority, item), item numbers grow with put order
        leased: list[Leased[int]] = []
        done: set[int] = set()
        counter = 0
        for operation, first, second in operations:
            if operation == "put":
                batch = list(range(counter, counter + second))
                counter += second
                queue.put_many(batch, priority=first)
                ready.extend((first, item) for item in batch)
            elif operation == "get":
                expected = sorted(ready)[:first]
                if not expected:
                    with pytest.raises(Empty):
                        queue.get_many(first, block=False)
                    continue
                got = queue.get_many(first, block=False)
                assert [(entry.priority, entry.item) for entry in got] == expected
                for pair in expected:
                    ready.remove(pair)
                leased.extend(got)
            elif leased:
                taken = leased.pop(first % len(leased))
                if operation == "ack":
                    queue.ack(taken)
                    done.add(taken.item)
                else:
                    queue.nack(taken)
                    ready.append((taken.priority, taken.item))
        assert queue.qsize() == len(ready) + len(leased)
        assert not done & {item for _, item in ready}


def test_lapsed_leases_return_uncounted_and_too_many_lapses_bury_the_item(path: Path) -> None:
    with DurableQueue[str](path, max_attempts=2, max_lapses=3) as queue:
        queue.put_many(["a", "b"])
        queue.get_many(2)
        assert queue.release_expired() == 0  # leases still valid
        queue.connection().execute("UPDATE items SET lease_expires = 0")  # time passes
        assert queue.release_expired() == 2
        assert queue.counts().ready == 2
        first = queue.get()  # "a" again: a lapse is not a failed attempt
        assert (first.item, first.attempts) == ("a", 1)
        queue.connection().execute("UPDATE items SET lease_expires = 0 WHERE id = ?", (first.id,))
        assert queue.release_expired() == 1
        first = queue.get()
        assert (first.item, first.attempts) == ("a", 1)
        queue.connection().execute("UPDATE items SET lease_expires = 0 WHERE id = ?", (first.id,))
        assert queue.release_expired() == 1  # the third lapse: max_lapses
        (dead,) = queue.dead_letters()
        assert (dead.payload, dead.error) == (
            b'"a"',
            "lease lapsed 3 times (consumer killed or too slow; max_lapses=3)",
        )
        assert [entry.item for entry in queue.get_many(5)] == ["b"]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("parameter", ["visibility_timeout", "poll_interval", "timeout"])
def test_nan_and_infinite_seconds_are_refused(path: Path, parameter: str, value: float) -> None:
    with pytest.raises(
        ValueError, match=f"^{parameter} must be > 0 seconds and finite, got {value}$"
    ):
        DurableQueue(path, **{parameter: value})  # type: ignore[arg-type]
    assert not path.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1])
def test_a_call_timeout_must_be_finite_and_not_negative(path: Path, value: float) -> None:
    with DurableQueue[int](path) as queue:
        message = f"^timeout must be >= 0 seconds and finite, got {value}$"
        with pytest.raises(ValueError, match=message):
            queue.get(timeout=value)  # NaN waited for ever before
        with pytest.raises(ValueError, match=message):
            queue.put(1, timeout=value)
        with pytest.raises(ValueError, match=message):
            queue.wait_for_change(value)


def leased_one(queue: DurableQueue[int]) -> Leased[int]:
    return Leased(1, 1, 0, 1, "lease")


AFTER_CLOSE: dict[str, Callable[[DurableQueue[int]], object]] = {
    "put": lambda queue: queue.put(1),
    "get": lambda queue: queue.get(block=False),
    "ack": lambda queue: queue.ack(leased_one(queue)),
    "ack_many": lambda queue: queue.ack_many([leased_one(queue)]),
    "nack": lambda queue: queue.nack(leased_one(queue)),
    "release": lambda queue: queue.release([leased_one(queue)]),
    "counts": lambda queue: queue.counts(),
    "peek": lambda queue: queue.peek(),
    "dead_letters": lambda queue: queue.dead_letters(),
    "requeue_dead": lambda queue: queue.requeue_dead(),
    "release_expired": lambda queue: queue.release_expired(),
    "compact": lambda queue: queue.compact(),
    "qsize": lambda queue: queue.qsize(),
    "statistics": lambda queue: queue.statistics(),
    "consume": lambda queue: list(queue.consume()),
    "connection": lambda queue: queue.connection(),
    "transaction": lambda queue: queue.transaction().__enter__(),
}


@pytest.mark.parametrize("method", sorted(AFTER_CLOSE))
def test_every_method_after_close_raises_shut_down(path: Path, method: str) -> None:
    queue = DurableQueue[int](path)
    queue.put(1)
    queue.get()  # this thread's connection is open and cached
    queue.close()
    with pytest.raises(ShutDown, match=r"DurableQueue\('.*queue.db', 'default', .*\) is closed"):
        AFTER_CLOSE[method](queue)


def lock_exclusively(path: Path) -> sqlite3.Connection:
    """Hold the file's lock as another program could (exclusive locking mode)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode = EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    return other


def lock_for_writing(path: Path) -> sqlite3.Connection:
    """Hold the file's write lock as another program could (a long transaction)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_file_locked_by_another_program_is_called_locked_not_a_non_queue(path: Path) -> None:
    with DurableQueue[int](path) as queue:
        queue.put(1)
    other = lock_exclusively(path)
    try:
        with pytest.raises(
            QueueLocked,
            match=r"'.*queue.db' is locked by another connection: waited 0.2 s for it \(another "
            r"program, .*fuser",
        ) as raised:
            DurableQueue(path, timeout=0.2)
        assert isinstance(raised.value, TimeoutError)
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    finally:
        other.close()
    with DurableQueue[int](path) as queue:
        assert queue.get().item == 1


def test_a_lock_taken_while_the_queue_is_open_is_waited_for_then_named(path: Path) -> None:
    with DurableQueue[int](path, timeout=0.2) as queue:
        queue.put(1)
        other = lock_for_writing(path)
        try:
            with pytest.raises(
                QueueLocked, match=r"is locked by another connection: waited 0\.2 s"
            ):
                queue.get(block=False)
        finally:
            other.close()
        assert queue.get().item == 1  # usable again once the other program lets go


def test_a_lock_released_within_the_timeout_is_waited_for(path: Path) -> None:
    with DurableQueue[int](path) as queue:
        queue.put(1)
    other = lock_exclusively(path)
    opened: list[Any] = []

    def open_it() -> None:
        try:
            with DurableQueue[int](path, timeout=30) as queue:
                opened.append(queue.get().item)
        except BaseException as exc:
            opened.append(exc)

    thread = threading.Thread(target=open_it)
    thread.start()
    other.close()
    thread.join(30)
    assert opened == [1]


def many_pages(path: Path) -> int:
    """Fill the queue with items spanning many pages; return the file's page size."""
    with DurableQueue[str](path) as queue:
        queue.put_many([f"{n:04d}" + "x" * 3000 for n in range(200)])
        page_size: int = queue.connection().execute("PRAGMA page_size").fetchone()[0]
    return page_size


def test_damage_met_after_opening_is_named_and_what_is_readable_is_served(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    page_size = many_pages(path)
    with DurableQueue[str](path) as queue:
        first = queue.get_many(10)  # before the damage
        with open(path, "r+b") as file:  # a disk error under a running consumer
            file.seek(page_size * 100)
            file.write(b"\xff" * page_size)
        with pytest.raises(
            QueueDamaged,
            match=r"'.*queue.db' is damaged \(database disk image is malformed\); .*"
            r"sqlite3 .*\.recover",
        ) as raised:
            queue.peek(200)  # reads every payload
        assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
        queue.ack_many(first)  # what was read is still acked
        with caplog.at_level(logging.ERROR, logger="pipeline.queues.durable"):
            rest = queue.get_many(200)  # served around the damaged page
        unreadable = [record for record in caplog.records if "cannot be read" in record.message]
        assert unreadable
        assert all("queue.db' is damaged" in record.message for record in unreadable)
        assert len(rest) + len(unreadable) == 190
        refused = 0
        for entry in rest:
            try:
                queue.ack(entry)
            except QueueDamaged:  # deleting it would rewrite the damaged page
                refused += 1
        assert len(rest) - refused >= 170  # the rest is done
        assert queue.qsize() == len(unreadable) + refused  # left in place, not lost


def test_a_truncated_file_is_called_damaged_when_opened(path: Path) -> None:
    many_pages(path)
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.truncate(size // 2)
    with pytest.raises(QueueDamaged, match=r"'.*queue.db' is damaged \(database disk image"):
        DurableQueue(path)


READ_ONLY = """
import os, sys
sys.path.insert(0, {src!r})
from pipeline.queues.durable import DurableQueue
from pipeline.queues.errors import QueueReadOnly
if os.geteuid() == 0:  # root may write anything: look as nobody
    os.setgid(65534)
    os.setuid(65534)
try:
    DurableQueue({path!r})
except QueueReadOnly as exc:
    print(type(exc).__name__, isinstance(exc, PermissionError), exc)
"""


def read_only_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp())
    try:
        yield folder
    finally:
        folder.chmod(0o755)
        for file in folder.iterdir():
            file.chmod(0o644)
            file.unlink()
        folder.rmdir()


@pytest.fixture
def read_only_queue() -> Iterator[Path]:
    """A valid queue file, read-only, in a read-only folder (for nobody, when run as root)."""
    for folder in read_only_folder():
        path = folder / "queue.db"
        with DurableQueue[int](path, "jobs") as queue:
            queue.put_many([1, 2, 3])
        path.chmod(0o444)
        folder.chmod(0o555)
        yield path


def test_a_read_only_queue_file_is_called_read_only(read_only_queue: Path) -> None:
    script = READ_ONLY.format(src=SRC, path=str(read_only_queue))
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert child.stderr == ""
    assert child.stdout.startswith(f"QueueReadOnly True {str(read_only_queue)!r} is read-only")
    assert "pipeline queue" in child.stdout  # what to do: look at it read-only
    assert sorted(path.name for path in read_only_queue.parent.iterdir()) == ["queue.db"]


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_connections_of_finished_threads_are_closed(path: Path) -> None:
    with DurableQueue[int](path) as queue:
        queue.put(0)  # this thread's connection, open before counting
        before = open_descriptors()
        errors: list[BaseException] = []

        def put(n: int) -> None:
            try:
                queue.put(n)
            except BaseException as exc:
                errors.append(exc)

        for start in range(0, 3000, 50):
            threads = [threading.Thread(target=put, args=(n,)) for n in range(start, start + 50)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        assert errors == []
        # Not two per finished thread (the file and its WAL): at most those of one round
        # of 50, which SQLite may keep open to reuse while this thread holds its locks.
        assert open_descriptors() - before <= 100
        assert queue.qsize() == 3001


FORKED = """
import os, sys
sys.path.insert(0, {src!r})
from pipeline.queues.durable import DurableQueue
queue = DurableQueue({path!r})
queue.get()  # the parent leases one; its connection is cached in this thread
child = os.fork()
if child == 0:
    leased = queue.get()
    owner = queue.connection().execute(
        "SELECT lease_owner FROM items WHERE id = ?", (leased.id,)
    ).fetchone()[0]
    print(owner == queue.owner, owner.endswith(f":{{os.getpid()}}"), flush=True)
    os._exit(0)  # killed: gone without acking or closing
_, status = os.waitpid(child, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
queue.close()
with DurableQueue({path!r}) as reopened:  # the child is gone, the parent lives
    counts = reopened.counts()
    print(counts.ready, counts.leased, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_leases_in_its_own_name(path: Path) -> None:
    with DurableQueue[int](path) as queue:
        queue.put_many([1, 2, 3])
    child = subprocess.run(
        [sys.executable, "-c", FORKED.format(src=SRC, path=str(path))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (child.stdout, child.stderr) == ("True True\nchild 0\n2 1\n", "")


def test_a_late_ack_succeeds_while_nobody_else_took_the_item(path: Path) -> None:
    with DurableQueue[str](path, visibility_timeout=60) as queue:
        queue.put_many(["slow", "other"])
        slow = queue.get()
        queue.connection().execute("UPDATE items SET lease_expires = 0")  # the lease lapses
        assert queue.release_expired() == 1
        assert queue.counts().ready == 2
        queue.ack(slow)  # the work was done: it stands, and the item is not served again
        assert items_of(queue.get_many(5)) == ["other"]
        queue.release(  # releasing a lapsed lease changes nothing
            [slow]
        )
        assert queue.counts().ready == 0


def test_a_late_nack_counts_while_nobody_else_took_the_item(path: Path) -> None:
    with DurableQueue[str](path) as queue:
        queue.put("slow")
        slow = queue.get()
        queue.connection().execute("UPDATE items SET lease_expires = 0")
        assert queue.release_expired() == 1
        queue.nack(slow, "it failed")  # the work was done and failed: that stands
        again = queue.get()
        assert again.item == "slow"
        with pytest.raises(LeaseLost):
            queue.nack(slow)  # another consumer holds it now
        queue.ack(again)


FORKED_WHILE_LOCKED = """
import os, signal, sys, threading, warnings
# Forking beside another thread is the point here (Python 3.12+ warns of it).
warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
sys.path.insert(0, {src!r})
from pipeline.queues.durable import DurableQueue
queue = DurableQueue({path!r})
holding, release = threading.Event(), threading.Event()

def hold():
    with queue._changed:  # another thread inside the queue at the moment of the fork
        holding.set()
        release.wait(30)

thread = threading.Thread(target=hold)
thread.start()
holding.wait(30)
child = os.fork()
if child == 0:
    signal.alarm(20)  # a child that hangs must not outlive the test
    queue.put(1)  # waited for ever on the lock the other thread held at the fork
    print("child put", queue.qsize(), flush=True)
    os._exit(0)
_, status = os.waitpid(child, 0)
release.set()
thread.join(30)
print("child", os.waitstatus_to_exitcode(status), flush=True)
queue.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_another_thread_is_inside_the_queue_can_use_it(path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", FORKED_WHILE_LOCKED.format(src=SRC, path=str(path))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (child.stdout, child.stderr) == ("child put 1\nchild 0\n", "")


def test_errors_of_a_put_name_the_queue_and_its_file(path: Path) -> None:
    with DurableQueue[Any](path, "jobs", maxsize=2) as queue:
        with pytest.raises(
            CodecError,
            match=r"nothing of the batch was stored in DurableQueue\('.*queue.db', 'jobs'",
        ):
            queue.put({1})
        with pytest.raises(
            ValueError, match=r"more than maxsize=2 of DurableQueue\('.*queue.db', 'jobs'"
        ):
            queue.put_many([1, 2, 3])


def test_a_read_only_open_looks_and_refuses_every_write(path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no queue file at '.*queue.db'"):
        DurableQueue(path, read_only=True)
    assert not path.exists()
    with DurableQueue[int](path, "jobs") as queue:
        queue.put_many([1, 2])
    with pytest.raises(KeyError, match=r"no queue named 'other' in '.*queue.db'"):
        DurableQueue(path, "other", read_only=True)
    with DurableQueue[int](path, "jobs", read_only=True) as looking:
        assert looking.counts().ready == 2
        assert [row[2] for row in looking.peek()] == [b"1", b"2"]
        with pytest.raises(QueueReadOnly, match=r"'.*queue.db' was opened read_only=True"):
            looking.put(3)
        with pytest.raises(QueueReadOnly, match="was opened read_only=True"):
            looking.get()
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["queue.db"]


def test_a_lapse_of_more_leases_than_sqlite_takes_variables_returns_them_all(
    path: Path,
) -> None:
    with DurableQueue[int](path, max_lapses=1) as queue:
        # The default limit is 32,766 variables in a statement (some builds allow more).
        queue.connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        queue.put_many(list(range(3000)))
        assert len(queue.get_many(2000)) == 2000
        queue.connection().execute("UPDATE items SET lease_expires = 0")
        assert queue.release_expired() == 2000
        assert len(queue.dead_letters(5000)) == 2000  # max_lapses=1
        assert queue.counts().ready == 1000


class _CtrlCAfterBegin(sqlite3.Connection):
    """A connection whose next `BEGIN IMMEDIATE` is followed by a Ctrl-C, once armed."""

    armed = False

    def execute(self, sql: str, *parameters: Any) -> sqlite3.Cursor:
        cursor = super().execute(sql, *parameters)
        if sql == "BEGIN IMMEDIATE" and _CtrlCAfterBegin.armed:
            _CtrlCAfterBegin.armed = False
            raise KeyboardInterrupt  # as a Ctrl-C right after the BEGIN returned
        return cursor


def test_a_ctrl_c_between_begin_and_commit_leaves_the_next_call_working(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = sqlite3.connect

    def connect_interrupting(*arguments: Any, **options: Any) -> sqlite3.Connection:
        return connect(*arguments, **options, factory=_CtrlCAfterBegin)

    monkeypatch.setattr(sqlite3, "connect", connect_interrupting)
    with DurableQueue[int](path) as queue:
        queue.put(1)
        _CtrlCAfterBegin.armed = True
        with pytest.raises(KeyboardInterrupt):
            queue.put_many([2, 20])  # a batch: one transaction
        queue.put(3)  # the interrupted transaction was never committed: rolled back
        taken = queue.get_many(10)
        assert [leased.item for leased in taken] == [1, 3]
        queue.ack_many(taken)
