"""Ctrl-C and the main thread (pipeline._interrupts): waits in slices, Ctrl-C held.

A SIGINT sent to another thread with `signal.pthread_kill` is the deterministic form of
a lost wake-up: the handler is due on the main thread, but nothing interrupts the main
thread's wait. Before waits on the main thread were cut into slices, such a Ctrl-C was
seen only when the run ended by itself (here: when the stage's WAIT ran out).
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from support import WAIT, press_from_another_thread, sigint_setting

from pipeline import FunctionStage, Pipeline, SafeQueue
from pipeline._interrupts import MAIN_THREAD_WAIT_SLICE, ctrl_c_held, wait_slice


def test_only_the_main_thread_waits_in_slices() -> None:
    assert wait_slice() == MAIN_THREAD_WAIT_SLICE
    seen: list[float | None] = []
    other = threading.Thread(target=lambda: seen.append(wait_slice()))
    other.start()
    other.join(WAIT)
    assert seen == [None]


def test_a_held_ctrl_c_runs_the_handler_at_the_press_and_raises_when_the_block_ends() -> None:
    pressed = threading.Event()
    after_the_press: list[bool] = []

    def press_inside_the_block() -> None:
        with ctrl_c_held() as presses:
            signal.raise_signal(signal.SIGINT)
            after_the_press.append(pressed.is_set() and bool(presses))

    with sigint_setting(pressed), pytest.raises(KeyboardInterrupt):
        press_inside_the_block()
    assert after_the_press == [True]  # the block went on after the handler had run


def test_a_handler_that_does_not_raise_holds_nothing() -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with ctrl_c_held() as presses:
            signal.raise_signal(signal.SIGINT)
            assert not presses
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_off_the_main_thread_or_with_no_python_handler_nothing_is_changed() -> None:
    handlers: list[Callable[..., object] | int | None] = []

    def in_a_thread() -> None:
        with ctrl_c_held() as presses:
            handlers.append(signal.getsignal(signal.SIGINT))
            assert not presses

    other = threading.Thread(target=in_a_thread)
    other.start()
    other.join(WAIT)
    assert handlers == [signal.getsignal(signal.SIGINT)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ctrl_c_held():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_that_wakes_no_wait_still_stops_a_pipeline() -> None:
    pressed = threading.Event()
    busy = threading.Event()
    released: list[bool] = []

    def work(item: int) -> int:
        busy.set()
        released.append(pressed.wait(WAIT))
        return item

    presser = press_from_another_thread(busy)
    try:
        with sigint_setting(pressed), pytest.raises(KeyboardInterrupt):
            Pipeline(FunctionStage(work), batch_size=1).run(range(3))
    finally:
        presser.join(WAIT)
    assert released  # items after the first may run until the stop lands
    assert all(released)  # released by the Ctrl-C, not by the end of WAIT


class Injected(KeyboardInterrupt):
    """The Ctrl-C the tracer raises at one step of a queue operation."""


def interrupted_at_step(step: int, operation: Callable[[], object]) -> bool:
    """Run `operation`, raising `Injected` at its `step`-th traced event; return whether it was.

    The steps are the entry to and the return from every Python function, the
    standard library's included: where the interpreter looks for a pending signal (on
    entering a function, and after each call, such as a C `lock.acquire()` that is a
    function's last act). Line events would also stop on the line of a `with` before
    its `__exit__` is called, where no signal handler can run.
    """
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if event in {"call", "return"}:
            count += 1
            if count == step:
                raise Injected
        return tracer

    sys.settrace(tracer)
    try:
        operation()
    except Injected:
        return True
    finally:
        sys.settrace(None)
    return False


@pytest.mark.parametrize(
    "name",
    ["get", "get_nowait", "get_many", "put", "put_nowait", "put_many", "task_done", "join"],
)
def test_a_ctrl_c_at_any_step_of_a_queue_operation_leaves_the_lock_free(name: str) -> None:
    """Before, the queue took its mutex through a Condition (`with self.not_empty:`):
    a Ctrl-C raised in `Condition.__enter__` after it took the lock left it taken, and
    the next operation hung (the fault fuzzer on 3.13t)."""
    operations: dict[str, Callable[[SafeQueue[int]], object]] = {
        "get": lambda queue: queue.get(timeout=WAIT),
        "get_nowait": lambda queue: queue.get_nowait(),
        "get_many": lambda queue: queue.get_many(2, timeout=WAIT),
        "put": lambda queue: queue.put(9, timeout=WAIT),
        "put_nowait": lambda queue: queue.put_nowait(9),
        "put_many": lambda queue: queue.put_many([8, 9], timeout=WAIT),
        "task_done": lambda queue: queue.task_done(),
        "join": lambda queue: queue.join(),
    }
    step = 0
    while True:
        step += 1
        queue = SafeQueue[int](4)
        queue.put_many([1, 2])
        if name == "join":
            queue.get_many(2)
            queue.task_done()
            queue.task_done()
        if not interrupted_at_step(step, functools.partial(operations[name], queue)):
            break  # the operation ran to its end: every step has been tried
        assert not queue.mutex.locked(), f"{name}: the lock stayed taken after step {step}"
    assert step > 3
