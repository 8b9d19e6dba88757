"""An async iterable as a source: however the run ends, its async generator is closed
(`aclose()`, on the loop that iterated it, in the source thread) before the call returns."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator

import pytest
from support import WAIT, sigint_setting

from pipeline import Pipeline, PipelineClosed, StageError
from pipeline.aio import AsyncFunctionStage, iterate_async
from pipeline.stages import FunctionStage


class AsyncSource:
    """An async generator source that records where, on which loop and how often its
    `finally` ran."""

    def __init__(self, count: int | None = None) -> None:
        self.count = count
        self.loops: set[int] = set()
        self.closed_in: list[tuple[str, int]] = []
        self.started = threading.Event()

    async def items(self) -> AsyncIterator[int]:
        try:
            item = 0
            while self.count is None or item < self.count:
                self.loops.add(id(asyncio.get_running_loop()))
                await asyncio.sleep(0)
                self.started.set()
                yield item
                item += 1
        finally:
            await asyncio.sleep(0)  # an async cleanup: it needs the generator's loop
            self.closed_in.append((threading.current_thread().name, id(asyncio.get_running_loop())))

    def closed_once_on_its_loop(self) -> bool:
        return len(self.closed_in) == 1 and [
            (thread, {loop}) for thread, loop in self.closed_in
        ] == [("pipeline-source", self.loops)]


async def double(item: int) -> int:
    await asyncio.sleep(0)
    return item * 2


def doubling() -> Pipeline[int, int]:
    return Pipeline(AsyncFunctionStage(double, concurrency=4), batch_size=4)


def test_a_completed_run_has_closed_its_async_source() -> None:
    source = AsyncSource(10)
    assert doubling().run(iterate_async(source.items())) == [item * 2 for item in range(10)]
    assert source.closed_once_on_its_loop()


def test_a_stream_broken_off_has_closed_its_async_source_when_the_break_returns() -> None:
    source = AsyncSource()  # endless
    pipeline = doubling()
    for _ in pipeline.stream(iterate_async(source.items())):
        break
    assert source.closed_once_on_its_loop()
    assert pipeline.stats() is not None  # the pipeline is still alive: no collection did it


def test_a_stream_stopped_by_close_has_closed_its_async_source() -> None:
    source = AsyncSource()
    pipeline = doubling()
    stream = pipeline.stream(iterate_async(source.items()))
    next(stream)
    pipeline.close()
    assert source.closed_once_on_its_loop()
    with pytest.raises((PipelineClosed, StopIteration)):
        next(stream)


def test_a_run_whose_stage_fails_has_closed_its_async_source() -> None:
    def fail_on_ten(item: int) -> int:
        if item == 10:
            raise ValueError("ten")
        return item

    source = AsyncSource()
    pipeline = Pipeline(
        [AsyncFunctionStage(double), FunctionStage(fail_on_ten, name="check")], batch_size=4
    )
    with pytest.raises(StageError, match="on item 10"):
        pipeline.run(iterate_async(source.items()))
    assert source.closed_once_on_its_loop()


def test_a_run_stopped_by_ctrl_c_has_closed_its_async_source() -> None:
    source = AsyncSource()
    pressed = threading.Event()

    def press_once_started() -> None:
        if source.started.wait(WAIT):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    presser = threading.Thread(target=press_once_started, name="presser")
    with sigint_setting(pressed):
        presser.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                doubling().run(iterate_async(source.items()))
        finally:
            presser.join(WAIT)
    assert pressed.is_set()
    assert source.closed_once_on_its_loop()


def test_a_ctrl_c_while_iterate_async_waits_is_a_keyboard_interrupt_and_closes_the_source() -> None:
    closed: list[bool] = []

    async def waits_for_ever() -> AsyncIterator[int]:
        try:
            yield 1
            # The press comes once this wait has begun: the loop runs the callback next,
            # and its KeyboardInterrupt leaves the wait for the next item pending.
            asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGINT)
            await asyncio.Event().wait()
        finally:
            closed.append(True)

    pressed = threading.Event()
    with sigint_setting(pressed), pytest.raises(KeyboardInterrupt):
        for _ in iterate_async(waits_for_ever()):
            pass
    assert pressed.is_set()
    assert closed == [True]
