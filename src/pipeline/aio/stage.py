"""asyncio stages: `async def process_async(self, item)`, run on one event loop per stage.

A stage's event loop runs in a thread the stage owns: the first worker thread's
`setup()` starts it (and runs the stage's `async def open()` there), the last worker
thread's `teardown()` runs `async def close()` and stops it. Each worker thread hands
its batch to the loop as one task, which runs one coroutine per item, at most
`concurrency` at once over the whole stage (an `asyncio.Semaphore`), and waits for
the outputs. So the engine's order, backpressure and stop-on-first-failure hold as for
thread stages, and the first failing coroutine cancels the rest of its batch.

Batches: each batch in flight needs a worker thread to carry it to the loop, and its
outputs go on once its last coroutine ends, so the coroutines at once are at most the
items in the workers' batches. The engine's default policy sizes a batch to a few
milliseconds, which gives a stage whose items wait 10 ms one item per batch: its
concurrency would be its worker threads, and every item would cost a round trip
between threads. So an asyncio stage sets `latency_target` (`DEFAULT_LATENCY_TARGET`,
0.1 s) by default: each worker grows its batches while they take less (additive
increase, multiplicative decrease), so a few threads keep `concurrency` awaits in
flight, and the items waiting for a slow one in a batch are covered by the items of the
other batches. Items that each wait longer than the target are carried one per batch,
so `workers` defaults to `min(concurrency, 64)` for them. Measured with
`benchmarks/bench_async.py` (2,000 awaits of ~exp(10 ms), 100 at once): the defaults
reach the speed of `asyncio.gather` with a semaphore (the figures are in
docs/performance.md); without the target they took 1.6x as long.

Stop: a worker thread waiting for the loop wakes every `STOP_CHECK_SECONDS` to look
at the run's stop event (a thread cannot wait on an `Event` and a `Future` at once;
a watcher on the loop itself would wait behind a coroutine that blocks it). Once the
run stops, nothing new starts: a batch or a coroutine reads the stop event itself
before it starts. The first worker to see the stop cancels every batch running (and
`open()`, if it still runs), once, so each coroutine gets `CancelledError` at its
current `await` and its `finally` blocks run; each worker then waits at most
`stop_timeout` for its batch to end, and leaves a coroutine that ignores the
cancellation to the loop's shutdown. The last worker's `teardown()` runs `close()`,
then cancels the tasks still on the loop, closes its async generators and its default
executor (each step bounded by `stop_timeout`), stops the loop and joins its thread.
A coroutine that blocks the loop (a `time.sleep`, a CPU-bound loop) holds all of this
until it returns: no thread can be killed.

User code on the loop that raises `SystemExit` or `KeyboardInterrupt`: asyncio lets
those two out of `run_forever()`, which would end the loop's thread with every wait on
it unanswered. A coroutine's, `open()`'s or `close()`'s is caught where it is raised
and re-raised in the worker thread, so the run fails with a `StageError` whose
`__cause__` is the original; one from a task or callback of the user's own goes out
of `run_forever()`, and the loop's thread keeps it, runs the loop on, and the stage
raises it at its next wait.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import CancelledError, Future
from typing import Any, Final, Generic, TypeVar

from pipeline._checks import positive_int, seconds
from pipeline._interrupts import wait_slice
from pipeline.aio.loop import STOP_CHECK_SECONDS, LoopThread
from pipeline.errors import PipelineError
from pipeline.stage import ItemFailed, PipelineStage
from pipeline.worker import current_stop_event

__all__ = [
    "DEFAULT_LATENCY_TARGET",
    "DEFAULT_STOP_TIMEOUT",
    "STOP_CHECK_SECONDS",
    "AsyncFunctionStage",
    "AsyncStage",
    "iterate_async",
]

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")

DEFAULT_WORKERS: Final = 64
DEFAULT_LATENCY_TARGET: Final = 0.1
"""The seconds an asyncio stage's batch should take unless told otherwise.

