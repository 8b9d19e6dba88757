"""A bounded, thread-safe FIFO queue built from one lock and three conditions.

`SafeQueue` behaves like the standard library's `queue.Queue` (it raises the same
`queue.Full` and `queue.Empty`, and has Python 3.13's `shutdown()` on every supported
Python) and adds what a pipeline needs: moving a whole list of items in one lock
round-trip, and a statistics snapshot that shows where producers and consumers waited.

Storage is open for subclasses through the standard library's hooks (`_init`,
`_qsize`, `_put`, `_get`), so a LIFO or priority queue is a short subclass, exactly as
in CPython's `queue.py`. `SafeQueue` itself stores a deque of chunks (the lists handed
to `put_many`), so a batch goes in and comes out without touching each item in Python
code; its batch hooks `_put_many` and `_get_many` are that fast path. Besides `maxsize`
items, a queue may be bounded in bytes (`max_bytes`): a batch weighs its length times
`sys.getsizeof` of its first item, one call per batch, so that large items (pages,
images) fill it long before `maxsize` does. A subclass that
replaces the per-item hooks but not the batch ones gets batch hooks built from its
per-item ones, so one queue never mixes two storages.

The engine talks to every link through `LinkQueue`, a small protocol (batch put, batch
get, shutdown, statistics) that `SafeQueue` and its subclasses satisfy, and that a
queue kept elsewhere (a SQLite file) can implement too.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from queue import Empty, Full
from typing import Any, Generic, Protocol, TypeVar

from pipeline._checks import int_at_least, integer, positive_int
from pipeline._interrupts import ctrl_c_held, wait_slice
from pipeline.errors import ShutDown

__all__ = ["Empty", "Full", "LinkQueue", "Marker", "QueueStatistics", "SafeQueue", "ShutDown"]

T = TypeVar("T")
T_co = TypeVar("T_co")


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """A snapshot of a queue's depth and of the time spent waiting on it."""

    depth: int
    maxsize: int
    high_water_mark: int
    put_blocked_seconds: float
    get_waited_seconds: float


class Marker:
    """Base of the control items a pipeline sends through its queues (end of stream).

    A marker is not data: the one a put ends with is not counted in the high-water mark,
    so a queue's peak counts items only.
    """


class LinkQueue(Protocol[T_co]):
    """What the engine needs of the queue on a link between two stages.

    Puts and gets move whole lists; `shutdown(immediate=True)` must wake every blocked
    caller with `ShutDown`. End of stream travels through the queue as an ordinary item
    (a private marker), so a link needs no notion of it.
    """

    @property
    def maxsize(self) -> int:
        """The most items the queue holds (0: unbounded); a put is never larger than this."""
        ...

    def put_many(
        self, items: list[Any], block: bool = ..., timeout: float | None = ..., *, copy: bool = ...
    ) -> None:
        """Put all of `items` in order, blocking for room; raise `ShutDown` once shut down."""
        ...

    def get_many(
        self, max_items: int, block: bool = ..., timeout: float | None = ...
    ) -> list[T_co]:
        """Take 1 to `max_items` items, blocking for one; raise `ShutDown` once shut and drained."""
        ...

    def shutdown(self, immediate: bool = ...) -> None:
        """Refuse further puts; with `immediate`, drop what is queued and wake every waiter."""
        ...

    def statistics(self) -> QueueStatistics:
        """Return a snapshot of the depth, high-water mark and time spent blocked."""
        ...


