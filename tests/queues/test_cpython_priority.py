"""CPython's own queue tests (`Lib/test/test_queue.py`), run against our PriorityQueue.

With one priority for every item it must be exactly a FIFO `queue.Queue` (`QueueTest`,
and `FailingQueueTest`, whose subclass overrides the per-item hooks to fail on demand);
with each int item its own priority it must order like `queue.PriorityQueue`
(`PriorityQueueTest`). On Python 3.13 the shutdown tests run too.
"""

from __future__ import annotations

import types
import unittest
from typing import Any

import pytest

from pipeline import Empty, Full, ShutDown
from pipeline.queues import priority

test_queue: Any = pytest.importorskip("test.test_queue", reason="CPython's test package is missing")


class Queue(priority.PriorityQueue[Any]):
    """Every item at the default priority: first in, first out."""


class PriorityQueue(priority.PriorityQueue[Any]):
    """Each int item is its own priority, lowest first (the tests' strings get 0).

    Named as the standard library's class: the tests look up expectations by class name.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize, priority_of=lambda item: item if isinstance(item, int) else 0)


priority_module = types.SimpleNamespace(
    Queue=Queue,
    LifoQueue=None,
    PriorityQueue=PriorityQueue,
    Empty=Empty,
    Full=Full,
    ShutDown=ShutDown,
)


class TestPriorityQueueAsQueue(test_queue.QueueTest, unittest.TestCase):  # type: ignore[misc]
    queue = priority_module


class TestPriorityQueueAsStdlibPriorityQueue(test_queue.PriorityQueueTest, unittest.TestCase):  # type: ignore[misc]
    queue = priority_module


class TestPriorityQueueWithFailingHooks(test_queue.FailingQueueTest, unittest.TestCase):  # type: ignore[misc]
    queue = priority_module
