"""asyncio stages: coroutines on one loop per stage, with the semantics of thread stages."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
from support import WAIT

from pipeline import Pipeline, PipelineClosed, StageError
from pipeline.aio import AsyncFunctionStage, AsyncStage, iterate_async
from pipeline.stage import ItemFailed


async def double(item: int) -> int:
    await asyncio.sleep(0)
    return item * 2


class Counting(AsyncStage[int, int]):
    """Counts coroutines running at once, and the loop threads and opens it saw."""

    def __init__(self, *, concurrency: int, workers: int | None = None) -> None:
        super().__init__(concurrency=concurrency, workers=workers)
        self.running = 0
        self.most = 0
        self.loops: set[int] = set()
        self.opened = self.closed = 0

    async def open(self) -> None:
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    async def process_async(self, item: int) -> int:
        self.loops.add(id(asyncio.get_running_loop()))
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.001)
        self.running -= 1
        return item


def test_outputs_come_in_input_order() -> None:
    assert Pipeline(AsyncFunctionStage(double, concurrency=8)).run(range(300)) == [
        item * 2 for item in range(300)
    ]


def test_unordered_outputs_are_the_same_items() -> None:
    outputs = Pipeline(AsyncFunctionStage(double), ordered=False).run(range(300))
    assert sorted(outputs) == [item * 2 for item in range(300)]


def test_one_loop_runs_at_most_concurrency_coroutines_and_opens_once() -> None:
    stage = Counting(concurrency=5, workers=3)
    pipeline = Pipeline(stage, batch_size=8)
    assert pipeline.run(range(200)) == list(range(200))
    assert 1 <= stage.most <= 5
    assert len(stage.loops) == 1
    assert (stage.opened, stage.closed) == (1, 1)
    assert pipeline.run(range(10)) == list(range(10))  # a second run gets a new loop
    assert (stage.opened, stage.closed) == (2, 2)


def test_workers_default_to_concurrency_up_to_sixty_four() -> None:
    stage = AsyncFunctionStage(double, concurrency=12)
    assert (stage.workers, stage.concurrency, stage.name) == (12, 12, "double")
    assert AsyncFunctionStage(double, concurrency=1000).workers == 64


def test_a_failing_coroutine_names_its_item_and_cancels_its_batch() -> None:
    finished: list[int] = []
    cancelled: list[int] = []

    async def fail_on_three(item: int) -> int:
        try:
            if item == 3:
                raise ValueError("three")
            if item > 3:  # in item 3's batch: the engine grows batches 1, 2, 4 while quick
                await asyncio.sleep(WAIT)
            finished.append(item)
            return item
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    stage = AsyncFunctionStage(fail_on_three, concurrency=10, workers=1)
    with pytest.raises(StageError) as caught:
        Pipeline(stage, batch_size=10, queue_size=10).run(range(10))
    assert str(caught.value) == "stage 'fail_on_three' failed on item 3: ValueError: three"
    assert type(caught.value.__cause__) is ValueError
    # Siblings in item 3's batch (if the engine put any there) were cancelled, not awaited.
    assert finished == [0, 1, 2]
    assert all(item > 3 for item in cancelled)


def test_the_outputs_before_a_failing_coroutine_are_delivered_first() -> None:
    async def fail_on_seven(item: int) -> int:
        await asyncio.sleep(0.001 * (20 - item))  # later items finish first
        if item == 7:
            raise ValueError("seven")
        return item

    outputs: list[int] = []
    stage = AsyncFunctionStage(fail_on_seven, concurrency=20, workers=1)
    with pytest.raises(StageError, match="on item 7"):
        outputs.extend(Pipeline(stage, batch_size=20, queue_size=20).stream(range(20)))
    assert outputs == list(range(7))


def test_a_batch_fails_at_its_first_failing_item_with_the_outputs_before_it() -> None:
    cancelled: list[int] = []

    async def fail_on_seven_and_twelve(item: int) -> int:
        try:
            await asyncio.sleep(0.001 * (20 - item))  # later items finish first
            if item in (7, 12):
                raise ValueError(f"no {item}")
            return item
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    stage = AsyncFunctionStage(fail_on_seven_and_twelve, concurrency=20, workers=1)
    stage.setup()  # outside a pipeline: one worker, so its teardown stops the loop
    try:
        with pytest.raises(ItemFailed) as caught:
            stage.process_batch(list(range(20)))
    finally:
        stage.teardown()
    assert (caught.value.item, caught.value.index) == (7, 7)
    assert caught.value.outputs == list(range(7))
    assert str(caught.value.__cause__) == "no 7"
    assert all(item > 7 for item in cancelled)


def test_a_stop_cancels_the_coroutines_and_their_finally_runs() -> None:
    started = threading.Event()
    cleaned: list[int] = []
    count = 0

    async def hang(item: int) -> int:
        nonlocal count
        try:
            count += 1
            if count == 4:
                started.set()
            await asyncio.sleep(3600)
            return item
        finally:
            cleaned.append(item)

    pipeline = Pipeline(AsyncFunctionStage(hang, concurrency=4), batch_size=1)
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            list(pipeline.stream(range(100)))
        except BaseException as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert started.wait(WAIT)
    pipeline.close()
    consumer.join(WAIT)
    assert sorted(cleaned) == [0, 1, 2, 3]
    assert len(outcome) == 1
    assert isinstance(outcome[0], PipelineClosed)


def test_an_open_failure_stops_the_run_as_a_setup_error() -> None:
    class BadOpen(AsyncStage[int, int]):
        async def open(self) -> None:
            raise ConnectionError("no session")

        async def process_async(self, item: int) -> int:
            return item

    with pytest.raises(StageError) as caught:
        Pipeline(BadOpen(concurrency=3)).run(range(5))
    assert caught.value.phase == "setup"
    assert type(caught.value.__cause__) is ConnectionError


async def numbers(count: int, closed: list[bool]) -> AsyncIterator[int]:
    try:
        for item in range(count):
            await asyncio.sleep(0)
            yield item
    finally:
        closed.append(True)


def test_an_async_iterable_is_a_source() -> None:
    closed: list[bool] = []
    outputs = Pipeline(AsyncFunctionStage(double)).run(iterate_async(numbers(50, closed)))
    assert outputs == [item * 2 for item in range(50)]
    assert closed == [True]


def test_stopping_early_closes_the_async_source() -> None:
    closed: list[bool] = []
    source = iterate_async(numbers(10**6, closed))
    with Pipeline(AsyncFunctionStage(double)) as pipeline:
        for output in pipeline.stream(source):
            if output >= 10:
                break
    source.close()  # type: ignore[attr-defined]
    assert closed == [True]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"^concurrency must be >= 1, got 0$"):
        AsyncFunctionStage(double, concurrency=0)
    with pytest.raises(TypeError, match=r"^function must be callable, got int$"):
        AsyncFunctionStage(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^source must be an async iterable, got list$"):
        iterate_async([1, 2])  # type: ignore[arg-type]


def test_a_latency_target_lets_two_workers_run_many_coroutines_at_once() -> None:
    running = 0
    most = 0

    async def track(item: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        running -= 1
        return item

    stage = AsyncFunctionStage(track, concurrency=500, workers=2, latency_target=1.0)
    assert Pipeline(stage).run(range(400)) == list(range(400))
    assert most > 2  # more coroutines at once than carrier threads: batches grew
