"""asyncio stages: `async def process_async(self, item)`, run on one event loop per stage.

A stage's event loop runs in a thread the stage owns: the first worker thread's
`setup()` starts it (and runs the stage's `async def open()` there), the last worker
thread's `teardown()` runs `async def close()` and stops it. Each worker thread hands
its batch to the loop as one task, which runs one coroutine per item, at most
`concurrency` at once over the whole stage (an `asyncio.Semaphore`), and waits for
the outputs. So the engine's order, backpressure and stop-on-first-failure hold as for
thread stages, and the first failing coroutine cancels the rest of its batch.

Worker threads: the engine sizes a stage's batches to take a few milliseconds each,
so a stage whose items each wait 10 ms is handed one item per batch, and each batch in
flight needs a worker thread to carry it: the coroutines at once are then at most the
workers. Past a few dozen threads that stops paying (`benchmarks/bench_executors.py
--only async` and the table in docs/beyond-threads.md: 1,000 items waiting 10 ms took
0.78 s on 16 workers, 0.24 s on 64, 0.25 s on 256, 0.29 s on 1,000; a thread stage of
16 took 0.65 s); so `workers` defaults to `min(concurrency, 64)`, and `concurrency`
beyond that counts when batches carry several items (quick items, or a source that is
faster than the stage).

Stop: one watcher coroutine on the loop looks at the run's stop event every
`STOP_CHECK_SECONDS` (a thread's `Event` cannot be awaited); once the run stops it
cancels every batch task, and every batch that starts later, so each coroutine gets
`CancelledError` at its current `await` and its `finally` blocks run before its
worker thread returns. The worker threads themselves just wait on their futures.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from concurrent.futures import CancelledError, Future
from typing import Final, Generic, TypeVar

from pipeline._checks import positive_int
from pipeline.errors import PipelineError
from pipeline.stage import ItemFailed, PipelineStage
from pipeline.worker import current_stop_event

__all__ = ["STOP_CHECK_SECONDS", "AsyncFunctionStage", "AsyncStage", "iterate_async"]

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")

STOP_CHECK_SECONDS: Final = 0.05
DEFAULT_WORKERS: Final = 64


class AsyncStage(PipelineStage[In, Out], Generic[In, Out]):
    """A stage whose items are coroutines: override `async def process_async(self, item)`.

    Args:
        name: shown in logs and errors; defaults to the class name.
        concurrency: the most coroutines running at once, over all the stage's batches.
        workers: the worker threads that carry batches to the loop; defaults to
            `min(concurrency, 64)` (see the module's docstring for why).
        latency_target: the seconds a batch should take. Without it a stage whose
            batches wait longer than a few milliseconds takes one item per batch, so its
            concurrency is its worker threads; with it each worker grows its batches
            toward the target and runs a whole batch's coroutines at once. Measured by
            `benchmarks/bench_executors.py --only async` (1,000 items awaiting 10 ms):
            0.114 s on 2 threads with `latency_target=0.05`, 0.204 s on 64 threads
            without, 0.647 s for a thread stage of 16 workers.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        concurrency: int = 16,
        workers: int | None = None,
        latency_target: float | None = None,
    ) -> None:
        self.concurrency = positive_int("concurrency", concurrency)
        default = min(self.concurrency, DEFAULT_WORKERS)
        super().__init__(
            name, workers=default if workers is None else workers, latency_target=latency_target
        )
        # _lock guards _loop and _thread (the run's event loop and the thread running
        # it, started by the first worker thread to arrive), _left (worker threads done
        # with the run) and _open_failed; the last to leave stops the loop and resets.
        # _tasks (the batch tasks running) is touched only on the loop's thread; _stopped
        # (the run stopped: cancel every batch) is set there, read by the worker threads.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._left = 0
        self._open_failed = False
        self._tasks: set[asyncio.Task[list[Out]]] = set()
        self._limit: asyncio.Semaphore | None = None
        self._stopped = False
        self._watcher: Future[None] | None = None

    async def process_async(self, item: In) -> Out:
        """Return the output for one item; runs as a coroutine on the stage's event loop.

        Not `process`: a coroutine function cannot override a plain method for a type
        checker, so every subclass would need a `type: ignore`.
        """
        raise NotImplementedError(f"{type(self).__name__}.process_async() is not implemented")

    async def open(self) -> None:
        """Prepare what the coroutines share (a client session); runs once on the loop."""

    async def close(self) -> None:
        """Release what `open` acquired; runs once on the loop, after the last batch."""

    def setup(self) -> None:
        """Start the stage's event loop if this is the first worker thread; then `open()`."""
        with self._lock:
            if self._loop is not None:
                return
            if not self._open_failed:
                try:
                    self._start()
                    return
                except BaseException:
                    self._open_failed = True
                    self._leave()
                    raise
            self._leave()
        raise PipelineError(f"stage {self.name!r}: the event loop did not start")

    def teardown(self) -> None:
        """Run `close()` and stop the loop if this is the last worker thread out."""
        with self._lock:
            running = self._leave()
        if running is not None:
            loop, thread = running
            watcher, self._watcher = self._watcher, None
            try:
                if watcher is not None:
                    loop.call_soon_threadsafe(watcher.cancel)
                asyncio.run_coroutine_threadsafe(self.close(), loop).result()
            finally:
                _stop_loop(loop, thread)

    def process_batch(self, items: list[In]) -> list[Out]:
        """Run one coroutine per item on the loop and wait for all; blocks until they end.

        Returns an empty list once the run stops (its coroutines are cancelled).

        Raises:
            ItemFailed: a coroutine raised (the original is its `__cause__`).
        """
        loop = self._loop
        if loop is None:
            raise PipelineError(f"stage {self.name!r}: process_batch() before setup()")
        future = asyncio.run_coroutine_threadsafe(self._run_batch(items), loop)
        try:
            return future.result()
        except CancelledError:
            if self._stopped:
                return []
            raise

    async def _run_batch(self, items: list[In]) -> list[Out]:
        """Run the batch's coroutines; on the first failure cancel the others, then raise it."""
        if self._stopped:
            raise asyncio.CancelledError
        batch = asyncio.current_task()
        assert batch is not None
        self._tasks.add(batch)
        try:
            if len(items) == 1:  # the common case for slow items: no task of its own
                try:
                    return [await self._limited(items[0])]
                except Exception as exc:
                    raise ItemFailed(items[0], 0) from exc
            return await self._run_concurrently(items)
        finally:
            self._tasks.discard(batch)

    async def _run_concurrently(self, items: list[In]) -> list[Out]:
        """Run one coroutine per item; fail at the first item (in input order) that fails.

        Once an item fails, the coroutines after it are cancelled and those before it
        run to their end, so the outputs before the failure are delivered, as for a
        thread stage; one of those may fail too, and then the failure moves up to it.
        """
        tasks = [asyncio.ensure_future(self._limited(item)) for item in items]
        place: dict[asyncio.Future[Out], int] = {task: index for index, task in enumerate(tasks)}
        failed_at: int | None = None
        try:
            pending: set[asyncio.Future[Out]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        index = place[task]
                        failed_at = index if failed_at is None else min(failed_at, index)
                if failed_at is not None:
                    for task in tasks[failed_at + 1 :]:
                        task.cancel()
                    pending = {task for task in pending if place[task] < failed_at}
        finally:
            for task in tasks:
                task.cancel()
            # The cancelled coroutines' finally blocks run before the batch ends.
            await asyncio.gather(*tasks, return_exceptions=True)
        if failed_at is not None:
            outputs = [task.result() for task in tasks[:failed_at]]
            cause = tasks[failed_at].exception()
            raise ItemFailed(items[failed_at], failed_at, outputs) from cause
        return [task.result() for task in tasks]

    async def _watch(self, stop: threading.Event) -> None:
        """Cancel every batch, running or to come, once the run stops; runs on the loop."""
        while not stop.is_set():
            await asyncio.sleep(STOP_CHECK_SECONDS)
        self._stopped = True
        # Each batch task is cancelled once, so that its `finally` can wait for its
        # coroutines' own `finally` blocks uninterrupted.
        for task in list(self._tasks):
            task.cancel()

    async def _limited(self, item: In) -> Out:
        assert self._limit is not None
        async with self._limit:
            return await self.process_async(item)

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"pipeline-{self.name}-loop")
        thread.start()
        self._stopped = False
        try:
            self._limit = asyncio.Semaphore(self.concurrency)
            asyncio.run_coroutine_threadsafe(self.open(), loop).result()
            stop = current_stop_event()
            if stop is not None:
                self._watcher = asyncio.run_coroutine_threadsafe(self._watch(stop), loop)
        except BaseException:
            _stop_loop(loop, thread)
            raise
        self._loop, self._thread = loop, thread

    def _leave(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread] | None:
        """Count one worker thread out (under `_lock`); return the loop if it was the last."""
        self._left += 1
        if self._left < self.workers:
            return None
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        self._left = 0
        self._open_failed = False
        return None if loop is None or thread is None else (loop, thread)