Measured with `benchmarks/bench_async.py`, 7 interleaved reps on the loaded 2-core
machine, against `asyncio.gather` with a semaphore in the same run: 0.02 s 1.04x,
0.05 s 1.02x, 0.1 s 1.05x, 0.2 s 0.95x (larger batches wait longer for their slowest
item); the larger the target, the longer the waits it still carries several at a time.
"""
DEFAULT_STOP_TIMEOUT: Final = 5.0
"""Seconds a stop waits for cancelled coroutines to end, for `close()`, and for each
step of the loop's shutdown, before it leaves them."""

logger = logging.getLogger(__name__)


class AsyncStage(PipelineStage[In, Out], Generic[In, Out]):
    """A stage whose items are coroutines: override `async def process_async(self, item)`.

    Args:
        name: shown in logs and errors; defaults to the class name.
        concurrency: the most coroutines running at once, over all the stage's batches.
        workers: the worker threads that carry batches to the loop; defaults to
            `min(concurrency, 64)` (see the module's docstring for why).
        latency_target: the seconds a batch should take (`DEFAULT_LATENCY_TARGET`,
            0.1 s, by default): each worker grows its batches toward it and runs a
            whole batch's coroutines at once. None gives the engine's default policy,
            batches of a few milliseconds, so that items which wait go one per batch
            and the coroutines at once are at most the worker threads.
        stop_timeout: once the run stops, the seconds a worker waits for its cancelled
            coroutines to end (their `finally` blocks), and the seconds given to
            `close()` and to each step of the loop's shutdown; what outlives it is left
            to the loop, with a warning in the log.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range, or the
            subclass does not override `process_async`.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        concurrency: int = 16,
        workers: int | None = None,
        latency_target: float | None = DEFAULT_LATENCY_TARGET,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        cls = type(self)
        if cls.process_async is AsyncStage.process_async:
            raise TypeError(
                f"{cls.__name__} must override process_async(), an async def: an "
                "AsyncStage never calls process()"
            )
        if inspect.isasyncgenfunction(cls.process_async):
            raise TypeError(
                f"{cls.__name__}.process_async() uses yield, so it is an async generator, "
                "not a coroutine: it must return one output per item"
            )
        self.concurrency = positive_int("concurrency", concurrency)
        self.stop_timeout = seconds("stop_timeout", stop_timeout)
        default = min(self.concurrency, DEFAULT_WORKERS)
        super().__init__(
            name, workers=default if workers is None else workers, latency_target=latency_target
        )
        # _lock guards _runner (the run's event loop and its thread, started by the first
        # worker thread to arrive), _opened (open() returned), _left (worker threads done
        # with the run) and _open_error; the last to leave stops the loop and resets.
        # _stop is the run's stop event, read from any thread (a private one outside a
        # pipeline). _tasks (the batch tasks running, and open()) and _cancelled (the
        # stop's one cancellation of them has been done) are touched only on the loop.
        self._lock = threading.Lock()
        self._runner: LoopThread | None = None
        self._opened = False
        self._left = 0
        self._open_error: BaseException | None = None
        self._stop = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancelled = False
        self._limit: asyncio.Semaphore | None = None

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
        """Start the stage's event loop if this is the first worker thread; then `open()`.

        A stop while `open()` runs cancels it; then setup returns without `open()`
        having completed, and `close()` is not called.
        """
        with self._lock:
            if self._runner is not None:
                return
            if self._open_error is None:
                try:
                    self._start()
                    return
                except BaseException as exc:
                    self._open_error = exc
                    self._leave()
                    raise
            failed = self._open_error
            self._leave()
        # The other workers fail with the same error, so that whichever of them reports
        # first, the run's failure is what `open()` (or the loop's start) raised.
        raise failed

    def teardown(self) -> None:
        """Run `close()` and stop the loop if this is the last worker thread out.

        Raises:
            BaseException: what `close()` raised, or what code on the loop raised out of
                it (`SystemExit`, `KeyboardInterrupt`) and no batch has raised yet.
        """
        with self._lock:
            opened = self._opened
            runner = self._leave()
        if runner is None:
            return
        try:
            if opened:
                try:
                    self._wait(runner, runner.call(_guarded(self.close())), cancel=False)
                except _Abandoned:
                    raise PipelineError(
                        f"stage {self.name!r}: close() did not end within "
                        f"stop_timeout={self.stop_timeout} s of the stop"
                    ) from None
        finally:
            runner.stop(self.stop_timeout)
        if runner.escaped is not None and not runner.escape_raised:
            raise runner.escaped

    def process_batch(self, items: list[In]) -> list[Out]:
        """Run one coroutine per item on the loop and wait for all; blocks until they end.

        Returns an empty list once the run stops (its coroutines are cancelled).

        Raises:
            ItemFailed: a coroutine raised (the original is its `__cause__`).
            BaseException: code on the loop outside any item raised `SystemExit` or
                `KeyboardInterrupt` out of it (a task of its own, a callback).
        """
        runner = self._runner
        if runner is None:
            raise PipelineError(f"stage {self.name!r}: process_batch() before setup()")
        if self._stop.is_set():  # nothing new starts once the run stops
            return []
        future = runner.call(self._run_batch(items))
        try:
            return self._wait(runner, future, cancel=True)
        except CancelledError:
            if self._stop.is_set():
                return []
            raise
        except _Abandoned:
            logger.warning(
                "stage %r: coroutines of a batch did not end within stop_timeout=%s s of "
                "the stop; they are left to the event loop's shutdown",
                self.name,
                self.stop_timeout,
            )
            return []

    def _wait(self, runner: LoopThread, future: Future[T], *, cancel: bool) -> T:
        """Wait in a worker thread for `future`, a call on the loop; return its result.

        Wakes every `STOP_CHECK_SECONDS` (or each slice, on the main thread): once the
        run has stopped, it has the loop cancel the stage's batches and `open()` if
        `cancel`, and waits at most `stop_timeout` more; if the loop's thread has ended,
        nothing will answer, and it stops waiting at once.

        Raises:
            _Abandoned: the call outlived the stop by `stop_timeout`.
            PipelineError: the loop's thread ended first (its cause is what ended it).
            BaseException: what the call raised; a `SystemExit` or `KeyboardInterrupt`
                raised on the loop, once, if the call itself did not fail.
        """
        slice_seconds = wait_slice() or STOP_CHECK_SECONDS
        deadline: float | None = None
        while not _ended(future, slice_seconds):
            if runner.ended.is_set():
                raise PipelineError(
                    f"stage {self.name!r}: its event loop ended while a call waited on it"
                ) from runner.escaped
            if not self._stop.is_set():
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.stop_timeout
                if cancel:
                    runner.loop.call_soon_threadsafe(self._cancel_all)
            elif now >= deadline:
                raise _Abandoned
        try:
            result = future.result()
        except _Escaping as escaping:
            original = escaping.original
        else:
            runner.raise_escape()
            return result
        raise original

    def _cancel_all(self) -> None:
        """Cancel every batch running (and `open()`), once; runs on the loop after the stop.

        Each is cancelled once, so that its `finally` can wait for its coroutines' own
        `finally` blocks uninterrupted; those starting later see the stop themselves.
        """
        if self._cancelled:
            return
        self._cancelled = True
        for task in list(self._tasks):
            task.cancel()

    async def _run_batch(self, items: list[In]) -> list[Out]:
        """Run the batch's coroutines; on the first failure cancel the others, then raise it."""
        if self._stop.is_set():
            raise asyncio.CancelledError
        batch = asyncio.current_task()
        assert batch is not None
        self._tasks.add(batch)
        try:
            if len(items) == 1:  # the common case for slow items: no task of its own
                try:
                    return [await self._limited(items[0])]
                except (asyncio.CancelledError, GeneratorExit):  # the task's, or its closing
                    raise
                except BaseException as exc:  # noqa: BLE001 - the item's failure, chained
                    raise ItemFailed(items[0], 0) from _original(exc)
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
        closing = False
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
        except GeneratorExit:  # a batch left after a stop is being closed: no more awaits
            closing = True
            raise
        finally:
            # The cancelled coroutines' finally blocks run before the batch ends; a batch
            # that ended well has none left, and skips the gather's callback per item.
            unfinished = []
            for task in tasks:
                if not task.done():
                    task.cancel()
                    unfinished.append(task)
                elif not task.cancelled():
                    task.exception()  # seen here: asyncio need not log it as unretrieved
            if unfinished and not closing:
                await asyncio.gather(*unfinished, return_exceptions=True)
        if failed_at is not None:
            outputs = [task.result() for task in tasks[:failed_at]]
            cause = _original(tasks[failed_at].exception())
            raise ItemFailed(items[failed_at], failed_at, outputs) from cause
        return [task.result() for task in tasks]

    async def _limited(self, item: In) -> Out:
        """Run one item's coroutine once there is room, unless the run has stopped."""
        assert self._limit is not None
        async with self._limit:
            if self._stop.is_set():
                raise asyncio.CancelledError
            task = asyncio.current_task()
            try:
                return await self.process_async(item)
            except asyncio.CancelledError as exc:
                if task is not None and task.cancelling():
                    raise
                # Nobody cancelled this task: the coroutine raised it on its own (it
                # awaited a future someone else cancelled), so it fails its item.
                raise _Escaping(exc) from exc
            except (KeyboardInterrupt, SystemExit) as exc:
                raise _Escaping(exc) from exc

    async def _open(self) -> None:
        """Run `open()` as a task the stop can cancel; a stop before it starts skips it."""
        if self._stop.is_set():
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await _guarded(self.open())
        finally:
            self._tasks.discard(task)

    def _start(self) -> None:
        """Start the loop and run `open()`; called by the first worker, under `_lock`."""
        self._stop = current_stop_event() or threading.Event()
        # The loop is new and runs nothing yet; a task the last run left is not ours.
        self._tasks = set()
        self._cancelled = False
        self._opened = False
        runner = LoopThread(f"pipeline-{self.name}-loop")
        try:
            self._limit = asyncio.Semaphore(self.concurrency)
            try:
                self._wait(runner, runner.call(self._open()), cancel=True)
                self._opened = True
            except CancelledError:
                if not self._stop.is_set():
                    raise
            except _Abandoned:
                raise PipelineError(
                    f"stage {self.name!r}: open() did not end within "
                    f"stop_timeout={self.stop_timeout} s of the stop"
                ) from None
        except BaseException:
            runner.stop(self.stop_timeout)
            raise
        self._runner = runner

    def _leave(self) -> LoopThread | None:
        """Count one worker thread out (under `_lock`); return the loop if it was the last."""
        self._left += 1
        if self._left < self.workers:
            return None
        runner, self._runner = self._runner, None
        self._left = 0
        self._open_error = None
        return runner


