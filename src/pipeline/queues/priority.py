"""A bounded priority queue: most urgent first, first in first out among equals.

`PriorityQueue` is a `SafeQueue` with another storage behind the same hooks, so it
keeps everything else of `SafeQueue` (blocking, timeouts, `shutdown`, `task_done`,
batches) and can serve as any link of a pipeline. Lower priorities run first; the six
labels of `Priority` are ints from 0 (`BLOCKER`) to 5 (`DEFERRED`), and any int works.

Storage is one FIFO per priority level, holding whole batches (a batch put with one
priority is one chunk, handed out again without touching each item in Python code),
plus a sorted list of the levels that hold items. That is a heap whose keys are the
few distinct priorities instead of every item: FIFO among equals comes from each
level being a FIFO (the global order of arrival), and the items are never compared.
One item at a time, `put` and `get` work on the levels directly: no batch object, no
hook call, and a wake-up call only when a getter or putter waits; their waits are
`SafeQueue`'s own. A subclass that replaces a storage hook is served through the hooks.

The priority of an item put without one: `priority=` given to `put`/`put_many` wins;
else `priority_of(item)` if the queue has that function; else `default_priority`
(`MEDIUM`). The pipeline's private end-of-stream markers always sort after every
priority, so a stage sees it only once everything put before it has been taken.

Aging (`aging_seconds=A`): an item of priority p put at time t is served as if its key
were `t + p * A`, so each priority level is worth A seconds of waiting. A `DEFERRED`
item put at t is served before any `BLOCKER` item put after `t + 5 * A`: under any
sustained load it waits a bounded time. The keys only grow with time within a level,
so each level stays a FIFO and a get compares the heads of the non-empty levels.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from itertools import repeat
from queue import Full
from typing import Any, TypeVar

from pipeline._checks import integer, number
from pipeline.safequeue import Marker, SafeQueue, ShutDown, _check_timeout
from pipeline.worker import END_OF_STREAM, is_end_marker

__all__ = ["LevelStatistics", "Priority", "PriorityQueue"]

T = TypeVar("T")

_MARKER = type(END_OF_STREAM)  # every end-of-stream marker is an instance (failures too)

_ALONE = 3  # the length of a level's chunk that holds one item put alone

# The storage hooks; a subclass that replaces one is served through them (see `put`).
_STORAGE_HOOKS = ("_init", "_qsize", "_put", "_get", "_put_many", "_get_many")


class Priority(IntEnum):
    """The six labels of the optimizer's job queue; lower runs first."""

    BLOCKER = 0
    CRITICAL = 1
    HIGH = 2
    MEDIUM = 3
    LOW = 4
    DEFERRED = 5


@dataclass(frozen=True, slots=True)
class LevelStatistics:
    """One priority level of a `PriorityQueue`: its depth and how long its oldest item waited."""

    priority: int
    depth: int
    oldest_age_seconds: float


class _Batch(list[Any]):
    """A batch on its way to storage, carrying its priority (one int, or one per item)."""

    priorities: int | list[int]