class AsyncFunctionStage(AsyncStage[In, Out], Generic[In, Out]):
    """An asyncio stage that maps each item through `function`, an `async def` function."""

    def __init__(
        self,
        function: Callable[[In], Awaitable[Out]],
        *,
        name: str | None = None,
        concurrency: int = 16,
        workers: int | None = None,
        latency_target: float | None = None,
    ) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        default = getattr(function, "__name__", None)
        super().__init__(
            name or default,
            concurrency=concurrency,
            workers=workers,
            latency_target=latency_target,
        )
        self.function = function

    async def process_async(self, item: In) -> Out:
        return await self.function(item)


def iterate_async(source: AsyncIterable[T]) -> Iterator[T]:
    """Return an iterator over an async iterable, so a pipeline can read it as its source.

    It runs the async iterator on an event loop of its own, in the thread that calls
    `next()` (the pipeline's source thread). Closing the iterator (the run stopped)
    closes the async iterator too, so an async generator's `finally` runs.
    """
    if not isinstance(source, AsyncIterable):
        raise TypeError(f"source must be an async iterable, got {type(source).__name__}")
    return _iterate(source)


def _iterate(source: AsyncIterable[T]) -> Iterator[T]:
    loop = asyncio.new_event_loop()
    iterator = aiter(source)
    try:
        while True:
            try:
                item = loop.run_until_complete(anext(iterator))
            except StopAsyncIteration:
                return
            yield item
    finally:
        close = getattr(iterator, "aclose", None)
        try:
            if close is not None:
                loop.run_until_complete(close())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Stop `loop` running in `thread`, join the thread and close the loop."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