class SafeQueue(Generic[T]):
    """Create a FIFO queue holding at most `maxsize` items (0 means unbounded, as in `queue.Queue`).

    With `max_bytes`, it also holds at most that many bytes, each batch put weighing
    its length times `sys.getsizeof(batch[0])` (shallow: a tuple holding a page weighs
    only the tuple); one batch heavier than that still enters an empty queue.

    Raises:
        TypeError: `maxsize` or `max_bytes` is not an int.
        ValueError: `maxsize` or `max_bytes` is negative.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        per_item = "_put" in own or "_get" in own
        if per_item and "_put_many" not in own and "_get_many" not in own:
            cls._put_many = SafeQueue._put_each  # type: ignore[method-assign]
            cls._get_many = SafeQueue._get_each  # type: ignore[method-assign]

    def __init__(self, maxsize: int = 0, *, max_bytes: int = 0) -> None:
        if integer("maxsize", maxsize) < 0:
            raise ValueError(f"maxsize must be >= 0 (0 means unbounded), got {maxsize}")
        self.maxsize = maxsize
        self.max_bytes = int_at_least("max_bytes", max_bytes, 0)
        # Everything below, and the storage behind the hooks, is guarded by `mutex`.
        # The conditions share it:
        # not_empty is notified when items are added or on shutdown; getters wait on it.
        # not_full is notified (all waiters) when items are removed, when the first
        # waiting putter changes, or on shutdown; putters wait on it. All, because
        # putters need different amounts of room (put_many is all-or-nothing).
        # Putters that must wait are served in arrival order: each takes a ticket in
        # `_waiting_putters`, and only the first ticket may put, so a large batch is not
        # starved by single items that keep slipping into the room it waits for.
        # all_tasks_done is notified when unfinished_tasks drops to zero; join() waits on it.
        # The mutex is always taken as `with self.mutex:`, never through a condition: a
        # Condition's __enter__ is Python code, and a Ctrl-C raised in it once the lock is
        # taken leaves the lock taken for good (a hang the fault fuzzer found on 3.13t).
        self.mutex = threading.Lock()
        self.not_empty = threading.Condition(self.mutex)
        self.not_full = threading.Condition(self.mutex)
        self.all_tasks_done = threading.Condition(self.mutex)
        self.unfinished_tasks = 0
        self.is_shutdown = False
        self._waiting_putters: deque[object] = deque()
        # The weight of what is queued, when `max_bytes` is set: estimated per batch, so
        # it is reset whenever the queue empties, and an error cannot accumulate.
        self._bytes = 0
        self._high_water_mark = 0
        self._put_blocked_seconds = 0.0
        self._get_waited_seconds = 0.0
        self._init(maxsize)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Put `item` at the tail, blocking while the queue is full.

        With `block` false, or once `timeout` seconds have passed, raise `queue.Full`
        instead of waiting.

        Raises:
            queue.Full: no room in time.
            ShutDown: the queue has been shut down.
        """
        self._put_chunk([item], block, timeout)

    def put_nowait(self, item: T) -> None:
        """Put `item` if there is room now, else raise `queue.Full`."""
        self._put_chunk([item], False, None)

    def put_many(
        self,
        items: Iterable[T],
        block: bool = True,
        timeout: float | None = None,
        *,
        copy: bool = True,
    ) -> None:
        """Put all of `items` in order, in one lock round-trip: the whole batch or nothing.

        Blocks until there is room for the whole batch, as `put` does for one item. With
        `copy=False`, `items` must be a list, and the queue keeps that list itself rather
        than a copy: the caller hands it over and must not change it afterwards.

        Raises:
            TypeError: `copy=False` with something other than a list.
            ValueError: the batch is larger than `maxsize`, so it could never fit.
            queue.Full: no room for the whole batch in time.
            ShutDown: the queue has been shut down.
        """
        if self.is_shutdown:
            raise ShutDown
        if copy:
            chunk = list(items)
        elif isinstance(items, list):
            chunk = items
        else:
            raise TypeError(f"put_many(copy=False) needs a list, got {type(items).__name__}")
        if 0 < self.maxsize < len(chunk):
            raise ValueError(
                f"put_many got {len(chunk)} items, more than maxsize={self.maxsize} could ever hold"
            )
        if chunk:
            self._put_chunk(chunk, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return the item at the head, blocking while the queue is empty.

        Raises:
            queue.Empty: nothing arrived in time (or `block` is false and the queue is empty).
            ShutDown: the queue is shut down and drained.
        """
        with self.mutex:
            self._wait_for_items(block, timeout)
            item = self._get()
            self._weigh_out(item, 1)
            self.not_full.notify_all()
            return item

    def get_nowait(self) -> T:
        """Remove and return an item if one is there now, else raise `queue.Empty`."""
        return self.get(False)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        """Remove and return between 1 and `max_items` items from the head, in one lock round-trip.

        Blocks until at least one item is there, as `get` does.

        Raises:
            TypeError, ValueError: `max_items` is not an int >= 1.
            queue.Empty: nothing arrived in time.
            ShutDown: the queue is shut down and drained.
        """
        positive_int("max_items", max_items)
        with self.mutex:
            self._wait_for_items(block, timeout)
            items = self._get_many(max_items)
            if items:
                self._weigh_out(items[0], len(items))
            self.not_full.notify_all()
            return items

    def task_done(self) -> None:
        """Mark one item taken from the queue as fully processed, releasing `join()` at zero.

        Raises:
            ValueError: called more times than there were items put.
        """
        with self.mutex:
            unfinished = self.unfinished_tasks - 1
            if unfinished < 0:
                raise ValueError("task_done() called too many times")
            if unfinished == 0:
                self.all_tasks_done.notify_all()
            self.unfinished_tasks = unfinished

    def join(self) -> None:
        """Block until every item put has been marked done with `task_done()`."""
        with self.mutex:
            while self.unfinished_tasks:
                _wait(self.all_tasks_done, None, TimeoutError)

    def shutdown(self, immediate: bool = False) -> None:
        """Shut the queue down: later puts raise `ShutDown`, and gets do once it is drained.

        With `immediate`, discard the items still queued (counting them as done, so
        `join()` returns once the items already taken are done too) and wake every blocked
        caller now. Calling it again is harmless.
        """
        with self.mutex:
            self.is_shutdown = True
            if immediate:
                discarded = 0
                while self._qsize():
                    taken = len(self._get_many(max(1, self._qsize())))
                    if not taken:  # storage a Ctrl-C cut short mid-step: nothing to free
                        break
                    discarded += taken
                self.unfinished_tasks = max(0, self.unfinished_tasks - discarded)
                self._bytes = 0
                self.all_tasks_done.notify_all()
            self.not_empty.notify_all()
            self.not_full.notify_all()

    def qsize(self) -> int:
        """Return the number of items queued now (a snapshot: it may change at once)."""
        with self.mutex:
            return self._qsize()

    def empty(self) -> bool:
        """Return whether the queue is empty now (a snapshot: it may change at once)."""
        with self.mutex:
            return not self._qsize()

    def full(self) -> bool:
        """Return whether the queue is full now (a snapshot: it may change at once)."""
        with self.mutex:
            return 0 < self.maxsize <= self._qsize()

    def statistics(self) -> QueueStatistics:
        """Return a snapshot of the depth, high-water mark and time spent blocked."""
        with self.mutex:
            return QueueStatistics(
                depth=self._qsize(),
                maxsize=self.maxsize,
                high_water_mark=self._high_water_mark,
                put_blocked_seconds=self._put_blocked_seconds,
                get_waited_seconds=self._get_waited_seconds,
            )

    def _put_chunk(self, chunk: list[T], block: bool, timeout: float | None) -> None:
        with self.mutex:
            if self.is_shutdown:
                raise ShutDown
            if block and (self.maxsize > 0 or self.max_bytes > 0):
                _check_timeout(timeout)
            weight = len(chunk) * sys.getsizeof(chunk[0]) if self.max_bytes else 0
            if self._must_wait(len(chunk), weight):
                if not block:
                    raise Full
                self._wait_for_room(len(chunk), timeout, weight)
            self._put_many(chunk)
            self._bytes += weight
            self.unfinished_tasks += len(chunk)
            items = self._qsize() - isinstance(chunk[-1], Marker)
            self._high_water_mark = max(self._high_water_mark, items)
            self.not_empty.notify(len(chunk))

    def _must_wait(self, count: int, weight: int = 0) -> bool:
        """Whether a put of `count` items must wait: no room, or earlier putters waiting."""
        return bool(self._waiting_putters) or not self._fits(count, weight)

    def _fits(self, count: int, weight: int) -> bool:
        """Whether `count` items weighing `weight` bytes fit now; a lone batch always does."""
        if 0 < self.maxsize < self._qsize() + count:
            return False
        return not (0 < self.max_bytes < self._bytes + weight and self._qsize())

    def _weigh_out(self, first: object, count: int) -> None:
        """Take the weight of `count` items taken, led by `first`, off the queue's bytes."""
        if self.max_bytes:
            taken = count * sys.getsizeof(first)
            self._bytes = max(0, self._bytes - taken) if self._qsize() else 0

    def _wait_for_room(self, count: int, timeout: float | None, weight: int = 0) -> None:
        """Wait in line until this put of `count` items is first and fits; mutex held."""
        ticket = object()
        self._waiting_putters.append(ticket)
        started = time.monotonic()
        try:
            deadline = _deadline(started, timeout)
            while self._waiting_putters[0] is not ticket or not self._fits(count, weight):
                _wait(self.not_full, deadline, Full)
                if self.is_shutdown:
                    raise ShutDown
        finally:
            self._waiting_putters.remove(ticket)
            self.not_full.notify_all()  # the next in line may fit now
            self._put_blocked_seconds += time.monotonic() - started

    def _wait_for_items(self, block: bool, timeout: float | None) -> None:
        """Return once an item is queued; called with the mutex held.

        The checks come in `queue.Queue`'s order: a shut-down, drained queue raises
        `ShutDown` before anything else, and a negative timeout is refused even when
        an item is there.
        """
        if self.is_shutdown and not self._qsize():
            raise ShutDown
        if not block:
            if not self._qsize():
                raise Empty
            return
        _check_timeout(timeout)
        if self._qsize():
            return
        started = time.monotonic()
        try:
            deadline = _deadline(started, timeout)
            while not self._qsize():
                _wait(self.not_empty, deadline, Empty)
                if self.is_shutdown and not self._qsize():
                    raise ShutDown
        finally:
            self._get_waited_seconds += time.monotonic() - started

    # Storage hooks, as in the standard library's queue.Queue; always called with the
    # mutex held. Override `_init`, `_qsize`, `_put` and `_get` for another order.

    def _init(self, maxsize: int) -> None:
        # Invariant: _size == sum(len(chunk) for chunk in _chunks) - _head.
        self._chunks: deque[list[T]] = deque()
        self._head = 0
        self._size = 0

    def _qsize(self) -> int:
        return self._size

    def _put(self, item: T) -> None:
        SafeQueue._put_many(self, [item])

    def _get(self) -> T:
        chunk = self._chunks[0]
        item = chunk[self._head]
        self._head += 1
        if self._head == len(chunk):
            self._chunks.popleft()
            self._head = 0
        self._size -= 1
        return item

    def _put_many(self, items: list[T]) -> None:
        """Store `items` (a non-empty list the queue now owns) at the tail."""
        self._chunks.append(items)
        self._size += len(items)

    def _get_many(self, max_items: int) -> list[T]:
        """Remove up to `max_items` from the head; whole chunks are handed over without copying."""
        taken: list[T] = []
        while max_items > 0 and self._chunks:
            chunk = self._chunks[0]
            stop = min(len(chunk), self._head + max_items)
            part = chunk if self._head == 0 and stop == len(chunk) else chunk[self._head : stop]
            if stop == len(chunk):
                self._chunks.popleft()
                self._head = 0
            else:
                self._head = stop
            if taken:
                taken.extend(part)
            else:
                taken = part
            max_items -= len(part)
        self._size -= len(taken)
        return taken

    def _put_each(self, items: list[T]) -> None:
        """The batch put of a subclass with its own per-item storage."""
        for item in items:
            self._put(item)

    def _get_each(self, max_items: int) -> list[T]:
        """The batch get of a subclass with its own per-item storage."""
        return [self._get() for _ in range(min(max_items, self._qsize()))]


def _check_timeout(timeout: float | None) -> None:
    """Reject a negative timeout up front, where `queue.Queue` does."""
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


def _deadline(started: float, timeout: float | None) -> float | None:
    return None if timeout is None else started + timeout


def _wait(
    condition: threading.Condition, deadline: float | None, timed_out: type[Exception]
) -> None:
    """Wait once on `condition` (the caller loops), raising `timed_out` past the deadline.

    On the main thread the wait is cut into slices, and Ctrl-C is held while it lasts
    (`pipeline._interrupts`): a Ctrl-C whose wake-up was lost is still seen, and its
    `KeyboardInterrupt` is raised here, with the mutex held, rather than inside
    `Condition.wait`, where it could strike while the mutex is let go.
    """
    slice_seconds = wait_slice()
    if deadline is None:
        seconds = slice_seconds
    else:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timed_out
        seconds = remaining if slice_seconds is None else min(remaining, slice_seconds)
    if slice_seconds is None:
        condition.wait(seconds)
        return
    with ctrl_c_held():
        condition.wait(seconds)
