"""Tests for SafeQueue.

The behaviours `SafeQueue` shares with `queue.Queue` run against both implementations
(the shutdown ones against `queue.Queue` only where it has them, Python 3.13+), so the
standard library is the reference. Blocking is proven with a helper thread: the call
must still be waiting after a bounded wait, and must return once released.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Empty, Full, SafeQueue, ShutDown

STILL_BLOCKED_AFTER = 0.1  # seconds a blocking call must still be waiting
RELEASED_WITHIN = 5.0  # seconds a released call may take to return


class QueueLike(Protocol):
    maxsize: int

    def put(self, item: Any, block: bool = ..., timeout: float | None = ...) -> None: ...
    def get(self, block: bool = ..., timeout: float | None = ...) -> Any: ...
    def put_nowait(self, item: Any) -> None: ...
    def get_nowait(self) -> Any: ...
    def qsize(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    def task_done(self) -> None: ...
    def join(self) -> None: ...


HAS_STDLIB_SHUTDOWN = sys.version_info >= (3, 13)
IMPLEMENTATIONS = [SafeQueue, queue.Queue]
SHUTDOWN_IMPLEMENTATIONS = [SafeQueue, queue.Queue] if HAS_STDLIB_SHUTDOWN else [SafeQueue]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: cls.__module__ + "." + cls.__name__)
def make_queue(request: pytest.FixtureRequest) -> Callable[[int], Any]:
    cls: Callable[[int], Any] = request.param
    return cls


@pytest.fixture(params=SHUTDOWN_IMPLEMENTATIONS, ids=lambda cls: cls.__module__)
def make_shutdown_queue(request: pytest.FixtureRequest) -> Callable[[int], Any]:
    cls: Callable[[int], Any] = request.param
    return cls


class CallInThread:
    """Run `call` in a helper thread and record its result or exception."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._call = call
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished.set()

    def assert_blocked(self) -> None:
        assert not self.finished.wait(STILL_BLOCKED_AFTER), "the call did not block"

    def join(self) -> None:
        assert self.finished.wait(RELEASED_WITHIN), "the call was not released"
        self.thread.join(RELEASED_WITHIN)


@pytest.fixture
def calls() -> Iterator[list[CallInThread]]:
    """Helper-thread calls started by a test; each is joined, released or not."""
    started: list[CallInThread] = []
    yield started
    for call in started:
        call.thread.join(RELEASED_WITHIN)


def start(calls: list[CallInThread], call: Callable[[], object]) -> CallInThread:
    running = CallInThread(call)
    calls.append(running)
    return running


# Behaviours shared with queue.Queue.


