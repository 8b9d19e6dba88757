"""CPython's own queue tests (`Lib/test/test_queue.py`), run against `SafeQueue`.

The standard library's test classes take the queue module under test as a class
attribute; here that "module" offers `SafeQueue` and two short subclasses made with the
storage hooks, exactly as `queue.LifoQueue` and `queue.PriorityQueue` are made from
`queue.Queue`. `FailingQueueTest` subclasses our `Queue` and overrides `_put` and `_get`
to fail on demand, so it checks that a failing storage hook leaves the queue usable.
On Python 3.13 the suite includes the shutdown tests. The `test` package ships with
CPython's own builds; where a distribution leaves it out, these tests are skipped.
"""

from __future__ import annotations

import heapq
import types
import unittest
from typing import Any

import pytest

from pipeline import Empty, Full, SafeQueue, ShutDown

test_queue: Any = pytest.importorskip("test.test_queue", reason="CPython's test package is missing")
StdlibQueueTest: Any = test_queue.QueueTest
StdlibLifoQueueTest: Any = test_queue.LifoQueueTest
StdlibPriorityQueueTest: Any = test_queue.PriorityQueueTest
StdlibFailingQueueTest: Any = test_queue.FailingQueueTest


class Queue(SafeQueue[Any]):
    """SafeQueue itself, under the name the standard library's tests expect."""


class LifoQueue(SafeQueue[Any]):
    """Last in, first out: the standard library's LifoQueue, on SafeQueue's hooks."""

    def _init(self, maxsize: int) -> None:
        self.queue: list[Any] = []

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.pop()


class PriorityQueue(SafeQueue[Any]):
    """Lowest first: the standard library's PriorityQueue, on SafeQueue's hooks."""

    def _init(self, maxsize: int) -> None:
        self.queue: list[Any] = []

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        heapq.heappush(self.queue, item)

    def _get(self) -> Any:
        return heapq.heappop(self.queue)


safe_queue_module = types.SimpleNamespace(
    Queue=Queue,
    LifoQueue=LifoQueue,
    PriorityQueue=PriorityQueue,
    Empty=Empty,
    Full=Full,
    ShutDown=ShutDown,
)


class TestSafeQueueAsQueue(StdlibQueueTest, unittest.TestCase):  # type: ignore[misc]
    queue = safe_queue_module


class TestSafeQueueAsLifoQueue(StdlibLifoQueueTest, unittest.TestCase):  # type: ignore[misc]
    queue = safe_queue_module


class TestSafeQueueAsPriorityQueue(StdlibPriorityQueueTest, unittest.TestCase):  # type: ignore[misc]
    queue = safe_queue_module


class TestSafeQueueWithFailingHooks(StdlibFailingQueueTest, unittest.TestCase):  # type: ignore[misc]
    queue = safe_queue_module


class Ranked(SafeQueue[Any]):
    """A priority queue in a few lines: (priority, item) pairs, FIFO among equals."""

    def _init(self, maxsize: int) -> None:
        self.heap: list[tuple[int, int, Any]] = []
        self.sequence = 0

    def _qsize(self) -> int:
        return len(self.heap)

    def _put(self, item: tuple[int, Any]) -> None:
        self.sequence += 1
        heapq.heappush(self.heap, (item[0], self.sequence, item[1]))

    def _get(self) -> tuple[int, Any]:
        priority, _, payload = heapq.heappop(self.heap)
        return priority, payload


def test_a_priority_subclass_of_a_few_lines_is_fifo_among_equals() -> None:
    queue = Ranked(100)
    arrivals = [(priority, f"{priority}-{n}") for n in range(10) for priority in (3, 1, 2)]
    queue.put_many(arrivals)
    taken = queue.get_many(100)
    assert [priority for priority, _ in taken] == sorted(priority for priority, _ in arrivals)
    for priority in (1, 2, 3):
        same = [payload for p, payload in taken if p == priority]
        assert same == [f"{priority}-{n}" for n in range(10)]  # in arrival order


def test_a_priority_subclass_never_compares_payloads() -> None:
    queue = Ranked(4)
    queue.put((1, object()))
    queue.put((1, object()))  # objects that cannot be ordered
    assert len(queue.get_many(2)) == 2