class _Level:
    """The FIFO of one priority level, oldest first: chunks of (time put, items), and
    (time put, item, None) for an item put alone.

    An item put alone gets no list of its own: a list per queued item is a container
    the cyclic garbage collector walks at every collection, which cost 27% of the time
    of 200,000 single puts and gets. Its tuple, like a `queue.PriorityQueue` entry, is
    dropped from the collector's lists once it holds no containers.
    """

    __slots__ = ("chunks", "head", "size")

    def __init__(self) -> None:
        # Invariant: size == the items of every chunk - head; head is 0 at a lone item.
        self.chunks: deque[tuple[Any, ...]] = deque()
        self.head = 0
        self.size = 0

    def take_one(self) -> Any:
        chunk = self.chunks[0]
        if len(chunk) == _ALONE:
            self.chunks.popleft()
            self.size -= 1
            return chunk[1]
        items = chunk[1]
        item = items[self.head]
        self.head += 1
        if self.head == len(items):
            self.chunks.popleft()
            self.head = 0
        self.size -= 1
        return item

    def take(self, max_items: int, *, head_chunk_only: bool = False) -> list[Any]:
        """Remove up to `max_items` from the head (from the head chunk only, if asked)."""
        taken: list[Any] = []
        while max_items > 0 and self.chunks and not (head_chunk_only and taken):
            chunk = self.chunks[0]
            if len(chunk) == _ALONE:
                self.chunks.popleft()
                taken.append(chunk[1])
                max_items -= 1
                continue
            items = chunk[1]
            stop = min(len(items), self.head + max_items)
            part = items if self.head == 0 and stop == len(items) else items[self.head : stop]
            if stop == len(items):
                self.chunks.popleft()
                self.head = 0
            else:
                self.head = stop
            if taken:
                taken.extend(part)
            else:
                taken = part
            max_items -= len(part)
        self.size -= len(taken)
        return taken


