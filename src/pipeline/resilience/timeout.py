"""TimeLimit: run one worker's calls in a helper thread, and stop waiting after a timeout.

Python cannot stop a running thread safely, and `pipeline` never kills one. So a call
that overruns its timeout keeps running in its helper thread until it returns by
itself, and its result (or exception) is thrown away. The worker stops waiting at the
timeout, leaves the helper thread to finish that call and then run the stage's
teardown, and starts a fresh helper thread, with its own setup, for the next item.

At most `max_overrunning` overrunning calls per worker are left running. A worker at
that bound does not start another helper thread: it waits for the oldest overrunning
call to return (its helper then runs teardown and is joined), so a stage never holds
more than `workers * (1 + max_overrunning)` helper threads, and a service that has
become slow slows the stage down instead of collecting threads. Waiting costs a stopping
run nothing: the stop joins every helper thread anyway.

`close()` joins every helper thread, the abandoned ones included. So a run ends (and
`Pipeline.close()`, or Ctrl-C, returns) only once every overrunning call has returned:
no thread outlives its run. A call that never returns would hold the run open forever;
give blocking I/O its own timeout too (a socket timeout, say), and use this one to keep
the pipeline moving past the calls that are merely slow.

One helper thread runs the stage's setup, its calls and its teardown, so per-worker
state on `stage.local` works unchanged. The helper thread adopts its worker's run
context (`pipeline.worker.run_context`), so `current_stop_event()` works in it, and a
`Pipeline.close()` called from it is known to come from inside the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Final, TypeVar

from pipeline.resilience.errors import ItemTimeout
from pipeline.resilience.outcome import Failure, Success
from pipeline.worker import adopt_run_context, run_context

__all__ = ["DEFAULT_MAX_OVERRUNNING", "TimeLimit"]

Result = TypeVar("Result")

DEFAULT_MAX_OVERRUNNING: Final = 4
"""Overrunning calls per worker left running before the worker waits for one to return."""

logger = logging.getLogger(__name__)


class TimeLimit:
    """One worker's helper thread, with a limit on how long a call is waited for.

    Used from one worker thread only (it is per-worker state, not shared).

    Args:
        seconds: how long to wait for each call.
        setup: run first in each helper thread (the stage's setup).
        teardown: run last in each helper thread (the stage's teardown).
        name: the helper threads' name prefix.
        max_overrunning: the most overrunning calls left running; at the bound,
            `start()` waits for the oldest to return.
    """

    def __init__(
        self,
        seconds: float,
        setup: Callable[[], object],
        teardown: Callable[[], object],
        name: str,
        max_overrunning: int = DEFAULT_MAX_OVERRUNNING,
    ) -> None:
        self.seconds = seconds
        self.max_overrunning = max_overrunning
        self.timeouts = 0
        self._setup = setup
        self._teardown = teardown
        self._name = name
        self._helper: ThreadPoolExecutor | None = None
        # Helpers whose call overran, each with the future of the teardown queued after
        # it, oldest first; and the teardowns of those already joined, for close().
        self._abandoned: list[tuple[ThreadPoolExecutor, Future[object]]] = []
        self._joined_teardowns: list[Future[object]] = []

    @property
    def overrunning(self) -> int:
        """How many abandoned helper threads have not been joined yet."""
        return len(self._abandoned)

    def start(self) -> None:
        """Start a helper thread and run setup in it, if none is running; blocks until done.

        Blocks first, while `max_overrunning` overrunning calls still run, until the
        oldest returns.

        Raises:
            Whatever setup raises, once the helper thread is joined.
        """
        if self._helper is not None:
            return
        self._join_finished()
        while len(self._abandoned) >= self.max_overrunning:
            logger.warning(
                "%s: %d calls overran the %g s timeout and still run; waiting for one to "
                "return before starting another helper thread",
                self._name,
                len(self._abandoned),
                self.seconds,
            )
            wait([self._abandoned[0][1]], return_when=FIRST_COMPLETED)
            self._join_finished()
        helper = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=self._name,
            initializer=adopt_run_context,
            initargs=(run_context(),),
        )
        try:
            helper.submit(self._setup).result()
        except BaseException:
            helper.shutdown(wait=True)
            raise
        self._helper = helper

    def call(
        self,
        function: Callable[..., Success[Result] | Failure],
        *args: Any,
    ) -> Success[Result] | Failure:
        """Return the outcome of `function(*args)`, run in the helper thread; `start()` first.

        `function` returns an outcome itself, so the user's exceptions stay values on
        their way across the threads. No result within `seconds` gives a `Failure` with
        `ItemTimeout`: the call goes on in the background and a fresh helper thread is
        needed (`start()` again) for the next call.

        Raises:
            RuntimeError: no helper thread is running.
            A `BaseException` that `function` let through (Ctrl-C in the helper).
        """
        helper = self._helper
        if helper is None:
            raise RuntimeError("TimeLimit.call() before start(), or after a timeout")
        future = helper.submit(function, *args)
        done, _ = wait([future], timeout=self.seconds)
        if done:
            return future.result()
        self.timeouts += 1
        self._abandoned.append((helper, helper.submit(self._teardown)))
        helper.shutdown(wait=False)
        self._helper = None
        return Failure(
            ItemTimeout(
                f"no result within the {self.seconds:g} s timeout "
                "(the call goes on in its helper thread until it returns)"
            )
        )

    def close(self) -> None:
        """Run teardown in the helper thread, then join every helper thread, abandoned ones too.

        Blocks until every overrunning call has returned.

        Raises:
            The first exception a teardown raised, once every helper thread is joined.
        """
        teardowns = self._joined_teardowns
        self._joined_teardowns = []
        if self._helper is not None:
            teardowns.append(self._helper.submit(self._teardown))
            self._helper.shutdown(wait=True)
            self._helper = None
        for helper, teardown in self._abandoned:
            helper.shutdown(wait=True)
            teardowns.append(teardown)
        self._abandoned.clear()
        for teardown in teardowns:
            teardown.result()

    def _join_finished(self) -> None:
        """Join the abandoned helpers whose call and teardown are over."""
        still_running = []
        for helper, teardown in self._abandoned:
            if teardown.done():
                helper.shutdown(wait=True)
                self._joined_teardowns.append(teardown)
            else:
                still_running.append((helper, teardown))
        self._abandoned = still_running