class AsyncFunctionStage(AsyncStage[In, Out], Generic[In, Out]):
    """An asyncio stage that maps each item through `function`, an `async def` function."""

    def __init__(
        self,
        function: Callable[[In], Awaitable[Out]],
        *,
        name: str | None = None,
        concurrency: int = 16,
        workers: int | None = None,
        latency_target: float | None = DEFAULT_LATENCY_TARGET,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        if inspect.isasyncgenfunction(function):
            raise TypeError(
                "function must be an async def function that returns one output per "
                f"item; {getattr(function, '__qualname__', function)!r} uses yield, so it "
                "makes an async generator"
            )
        default = getattr(function, "__name__", None)
        super().__init__(
            name or default,
            concurrency=concurrency,
            workers=workers,
            latency_target=latency_target,
            stop_timeout=stop_timeout,
        )
        self.function = function

    async def process_async(self, item: In) -> Out:
        awaitable = self.function(item)
        if not inspect.isawaitable(awaitable):
            raise TypeError(
                f"function {self.name!r} must return an awaitable (an async def function "
                f"returns a coroutine), got {type(awaitable).__name__}"
            )
        return await awaitable


def iterate_async(source: AsyncIterable[T]) -> Iterator[T]:
    """Return an iterator over an async iterable, so a pipeline can read it as its source.

    It runs the async iterator on an event loop of its own, in the thread that calls
    `next()` (the pipeline's source thread). Closing the iterator closes the async
    iterator too, on that loop (`aclose()`, so an async generator's `finally` runs):
    a run closes its source in the source thread however it ends, before `run()` or
    `stream()` returns or raises. A wait for the next item looks at the run's stop
    every `STOP_CHECK_SECONDS`: once the run stops, the wait is cancelled (the async
    generator gets `CancelledError` at its `await`) and the iterator ends.
    """
    if not isinstance(source, AsyncIterable):
        raise TypeError(f"source must be an async iterable, got {type(source).__name__}")
    return _iterate(source)


def _iterate(source: AsyncIterable[T]) -> Iterator[T]:
    loop = asyncio.new_event_loop()
    iterator = aiter(source)
    stop = current_stop_event()  # the run's, in its source thread, where this body runs
    # steps holds the wait for the next item in progress, for the watcher to cancel.
    steps: list[asyncio.Future[T]] = []
    watcher = None if stop is None else loop.create_task(_cancel_at_stop(stop, steps))
    try:
        while stop is None or not stop.is_set():
            step = asyncio.ensure_future(anext(iterator), loop=loop)
            steps[:] = [step]
            try:
                item = loop.run_until_complete(step)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if stop is not None and stop.is_set():
                    return  # the run stopped: nothing reads this source any more
                raise
            except BaseException:
                if step.done() and not step.cancelled():
                    step.exception()  # raised here: asyncio need not log it as unseen
                raise
            yield item
    finally:
        close = getattr(iterator, "aclose", None)
        try:
            # A wait cut short (a Ctrl-C in the thread that runs this, stopping its loop)
            # is cancelled first: an async generator cannot be closed while it runs.
            for pending in steps:
                if not pending.done():
                    pending.cancel()
                    loop.run_until_complete(asyncio.gather(pending, return_exceptions=True))
            if watcher is not None:
                watcher.cancel()
                loop.run_until_complete(asyncio.gather(watcher, return_exceptions=True))
            if close is not None:
                loop.run_until_complete(close())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


async def _cancel_at_stop(stop: threading.Event, steps: list[asyncio.Future[T]]) -> None:
    """Cancel the wait for a source's next item once the run stops; runs on its loop.

    It runs only while the loop does, that is while a wait is in progress, and cancels
    that wait once, so that the generator's own cleanup may await in peace.
    """
    while not stop.is_set():
        await asyncio.sleep(STOP_CHECK_SECONDS)
    for step in steps:
        step.cancel()


class _Abandoned(Exception):
    """A call on the loop outlived the stop by `stop_timeout`; the worker stops waiting."""


class _Escaping(Exception):
    """Carries a `SystemExit`, `KeyboardInterrupt` or stray `CancelledError` off the loop.

    asyncio stops its loop for the first two and treats the third as the task being
    cancelled; carried in an ordinary exception they reach the worker thread, which
    raises the original.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(type(original).__name__)
        self.original = original


def _ended(future: Future[Any], timeout: float) -> bool:
    """Wait at most `timeout` for `future` to end; return whether it has.

    `exception(timeout)` waits on the future's own condition; `concurrent.futures.wait`
    would build and install a waiter on every call, a cost paid per batch.
    """
    try:
        future.exception(timeout)
    except TimeoutError:
        return future.done()
    except CancelledError:
        pass
    return True


def _original(exc: BaseException | None) -> BaseException | None:
    """Return what `exc` carries if it is an `_Escaping`, else `exc`."""
    return exc.original if isinstance(exc, _Escaping) else exc


async def _guarded(call: Coroutine[Any, Any, T]) -> T:
    """Await a user's coroutine (`open()`, `close()`), carrying off what would stop the loop."""
    try:
        return await call
    except (KeyboardInterrupt, SystemExit) as exc:
        raise _Escaping(exc) from exc
