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
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from support import WAIT, press_from_another_thread, sigint_setting

from pipeline import Pipeline, SafeQueue
from pipeline._interrupts import MAIN_THREAD_WAIT_SLICE, ctrl_c_held, wait_slice
from pipeline.stages import FunctionStage


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
    seen: list[tuple[Callable[..., object] | int | None, bool]] = []

    def in_a_thread() -> None:
        with ctrl_c_held() as presses:
            seen.append((signal.getsignal(signal.SIGINT), bool(presses)))

    other = threading.Thread(target=in_a_thread)
    other.start()
    other.join(WAIT)
    assert seen == [(signal.getsignal(signal.SIGINT), False)]
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


GC_CALLBACK_FILES = ("_weakrefset.py", "weakref.py")
"""Where the garbage collector's callbacks run, at moments no test chooses: a Ctrl-C
raised in one is printed as unraisable by the interpreter and never reaches the
operation, so the tracer neither counts nor presses in them."""


class Injected(KeyboardInterrupt):
    """The Ctrl-C the tracer raises at one step of a queue operation."""


def interrupted_at_step(
    step: int,
    operation: Callable[[], object],
    events: frozenset[str] = frozenset({"call", "return"}),
) -> bool:
    """Run `operation`, pressing Ctrl-C at its `step`-th traced event; return whether it came.

    The steps are the entry to and the return from every Python function, the
    standard library's included: where the interpreter looks for a pending signal (on
    entering a function, and after each call, such as a C `lock.acquire()` that is a
    function's last act). Line events would also stop on the line of a `with` before
    its `__exit__` is called, where no signal handler can run; and a press at the
    return of a frame with an `except` or `finally` block (a generator's `yield`,
    say) skips them, which no signal can do: such operations count calls only
    (`events`). The press calls the
    SIGINT handler installed at that moment, as the interpreter would: ours, where
    Ctrl-C is held, or one that raises `Injected`.
    """
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if event in events and not frame.f_code.co_filename.endswith(GC_CALLBACK_FILES):
            count += 1
            if count == step:
                handler = signal.getsignal(signal.SIGINT)
                assert callable(handler)
                handler(signal.SIGINT, frame)
        return tracer

    def press(signum: int, frame: FrameType | None) -> None:
        raise Injected

    previous_trace = sys.gettrace()
    previous_handler = signal.signal(signal.SIGINT, press)
    sys.settrace(tracer)
    try:
        operation()
    except Injected:
        pass
    finally:
        sys.settrace(previous_trace)
        signal.signal(signal.SIGINT, previous_handler)
    return count >= step


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


def test_a_handler_installed_during_the_block_stays() -> None:
    """A program's "press again to force quit" handler outlives the hold it was set in."""

    def force_quit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(1)

    previous = signal.getsignal(signal.SIGINT)
    try:
        with ctrl_c_held():
            signal.signal(signal.SIGINT, force_quit)
        assert signal.getsignal(signal.SIGINT) is force_quit
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_at_any_step_of_a_stream_leaves_a_run_that_close_ends() -> None:
    """A stream holds Ctrl-C while it takes a batch, so a press at any step finds the
    results queue consistent: before, a press after the storage's popleft() and before
    its count was lowered made the stop that follows spin for good. A press on the very
    entry to the stop (between the caller's code and the stop's own hold) can still
    leave the run to `close()`, which `with pipeline:` calls; it never hangs it."""
    step = 0
    while True:
        step += 1
        pipeline = Pipeline(FunctionStage[int, int](lambda item: item), queue_size=4, batch_size=2)
        stream = pipeline.stream(range(8))
        assert next(stream) == 0
        run = pipeline._active
        assert run is not None
        results = run.queues[-1]
        assert isinstance(results, SafeQueue)
        pressed = interrupted_at_step(
            step, functools.partial(_press_during_take, stream), frozenset({"call"})
        )
        stream.close()
        pipeline.close()
        assert run.ended, f"the run did not end after a press at step {step}"
        assert not results.mutex.locked()
        if not pressed:
            break
    assert step > 3


def _press_during_take(stream: Iterator[int]) -> None:
    """Take the rest of `stream` with the real SIGINT handler swapped for the injector."""
    for _ in stream:
        pass


def test_the_injector_never_presses_inside_a_garbage_collector_callback() -> None:
    """A weak set's removal callback runs when the garbage collector decides; a press
    there would be printed as unraisable and lost, so the injector skips it."""

    class Member:
        pass

    members: weakref.WeakSet[Member] = weakref.WeakSet()

    def drop_a_member() -> None:
        member = Member()
        members.add(member)
        del member

    unraisable: list[BaseException | None] = []
    step = 0
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda report: unraisable.append(report.exc_value)
    try:
        while True:
            step += 1
            if not interrupted_at_step(step, drop_a_member):
                break
    finally:
        sys.unraisablehook = previous_hook
    assert not members
    assert unraisable == []