def test_items_come_out_in_the_order_they_went_in(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(10)
    for item in range(5):
        q.put(item)
    assert [q.get() for _ in range(5)] == [0, 1, 2, 3, 4]


def test_none_and_falsy_items_are_data(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(0)
    items: list[object] = [None, 0, "", [], False]
    for item in items:
        q.put(item)
    assert [q.get_nowait() for _ in items] == items


def test_size_empty_full_and_maxsize(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(2)
    assert (q.qsize(), q.empty(), q.full(), q.maxsize) == (0, True, False, 2)
    q.put(1)
    assert (q.qsize(), q.empty(), q.full()) == (1, False, False)
    q.put(2)
    assert (q.qsize(), q.empty(), q.full()) == (2, False, True)


def test_unbounded_queue_is_never_full(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(0)
    for item in range(1000):
        q.put_nowait(item)
    assert not q.full()
    assert q.qsize() == 1000


def test_put_nowait_on_a_full_queue_raises_full(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(1)
    q.put_nowait("a")
    with pytest.raises(Full):
        q.put_nowait("b")
    with pytest.raises(Full):
        q.put("b", block=False)


def test_get_nowait_on_an_empty_queue_raises_empty(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(1)
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(block=False)


def test_put_times_out_with_full(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(1)
    q.put(1)
    with pytest.raises(Full):
        q.put(2, timeout=0.01)
    assert q.qsize() == 1


def test_get_times_out_with_empty(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(1)
    with pytest.raises(Empty):
        q.get(timeout=0.01)


def test_negative_timeout_is_rejected(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(1)
    q.put(1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put(2, timeout=-1)
    q.get()
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)


def test_get_blocks_until_an_item_is_put(
    make_queue: Callable[[int], Any], calls: list[CallInThread]
) -> None:
    q = make_queue(1)
    getter = start(calls, q.get)
    getter.assert_blocked()
    q.put("released")
    getter.join()
    assert getter.result == "released"


def test_put_blocks_until_an_item_is_taken(
    make_queue: Callable[[int], Any], calls: list[CallInThread]
) -> None:
    q = make_queue(1)
    q.put("first")
    putter = start(calls, lambda: q.put("second"))
    putter.assert_blocked()
    assert q.get() == "first"
    putter.join()
    assert putter.error is None
    assert q.get_nowait() == "second"


def test_join_blocks_until_every_item_is_done(
    make_queue: Callable[[int], Any], calls: list[CallInThread]
) -> None:
    q = make_queue(0)
    q.put(1)
    q.put(2)
    joiner = start(calls, q.join)
    q.get()
    q.task_done()
    joiner.assert_blocked()
    q.get()
    q.task_done()
    joiner.join()


def test_task_done_too_many_times_raises(make_queue: Callable[[int], Any]) -> None:
    q = make_queue(0)
    q.put(1)
    q.get()
    q.task_done()
    with pytest.raises(ValueError, match=r"task_done\(\) called too many times"):
        q.task_done()


def test_many_producers_and_consumers_deliver_each_item_once(
    make_queue: Callable[[int], Any],
) -> None:
    q = make_queue(8)
    producers, consumers, per_producer = 4, 4, 500
    start_together = threading.Barrier(producers + consumers)
    received: list[list[int]] = [[] for _ in range(consumers)]
    done = object()

    def produce(first: int) -> None:
        start_together.wait(RELEASED_WITHIN)
        for item in range(first, first + per_producer):
            q.put(item)

    def consume(into: list[int]) -> None:
        start_together.wait(RELEASED_WITHIN)
        while (item := q.get()) is not done:
            into.append(item)

    threads = [
        threading.Thread(target=produce, args=(n * per_producer,)) for n in range(producers)
    ] + [threading.Thread(target=consume, args=(received[n],)) for n in range(consumers)]
    for thread in threads:
        thread.start()
    for thread in threads[:producers]:
        thread.join(RELEASED_WITHIN)
    for _ in range(consumers):
        q.put(done)
    for thread in threads[producers:]:
        thread.join(RELEASED_WITHIN)
    everything = sorted(item for part in received for item in part)
    assert everything == list(range(producers * per_producer))


# Shutdown, as in Python 3.13's queue.Queue.


def test_put_after_shutdown_raises_shutdown(make_shutdown_queue: Callable[[int], Any]) -> None:
    q = make_shutdown_queue(2)
    q.shutdown()
    with pytest.raises(ShutDown):
        q.put(1)
    with pytest.raises(ShutDown):
        q.put_nowait(1)


def test_get_drains_then_raises_shutdown(make_shutdown_queue: Callable[[int], Any]) -> None:
    q = make_shutdown_queue(3)
    q.put(1)
    q.put(2)
    q.shutdown()
    assert q.is_shutdown
    assert [q.get(), q.get()] == [1, 2]
    with pytest.raises(ShutDown):
        q.get()
    with pytest.raises(ShutDown):
        q.get_nowait()


def test_immediate_shutdown_discards_items(make_shutdown_queue: Callable[[int], Any]) -> None:
    q = make_shutdown_queue(3)
    q.put(1)
    q.put(2)
    q.shutdown(immediate=True)
    assert q.qsize() == 0
    with pytest.raises(ShutDown):
        q.get()


def test_shutting_down_twice_is_harmless(make_shutdown_queue: Callable[[int], Any]) -> None:
    q = make_shutdown_queue(1)
    q.shutdown()
    q.shutdown(immediate=True)
    q.shutdown()
    with pytest.raises(ShutDown):
        q.get_nowait()


def test_shutdown_wakes_every_blocked_getter(
    make_shutdown_queue: Callable[[int], Any], calls: list[CallInThread]
) -> None:
    q = make_shutdown_queue(1)
    getters = [start(calls, q.get) for _ in range(8)]
    getters[0].assert_blocked()
    q.shutdown()
    for getter in getters:
        getter.join()
        assert isinstance(getter.error, ShutDown)


def test_shutdown_wakes_every_blocked_putter(
    make_shutdown_queue: Callable[[int], Any], calls: list[CallInThread]
) -> None:
    q = make_shutdown_queue(1)
    q.put("filler")
    putters = [start(calls, lambda: q.put("more")) for _ in range(8)]
    putters[0].assert_blocked()
    q.shutdown()
    for putter in putters:
        putter.join()
        assert isinstance(putter.error, ShutDown)
    assert q.get() == "filler"


def test_immediate_shutdown_releases_join(
    make_shutdown_queue: Callable[[int], Any], calls: list[CallInThread]
) -> None:
    q = make_shutdown_queue(0)
    q.put(1)
    q.put(2)
    joiner = start(calls, q.join)
    joiner.assert_blocked()
    q.shutdown(immediate=True)
    joiner.join()


def test_non_immediate_shutdown_leaves_join_waiting_for_the_items(
    make_shutdown_queue: Callable[[int], Any], calls: list[CallInThread]
) -> None:
    q = make_shutdown_queue(0)
    q.put(1)
    joiner = start(calls, q.join)
    q.shutdown()
    joiner.assert_blocked()
    q.get()
    q.task_done()
    joiner.join()


@pytest.mark.skipif(not HAS_STDLIB_SHUTDOWN, reason="queue.ShutDown exists from Python 3.13")
def test_shutdown_is_the_standard_library_exception() -> None:
    assert ShutDown is queue.ShutDown  # type: ignore[attr-defined,unused-ignore]


# What SafeQueue adds: validation, batches, statistics.


def test_maxsize_must_be_a_non_negative_int() -> None:
    with pytest.raises(ValueError, match=r"maxsize must be >= 0 \(0 means unbounded\), got -1"):
        SafeQueue[int](-1)
    with pytest.raises(TypeError, match="maxsize must be an int, got float"):
        SafeQueue[int](2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="maxsize must be an int, got bool"):
        SafeQueue[int](True)


def test_put_many_and_get_many_keep_order_across_chunks() -> None:
    q = SafeQueue[int](100)
    q.put_many([1, 2, 3])
    q.put_many(range(4, 8))
    q.put(8)
    assert q.get_many(2) == [1, 2]
    assert q.get_many(4) == [3, 4, 5, 6]
    assert q.get_many(10) == [7, 8]
    assert q.qsize() == 0


def test_get_many_returns_what_is_there_up_to_the_limit() -> None:
    q = SafeQueue[str](10)
    q.put("only")
    assert q.get_many(5) == ["only"]
    with pytest.raises(Empty):
        q.get_many(5, block=False)
    with pytest.raises(Empty):
        q.get_many(5, timeout=0.01)


def test_get_many_needs_a_positive_limit() -> None:
    q = SafeQueue[int](1)
    with pytest.raises(ValueError, match="max_items must be >= 1, got 0"):
        q.get_many(0)
    with pytest.raises(TypeError, match="max_items must be an int, got str"):
        q.get_many("a")  # type: ignore[arg-type]


def test_put_many_larger_than_maxsize_is_rejected() -> None:
    q = SafeQueue[int](3)
    with pytest.raises(
        ValueError, match="put_many got 4 items, more than maxsize=3 could ever hold"
    ):
        q.put_many([1, 2, 3, 4])
    assert q.qsize() == 0


def test_put_many_goes_in_whole_or_not_at_all() -> None:
    q = SafeQueue[int](3)
    q.put(0)
    with pytest.raises(Full):
        q.put_many([1, 2, 3], block=False)
    with pytest.raises(Full):
        q.put_many([1, 2, 3], timeout=0.01)
    assert q.qsize() == 1
    q.put_many([1, 2])
    assert q.get_many(3) == [0, 1, 2]


def test_put_many_blocks_until_the_whole_batch_fits(calls: list[CallInThread]) -> None:
    q = SafeQueue[int](3)
    q.put_many([1, 2])
    putter = start(calls, lambda: q.put_many([3, 4]))
    putter.assert_blocked()
    assert q.get() == 1
    putter.join()
    assert q.get_many(3) == [2, 3, 4]


def test_get_many_blocks_until_an_item_is_put(calls: list[CallInThread]) -> None:
    q = SafeQueue[int](3)
    getter = start(calls, lambda: q.get_many(3))
    getter.assert_blocked()
    q.put_many([7, 8])
    getter.join()
    assert getter.result == [7, 8]


def test_put_many_of_nothing_is_a_no_op() -> None:
    q = SafeQueue[int](1)
    q.put(1)
    q.put_many([], block=False)
    assert q.qsize() == 1


def test_batches_count_as_tasks() -> None:
    q = SafeQueue[int](0)
    q.put_many([1, 2, 3])
    assert q.unfinished_tasks == 3
    q.get_many(3)
    for _ in range(3):
        q.task_done()
    q.join()


def test_batch_calls_follow_shutdown_rules() -> None:
    q = SafeQueue[int](5)
    q.put_many([1, 2, 3])
    q.shutdown()
    with pytest.raises(ShutDown):
        q.put_many([4])
    assert q.get_many(2) == [1, 2]
    assert q.get_many(2) == [3]
    with pytest.raises(ShutDown):
        q.get_many(2)


def test_shutdown_wakes_blocked_batch_callers(calls: list[CallInThread]) -> None:
    full = SafeQueue[int](2)
    full.put_many([1, 2])
    empty = SafeQueue[int](2)
    putter = start(calls, lambda: full.put_many([3]))
    getter = start(calls, lambda: empty.get_many(2))
    putter.assert_blocked()
    getter.assert_blocked()
    full.shutdown(immediate=True)
    empty.shutdown(immediate=True)
    putter.join()
    getter.join()
    assert isinstance(putter.error, ShutDown)
    assert isinstance(getter.error, ShutDown)


def test_statistics_report_depth_and_high_water_mark() -> None:
    q = SafeQueue[int](10)
    q.put_many([1, 2, 3, 4])
    q.get_many(3)
    q.put(5)
    stats = q.statistics()
    assert (stats.depth, stats.maxsize, stats.high_water_mark) == (2, 10, 4)
    assert stats.put_blocked_seconds == 0.0
    assert stats.get_waited_seconds == 0.0


def test_statistics_count_time_blocked_on_full_and_waited_on_empty(
    calls: list[CallInThread],
) -> None:
    q = SafeQueue[int](1)
    q.put(1)
    putter = start(calls, lambda: q.put(2))
    putter.assert_blocked()
    q.get()
    putter.join()
    q.get()
    getter = start(calls, q.get)
    getter.assert_blocked()
    q.put(3)
    getter.join()
    stats = q.statistics()
    assert stats.put_blocked_seconds >= STILL_BLOCKED_AFTER
    assert stats.get_waited_seconds >= STILL_BLOCKED_AFTER


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers()),
        st.tuples(st.just("put_many"), st.lists(st.integers(), max_size=6)),
        st.tuples(st.just("get"), st.none()),
        st.tuples(st.just("get_many"), st.integers(min_value=1, max_value=8)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(maxsize=st.integers(min_value=0, max_value=8), script=operations)
def test_behaves_like_a_bounded_deque(maxsize: int, script: list[tuple[str, Any]]) -> None:
    """Any sequence of non-blocking calls gives the same results as a plain deque model."""
    q = SafeQueue[int](maxsize)
    model: deque[int] = deque()

    def room_for(count: int) -> bool:
        return maxsize == 0 or len(model) + count <= maxsize

    for operation, argument in script:
        if operation == "put":
            if room_for(1):
                q.put_nowait(argument)
                model.append(argument)
            else:
                with pytest.raises(Full):
                    q.put_nowait(argument)
        elif operation == "put_many":
            if 0 < maxsize < len(argument):
                with pytest.raises(ValueError, match="more than maxsize"):
                    q.put_many(argument, block=False)
            elif room_for(len(argument)):
                q.put_many(argument, block=False)
                model.extend(argument)
            else:
                with pytest.raises(Full):
                    q.put_many(argument, block=False)
        elif not model:
            with pytest.raises(Empty):
                q.get_nowait() if operation == "get" else q.get_many(argument, block=False)
        elif operation == "get":
            assert q.get_nowait() == model.popleft()
        else:
            expected = [model.popleft() for _ in range(min(argument, len(model)))]
            assert q.get_many(argument, block=False) == expected
        assert q.qsize() == len(model)
        assert q.full() == (maxsize > 0 and len(model) >= maxsize)


# Waiting putters are served in arrival order: a batch waiting for room is
# not starved by single items that keep taking the room it waits for, and every get
# wakes the first in line as soon as it fits.


def test_a_small_putter_waits_behind_a_batch_that_came_first_and_follows_it_in(
    calls: list[CallInThread],
) -> None:
    q = SafeQueue[int](3)
    q.put_many([1, 2, 3])
    big = start(calls, lambda: q.put_many([10, 11, 12]))
    big.assert_blocked()
    small = start(calls, lambda: q.put(20))
    small.assert_blocked()
    assert q.get() == 1
    small.assert_blocked()
    assert q.get_many(2) == [2, 3]
    big.join()
    assert q.get_many(3) == [10, 11, 12]
    small.join()
    assert q.get() == 20
    assert big.error is None
    assert small.error is None


def test_a_putter_that_fits_is_not_held_back_by_a_putter_that_timed_out(
    calls: list[CallInThread],
) -> None:
    q = SafeQueue[int](3)
    q.put_many([1, 2, 3])
    with pytest.raises(Full):
        q.put_many([10, 11], timeout=0.01)
    assert q.get() == 1
    q.put(20, timeout=0)
    assert q.get_many(3) == [2, 3, 20]


def test_a_batch_is_not_starved_by_single_puts_that_keep_the_queue_nearly_full() -> None:
    q = SafeQueue[int](8)
    stop = threading.Event()
    batch_done = threading.Event()

    def single_putter() -> None:
        with contextlib.suppress(ShutDown):
            while not stop.is_set():
                q.put(0)

    def consumer() -> None:
        with contextlib.suppress(ShutDown):
            while not batch_done.is_set():
                q.get()

    def batch_putter() -> None:
        q.put_many([1] * 8)
        batch_done.set()

    threads = [threading.Thread(target=f) for f in (single_putter, consumer, batch_putter)]
    for thread in threads:
        thread.start()
    try:
        assert batch_done.wait(RELEASED_WITHIN), "the batch was starved by single puts"
    finally:
        stop.set()
        q.shutdown(immediate=True)
        for thread in threads:
            thread.join(RELEASED_WITHIN)


def test_put_many_after_shutdown_raises_shutdown_before_checking_the_batch() -> None:
    q = SafeQueue[int](2)
    q.shutdown()
    with pytest.raises(ShutDown):
        q.put_many([])
    with pytest.raises(ShutDown):
        q.put_many([1, 2, 3])


def test_a_negative_timeout_is_rejected_even_when_no_wait_is_needed(
    make_queue: Callable[[int], Any],
) -> None:
    q = make_queue(2)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put(1, timeout=-1)
    q.put(1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)


def test_put_many_without_copy_hands_the_list_itself_over() -> None:
    q = SafeQueue[int](10)
    batch = [1, 2, 3]
    q.put_many(batch, copy=False)
    assert q.get_many(10) is batch  # taken back whole: never copied
    q.put_many(batch)
    assert q.get_many(10) is not batch
    with pytest.raises(TypeError, match=r"put_many\(copy=False\) needs a list, got tuple"):
        q.put_many((1, 2), copy=False)


def test_a_marker_a_put_ends_with_is_not_counted_in_the_peak() -> None:
    from pipeline.safequeue import Marker

    q = SafeQueue[Any](10)
    q.put_many([1, 2, 3])
    q.put(Marker())
    assert q.statistics().high_water_mark == 3
    assert q.statistics().depth == 4
