"""asyncio stages: coroutines on one loop per stage, with the semantics of thread stages."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator

import pytest
from support import WAIT

from pipeline import Pipeline, PipelineClosed, StageError
from pipeline.aio import AsyncFunctionStage, AsyncStage, iterate_async
from pipeline.stage import ItemFailed
from pipeline.stages import FunctionStage
from pipeline.worker import current_stop_event


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
        assert closed == [True]  # the run closed its source before the break returned


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


def test_by_default_a_few_threads_keep_concurrency_awaits_in_flight() -> None:
    # Each batch of waits takes longer than the engine's few-millisecond default, which
    # would shrink it to one item and so cap the awaits at once at the four threads;
    # the stage's latency_target grows the batches instead.
    running = 0
    most = 0

    async def wait_5_ms(item: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        running -= 1
        return item

    stage = AsyncFunctionStage(wait_5_ms, concurrency=100, workers=4)
    assert Pipeline(stage).run(range(2000)) == list(range(2000))
    assert most == 100


class Blocking(AsyncStage[int, int]):
    """Its coroutine for item `blocker` blocks the loop until the run's stop is signalled.

    It starts blocking once `go` is set, if given (waiting for it in a thread, without
    blocking the loop); `blocking` is set then. Every coroutine that starts after the
    block counts in `late`: the stop came before it on the loop's own thread, so the
    count does not depend on timing.
    """

    def __init__(
        self, blocker: int, *, concurrency: int, go: threading.Event | None = None
    ) -> None:
        super().__init__(concurrency=concurrency)
        self.blocker = blocker
        self.go = go
        self.blocking = threading.Event()
        self.stop_seen = False
        self.late = 0

    def setup(self) -> None:
        super().setup()
        self.run_stop = current_stop_event()

    async def process_async(self, item: int) -> int:
        if self.stop_seen:
            self.late += 1
        if item == self.blocker:
            if self.go is not None:
                assert await asyncio.to_thread(self.go.wait, WAIT)
            self.blocking.set()
            assert self.run_stop is not None
            self.run_stop.wait(WAIT)  # blocks the loop, as a time.sleep would
            self.stop_seen = self.run_stop.is_set()
        return item


class Handing:
    """A thread that hands one more batch to a stage's blocked loop, as a worker would."""

    def __init__(self, stage: Blocking) -> None:
        self.outputs: list[list[int]] = []
        self.handed = threading.Event()
        self.thread = threading.Thread(target=self.hand, args=(stage,), name="handing")

    def hand(self, stage: Blocking) -> None:
        assert stage.blocking.wait(WAIT)
        self.handed.set()  # a few bytecodes before the batch reaches the loop
        self.outputs.append(stage.process_batch([1000]))


def test_no_coroutine_starts_once_close_has_stopped_the_run() -> None:
    stage = Blocking(0, concurrency=16)
    pipeline = Pipeline(stage, batch_size=1)
    outcome: list[BaseException] = []
    handing = Handing(stage)

    def consume() -> None:
        try:
            list(pipeline.stream(range(100)))
        except BaseException as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    handing.thread.start()
    assert handing.handed.wait(WAIT)
    pipeline.close()
    consumer.join(WAIT)
    handing.thread.join(WAIT)
    assert stage.stop_seen
    assert stage.late == 0
    assert handing.outputs == [[]]  # its batch never started: the run had stopped
    assert len(outcome) == 1
    assert isinstance(outcome[0], PipelineClosed)


def test_no_coroutine_starts_once_a_failure_downstream_has_stopped_the_stage() -> None:
    received = threading.Event()
    stage = Blocking(1, concurrency=16, go=received)
    handing = Handing(stage)

    def fail_at_once(item: int) -> int:
        received.set()
        assert handing.handed.wait(WAIT)  # item 1's coroutine is blocking the loop
        raise ValueError(f"no {item}")

    pipeline = Pipeline([stage, FunctionStage(fail_at_once, name="check")], batch_size=1)
    handing.thread.start()
    try:
        with pytest.raises(StageError, match=r"^stage 'check' failed on item 0: ValueError: no 0$"):
            pipeline.run(range(100))
    finally:
        handing.thread.join(WAIT)
    assert stage.stop_seen
    assert stage.late == 0
    assert handing.outputs == [[]]


