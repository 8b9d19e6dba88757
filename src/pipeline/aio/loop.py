"""The event loop of an asyncio stage, in a thread of its own, and its shutdown.

asyncio lets a `SystemExit` or `KeyboardInterrupt` raised by a task or a callback out
of `run_forever()`, and `loop.stop()` called by code on the loop ends it too; either
would end the loop's thread with every call waiting on it unanswered. `LoopThread`
runs the loop on instead, keeping the first such exception for its stage to raise, so
that every wait on the loop still ends and a stop can still cancel what runs. Its
`stop()` shuts the loop down as `asyncio.run` does (the tasks left cancelled, async
generators and the default executor closed), each step bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Future, wait
from typing import Any, Final, TypeVar

from pipeline._interrupts import wait_slice
from pipeline.errors import PipelineError, describe

__all__ = ["STOP_CHECK_SECONDS", "LoopThread"]

T = TypeVar("T")

STOP_CHECK_SECONDS: Final = 0.05
"""How often a thread waiting for the loop looks at the run's stop event."""

logger = logging.getLogger(__name__)


class LoopThread:
    """An event loop running in a thread of its own until `stop()`; one per stage per run.

    What code on the loop raises out of `run_forever()` (or a `loop.stop()` of its
    own) is kept in `escaped`, the first of it, and the loop runs on. `ended` is set as
    the thread's last act.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        # escaped is written on the loop's thread only; escape_raised (a worker has
        # raised it) by worker threads, where raising it twice would only be repeated.
        self.escaped: BaseException | None = None
        self.escape_raised = False
        self.ended = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=name)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule `coroutine` on the loop; return the future of its outcome."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def raise_escape(self) -> None:
        """Raise what code on the loop raised out of it, the first time it is asked."""
        escaped = self.escaped
        if escaped is not None and not self.escape_raised:
            self.escape_raised = True
            raise escaped

    def stop(self, timeout: float) -> None:
        """Shut the loop down, stop it, join its thread and close it.

        Cancels the tasks left on it, closes its async generators and its default
        executor, each step bounded by `timeout`; then waits for the thread, which a
        coroutine blocking the loop holds until it returns.
        """
        shutdown = self.call(_shut_down(timeout))
        slice_seconds = wait_slice() or STOP_CHECK_SECONDS
        while not (wait((shutdown,), timeout=slice_seconds).done or self.ended.is_set()):
            pass
        self._stopping = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        while not self.ended.wait(wait_slice()):
            pass
        self._thread.join()
        self.loop.close()

    def _serve(self) -> None:
        """Run the loop until `stop()`; the loop thread's target."""
        try:
            while True:
                try:
                    self.loop.run_forever()
                except BaseException as exc:  # noqa: BLE001 - kept, raised by the stage
                    # A SystemExit or KeyboardInterrupt from a task or callback.
                    self._escape(exc)
                    continue
                if self._stopping:
                    return
                self._escape(
                    PipelineError(
                        "code on an asyncio stage's event loop called loop.stop(); "
                        "the stage stops its loop itself"
                    )
                )
        finally:
            self.ended.set()

    def _escape(self, exc: BaseException) -> None:
        if self.escaped is None:
            self.escaped = exc
        else:
            logger.error(
                "more code on an asyncio stage's event loop raised out of it: %s", describe(exc)
            )


async def _shut_down(timeout: float) -> None:
    """Cancel the loop's other tasks, close its async generators and default executor."""
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    left = [task for task in asyncio.all_tasks(loop) if task is not this]
    for task in left:
        task.cancel()
    if left:
        _, stuck = await asyncio.wait(left, timeout=timeout)
        if stuck:
            logger.warning(
                "%d tasks on an asyncio stage's event loop did not end within %s s of "
                "being cancelled at its shutdown; they are left unfinished",
                len(stuck),
                timeout,
            )
    for step in (loop.shutdown_asyncgens, loop.shutdown_default_executor):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(step(), timeout)
