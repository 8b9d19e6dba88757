"""TimeLimit: run one worker's calls in a helper thread, and stop waiting after a timeout.

Python cannot stop a running thread safely, and `pipeline` never kills one. So a call
that overruns its timeout keeps running in its helper thread until it returns by
itself, and its result (or exception) is thrown away. The worker stops waiting at the
timeout, leaves the helper thread to finish that call and then run the stage's
teardown, and starts a fresh helper thread, with its own setup, for the next item.

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

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

from pipeline.resilience.errors import ItemTimeout
from pipeline.worker import adopt_run_context, run_context

__all__ = ["TimeLimit"]

Argument = TypeVar("Argument")
Result = TypeVar("Result")


class TimeLimit:
    """One worker's helper thread, with a limit on how long a call is waited for.

    Used from one worker thread only (it is per-worker state, not shared).

    Args:
        seconds: how long to wait for each call.
        setup: run first in each helper thread (the stage's setup).
        teardown: run last in each helper thread (the stage's teardown).
        name: the helper threads' name prefix.
    """

    def __init__(
        self,
        seconds: float,
        setup: Callable[[], object],
        teardown: Callable[[], object],
        name: str,
    ) -> None:
        self.seconds = seconds
        self.timeouts = 0
        self._setup = setup
        self._teardown = teardown
        self._name = name
        self._helper: ThreadPoolExecutor | None = None
        # Helpers whose call overran, each with the future of the teardown queued after it.
        self._abandoned: list[tuple[ThreadPoolExecutor, Future[object]]] = []

    def start(self) -> None:
        """Start a helper thread and run setup in it, if none is running; blocks until done.

        Raises:
            Whatever setup raises, once the helper thread is joined.
        """
        if self._helper is not None:
            return
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

    def call(self, function: Callable[[Argument], Result], argument: Argument) -> Result:
        """Return `function(argument)`, run in the helper thread; `start()` it first.

        Raises:
            ItemTimeout: no result within `seconds`; the call goes on in the background
                and a fresh helper thread is needed (`start()` again) for the next call.
            Whatever `function` raises, unchanged.
        """
        helper = self._helper
        if helper is None:
            raise RuntimeError("TimeLimit.call() before start(), or after a timeout")
        future = helper.submit(function, argument)
        # wait() rather than result(timeout): a TimeoutError raised by the call itself
        # must not be mistaken for the call running out of time.
        done, _ = wait([future], timeout=self.seconds)
        if done:
            return future.result()
        self.timeouts += 1
        self._abandoned.append((helper, helper.submit(self._teardown)))
        helper.shutdown(wait=False)
        self._helper = None
        raise ItemTimeout(
            f"no result within the {self.seconds:g} s timeout "
            "(the call goes on in its helper thread until it returns)"
        )

    def close(self) -> None:
        """Run teardown in the helper thread, then join every helper thread, abandoned ones too.

        Blocks until every overrunning call has returned.

        Raises:
            The first exception a teardown raised, once every helper thread is joined.
        """
        teardowns: list[Future[object]] = []
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