def test_a_coroutine_that_raises_cancelled_error_itself_fails_its_item() -> None:
    async def cancel_on_two(item: int) -> int:
        if item == 2:
            elsewhere = asyncio.get_running_loop().create_future()
            elsewhere.cancel()
            await elsewhere  # someone else's cancelled future: not a stop of the run
        return item

    for batch_size in (1, 8):
        stage = AsyncFunctionStage(cancel_on_two, concurrency=4)
        with pytest.raises(StageError) as caught:
            Pipeline(stage, batch_size=batch_size).run(range(10))
        assert str(caught.value) == "stage 'cancel_on_two' failed on item 2: CancelledError"
        assert type(caught.value.__cause__) is asyncio.CancelledError


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_an_exception_whose_str_raises_is_reported_by_its_type() -> None:
    async def fail_on_one(item: int) -> int:
        if item == 1:
            raise Unprintable
        return item

    with pytest.raises(StageError) as caught:
        Pipeline(AsyncFunctionStage(fail_on_one), batch_size=1).run(range(5))
    assert str(caught.value) == "stage 'fail_on_one' failed on item 1: Unprintable: <str() failed>"

    class BadClose(AsyncStage[int, int]):
        async def close(self) -> None:
            raise Unprintable

        async def process_async(self, item: int) -> int:
            return item

    with pytest.raises(StageError) as caught:
        Pipeline(BadClose(concurrency=2)).run(range(5))
    assert caught.value.phase == "teardown"
    assert str(caught.value).endswith(": Unprintable: <str() failed>")


def test_threads_of_the_loops_default_executor_are_joined_before_the_run_ends() -> None:
    used: set[threading.Thread] = set()

    def add_one(item: int) -> int:
        used.add(threading.current_thread())
        return item + 1

    async def in_a_thread(item: int) -> int:
        return await asyncio.to_thread(add_one, item)

    assert Pipeline(AsyncFunctionStage(in_a_thread)).run(range(20)) == list(range(1, 21))
    assert used
    assert not [thread.name for thread in used if thread.is_alive()]


def test_tasks_a_coroutine_left_running_are_cancelled_when_the_stage_ends() -> None:
    cleaned: list[int] = []
    background: set[asyncio.Task[None]] = set()

    async def listen(item: int) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(item)

    async def start_listening(item: int) -> int:
        task = asyncio.get_running_loop().create_task(listen(item))
        background.add(task)  # a reference, as asyncio's documentation asks
        await asyncio.sleep(0)
        return item

    assert Pipeline(AsyncFunctionStage(start_listening)).run(range(5)) == list(range(5))
    assert sorted(cleaned) == list(range(5))


def test_bad_stop_timeouts_and_stages_without_process_async_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^stop_timeout must be > 0 seconds and finite, got nan$"):
        AsyncFunctionStage(double, stop_timeout=math.nan)
    with pytest.raises(TypeError, match=r"^stop_timeout must be a number, got str$"):
        AsyncFunctionStage(double, stop_timeout="1")  # type: ignore[arg-type]

    class Misnamed(AsyncStage[int, int]):
        async def process(self, item: int) -> int:  # type: ignore[override]
            return item

    with pytest.raises(
        TypeError,
        match=r"^Misnamed must override process_async\(\), an async def: an AsyncStage "
        r"never calls process\(\)$",
    ):
        Misnamed()


def test_a_function_that_returns_no_awaitable_fails_its_item_saying_so() -> None:
    def not_async(item: int) -> int:
        return item

    stage: AsyncFunctionStage[int, int] = AsyncFunctionStage(not_async)  # type: ignore[arg-type]
    with pytest.raises(StageError) as caught:
        Pipeline(stage).run(range(3))
    assert str(caught.value) == (
        "stage 'not_async' failed on item 0: TypeError: function 'not_async' must return an "
        "awaitable (an async def function returns a coroutine), got int"
    )


def test_async_generator_functions_are_refused_when_the_stage_is_built() -> None:
    async def pages(item: int) -> AsyncIterator[int]:
        yield item

    with pytest.raises(
        TypeError,
        match=r"^function must be an async def function that returns one output per item; "
        r"'test_async_generator_functions_are_refused_when_the_stage_is_built.<locals>.pages' "
        r"uses yield, so it makes an async generator$",
    ):
        AsyncFunctionStage(pages)  # type: ignore[arg-type]

    class Yielding(AsyncStage[int, int]):
        async def process_async(self, item: int) -> AsyncIterator[int]:  # type: ignore[override]
            yield item

    with pytest.raises(
        TypeError,
        match=r"^Yielding.process_async\(\) uses yield, so it is an async generator, not a "
        r"coroutine: it must return one output per item$",
    ):
        Yielding()