class PriorityQueue(SafeQueue[T]):
    """Create a priority queue holding at most `maxsize` items of all priorities together.

    Args:
        maxsize: the most items held (0: unbounded), counting every priority.
        default_priority: the priority of an item put without one (and no `priority_of`).
        priority_of: a function giving an item's priority when none is passed to `put`;
            it runs in the putting thread, before the queue's lock is taken.
        aging_seconds: if given, each priority level is worth this many seconds of
            waiting, so low-priority work is served after a bounded wait (see the module).
        clock: the monotonic clock behind aging and ages (tests pass a fake one).

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range, named.
    """

    _storage_is_ours = True
    """Whether put and get may skip the storage hooks: not in a subclass that replaces one."""
    _spare_level: _Level | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if any(hook in vars(cls) for hook in _STORAGE_HOOKS):
            cls._storage_is_ours = False

    def __init__(
        self,
        maxsize: int = 0,
        *,
        default_priority: int = Priority.MEDIUM,
        priority_of: Callable[[T], int] | None = None,
        aging_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_priority = integer("default_priority", default_priority)
        if priority_of is not None and not callable(priority_of):
            raise TypeError(f"priority_of must be callable, got {type(priority_of).__name__}")
        self.priority_of = priority_of
        if aging_seconds is not None and number("aging_seconds", aging_seconds) <= 0:
            raise ValueError(
                f"aging_seconds must be > 0 (or None for no aging), got {aging_seconds}"
            )
        self.aging_seconds = aging_seconds
        self.clock = clock
        # Getters inside `_wait_for_items`, guarded by the mutex: a single put wakes
        # not_empty only when this is non-zero (a getter waits on nothing else). The
        # count is raised before the wait and lowered after it, so a Ctrl-C between the
        # two can only leave it too high (a wake-up nobody needs), never too low.
        self._waiting_getters = 0
        super().__init__(maxsize)

    # One item at a time, put and get work on the storage directly, in one method each:
    # through `SafeQueue` they cost a batch object, four hook calls and two wake-up
    # calls per item, and ran at 0.59x a `queue.PriorityQueue`. The waits, the fair
    # putters' line and Ctrl-C are still `SafeQueue`'s, through the methods it waits with itself.

    def put(
        self,
        item: T,
        block: bool = True,
        timeout: float | None = None,
        *,
        priority: int | None = None,
    ) -> None:
        """Put `item` with `priority` (or the queue's rule for it), blocking while full.

        Raises:
            TypeError: `priority` (or what `priority_of` returned) is not an int.
            queue.Full: no room in time.
            ShutDown: the queue has been shut down.
        """
        if isinstance(item, Marker) or not self._storage_is_ours:
            self._put_chunk(self._batch([item], priority), block, timeout)
            return
        if type(priority) is not int:
            priority = self._priority_of_one(item, priority)
        with self.mutex:
            if self.is_shutdown:
                raise ShutDown
            if self.maxsize > 0:
                if block:
                    _check_timeout(timeout)
                if self._must_wait(1):
                    if not block:
                        raise Full
                    self._wait_for_room(1, timeout)
            level = self._levels.get(priority)
            if level is None:
                level = self._levels[priority] = self._spare_level or _Level()
                self._spare_level = None
                bisect.insort(self._priorities, priority)
            level.chunks.append((self.clock(), item, None))
            level.size += 1
            self._size += 1
            self.unfinished_tasks += 1
            if self._size > self._high_water_mark:
                self._high_water_mark = self._size
            if self._waiting_getters:
                self.not_empty.notify()

    def put_nowait(self, item: T, *, priority: int | None = None) -> None:
        """Put `item` if there is room now, else raise `queue.Full`."""
        self.put(item, False, priority=priority)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return the most urgent item, blocking while the queue is empty.

        Raises:
            queue.Empty: nothing arrived in time (or `block` is false and the queue is empty).
            ShutDown: the queue is shut down and drained.
        """
        if not self._storage_is_ours:
            return super().get(block, timeout)
        with self.mutex:
            if not self._size or (block and timeout is not None and timeout < 0):
                self._wait_for_items(block, timeout)
            priorities = self._priorities
            if not priorities or self.aging_seconds is not None:
                item: T = PriorityQueue._get(self)
            else:
                priority = priorities[0]
                level = self._levels[priority]
                if len(level.chunks[0]) == _ALONE:  # what a single put stores
                    item = level.chunks.popleft()[1]
                    level.size -= 1
                else:
                    item = level.take_one()
                if not level.size:
                    del self._levels[priority]
                    del priorities[0]
                    self._spare_level = level  # one put, one get: no new level each time
                self._size -= 1
            if self._waiting_putters:  # each putter waiting on not_full holds a ticket there
                self.not_full.notify_all()
            return item

    def put_many(
        self,
        items: Iterable[T],
        block: bool = True,
        timeout: float | None = None,
        *,
        copy: bool = True,
        priority: int | None = None,
    ) -> None:
        """Put all of `items` in order and in one lock round-trip, all with `priority`.

        Without `priority`, each item gets the queue's rule (`priority_of`, else
        `default_priority`). Blocks for room as `SafeQueue.put_many` does; the batch is
        always copied (the priorities travel with the copy), so `copy` is accepted for
        the link protocol only.

        Raises:
            TypeError: a priority is not an int.
            ValueError: the batch is larger than `maxsize`.
            queue.Full: no room for the whole batch in time.
            ShutDown: the queue has been shut down.
        """
        super().put_many(self._batch(items, priority), block, timeout, copy=False)

    def levels(self) -> list[LevelStatistics]:
        """Return each non-empty priority level, most urgent first: depth and oldest age.

        The oldest age of the `CRITICAL` level is the "critical backlog" a dashboard shows.
        """
        with self.mutex:
            now = self.clock()
            return [
                LevelStatistics(p, level.size, now - level.chunks[0][0])
                for p in self._priorities
                if (level := self._levels[p]).size
            ]

    def _batch(self, items: Iterable[T], priority: int | None) -> _Batch:
        """Copy `items` into a batch with its priorities, outside the lock."""
        batch = _Batch(items)
        if priority is not None or self.priority_of is None:
            batch.priorities = self._given_priority(priority)
        else:
            rule = self.priority_of
            batch.priorities = [
                _checked_priority(rule(item), "priority_of(item)") if not is_end_marker(item) else 0
                for item in batch
            ]
        return batch

    def _priority_of_one(self, item: T, priority: int | None) -> int:
        """The priority of one item (not a marker) put with `priority`, outside the lock."""
        if priority is None and self.priority_of is not None:
            return _checked_priority(self.priority_of(item), "priority_of(item)")
        return self._given_priority(priority)

    def _given_priority(self, priority: int | None) -> int:
        """`priority` checked, or the default for None."""
        if type(priority) is int or type(priority) is Priority:
            return priority
        if priority is None:
            return self.default_priority
        return _checked_priority(priority, "priority")

    # Storage hooks, called with the mutex held (see SafeQueue).

    def _init(self, maxsize: int) -> None:
        # Invariants: _priorities is sorted and holds exactly the keys of _levels;
        # _size == sum of the levels' sizes + len(_after_all).
        self._levels: dict[int, _Level] = {}
        self._priorities: list[int] = []
        self._after_all: deque[Any] = deque()
        self._spare_level = None  # an empty level, kept for reuse
        self._size = 0

    def _qsize(self) -> int:
        return self._size

    # The per-item hooks call this class's batch hooks by name, not through self: a
    # subclass overriding only the per-item hooks gets batch hooks that call them.

    def _put(self, item: T) -> None:
        PriorityQueue._put_many(self, self._batch([item], None))

    def _get(self) -> T:
        if not self._priorities:
            return PriorityQueue._get_many(self, 1)[0]  # only end-of-stream markers are left
        priority = self._priorities[0] if self.aging_seconds is None else self._next_priority()
        level = self._levels[priority]
        item: T = level.take_one()
        if not level.size:
            del self._levels[priority]
            self._priorities.remove(priority)
        self._size -= 1
        return item

    def _put_many(self, items: list[T]) -> None:
        priorities = getattr(items, "priorities", self.default_priority)
        now = self.clock()
        if len(items) == 1 and not isinstance(items[0], _MARKER):
            priority = priorities if isinstance(priorities, int) else priorities[0]
            level = self._levels.get(priority)
            if level is not None:  # the common case, inlined: a level that has items
                level.chunks.append((now, items))
                level.size += 1
                self._size += 1
                return
            self._store(priority, now, items)
            return
        if isinstance(priorities, int) and not _holds_marker(items):
            self._store(priorities, now, items)
            return
        each = [priorities] * len(items) if isinstance(priorities, int) else priorities
        start = 0
        for index, item in enumerate(items):
            marker = isinstance(item, _MARKER)
            if marker or index + 1 == len(items) or each[index + 1] != each[index]:
                run = items[start:index] if marker else items[start : index + 1]
                if run:
                    self._store(each[index], now, run)
                if marker:
                    self._after_all.append(item)
                    self._size += 1
                start = index + 1

    def _get_many(self, max_items: int) -> list[T]:
        taken: list[T] = []
        while len(taken) < max_items and self._priorities:
            priority = self._next_priority()
            level = self._levels[priority]
            # With aging, another level's head may come before this level's next chunk.
            part = level.take(
                max_items - len(taken), head_chunk_only=self.aging_seconds is not None
            )
            if not level.size:
                del self._levels[priority]
                self._priorities.remove(priority)
            if taken:
                taken.extend(part)
            else:
                taken = part
        while len(taken) < max_items and self._after_all and not self._priorities:
            taken.append(self._after_all.popleft())
        self._size -= len(taken)
        return taken

    def _store(self, priority: int, now: float, items: list[T]) -> None:
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = _Level()
            bisect.insort(self._priorities, priority)
        level.chunks.append((now, items))
        level.size += len(items)
        self._size += len(items)

    def _wait_for_items(self, block: bool, timeout: float | None) -> None:
        self._waiting_getters += 1
        try:
            super()._wait_for_items(block, timeout)
        finally:
            self._waiting_getters -= 1

    def _next_priority(self) -> int:
        """The level to serve next: the most urgent, or with aging the smallest head key."""
        if self.aging_seconds is None:
            return self._priorities[0]
        aging = self.aging_seconds
        return min(self._priorities, key=lambda p: self._levels[p].chunks[0][0] + p * aging)


def _checked_priority(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int (or a Priority), got {type(value).__name__}")
    return value


def _holds_marker(items: list[Any]) -> bool:
    """Whether an end-of-stream marker is in `items` (checked in C, calling no user code)."""
    return any(map(isinstance, items, repeat(_MARKER)))
