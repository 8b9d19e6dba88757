"""One monitor thread per pipeline that samples its statistics for every live view.

Progress bars and the timeline recorder both want `pipeline.stats()` every so often
while a run goes on. Rather than a thread each, they subscribe here: the first
subscriber for a pipeline starts its monitor thread, every later one shares it, and the
last to leave stops and joins it. Each subscriber gives its own interval; the thread
wakes for whichever is due next. The worker threads do no extra work either way.

    subscription = subscribe(pipeline, 0.1, lambda at, stats: print(at, stats.items_read))
    ...
    subscription.close()  # joins the thread if this was the last subscriber

`close()` waits for a callback in progress at most `CLOSE_TIMEOUT` seconds: a callback
that is stuck (a progress bar writing to a pipe nobody reads) cannot hold the program,
as no thread can be killed. Past that bound `close()` logs a warning and returns; the
callback is not called again, and the monitor thread (a daemon, so that it cannot hold
the program's exit either) ends when the callback returns. A callback may close its
own subscription.

A callback runs in the monitor thread; one that raises (anything, SystemExit included,
which would otherwise end the thread silently) is logged and the others still get
their samples: its first failure as an error with the traceback, the later ones at
debug level, so a broken view does not fill the log ten times a second. Standard library only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from pipeline.pipeline import Pipeline
from pipeline.stats import PipelineStatistics

__all__ = ["THREAD_NAME", "SampleCallback", "Subscription", "subscribe"]

SampleCallback = Callable[[float, PipelineStatistics], object]
"""Called in the monitor thread with the `time.perf_counter()` of a sample and the sample."""

THREAD_NAME: Final = "pipeline-sampler"
"""The name of the monitor threads."""

CLOSE_TIMEOUT: Final = 5.0
"""The seconds `Subscription.close()` waits for a callback in progress."""

logger = logging.getLogger(__name__)

# Guards _samplers: the live sampler of each pipeline, by the pipeline's id (the sampler
# holds the pipeline, so the id is not reused while it is in the table).
_samplers_lock = threading.Lock()
_samplers: dict[int, _Sampler] = {}


class Subscription:
    """One subscriber's share of a pipeline's monitor thread; `close()` to leave."""

    def __init__(self, sampler: _Sampler, interval: float, callback: SampleCallback) -> None:
        self.interval = interval
        self.callback = callback
        self.due = time.monotonic() + interval
        self.failures = 0  # callbacks that raised; only the first is logged as an error
        self._sampler = sampler
        self._closed = False

    def close(self) -> None:
        """Stop receiving samples; blocks until the thread is joined if this was the last one.

        Once it returns, the callback will not be called again and, unless it was still
        running after `CLOSE_TIMEOUT` seconds (logged as a warning), is not running.
        Closing twice is harmless, and so is closing from the callback itself.
        """
        if self._closed:
            return
        self._closed = True
        self._sampler.leave(self)


def subscribe(
    pipeline: Pipeline[Any, Any], interval: float, callback: SampleCallback
) -> Subscription:
    """Call `callback` with a snapshot of `pipeline.stats()` every `interval` seconds.

    No snapshot is passed before the pipeline's first run. The caller checks
    `interval` (see `pipeline._checks.seconds`).

    Returns:
        The subscription; close it to stop.
    """
    with _samplers_lock:
        sampler = _samplers.get(id(pipeline))
        if sampler is None:
            sampler = _samplers[id(pipeline)] = _Sampler(pipeline)
        subscription = Subscription(sampler, interval, callback)
        sampler.join(subscription)
    return subscription


class _Sampler:
    """The monitor thread of one pipeline and its subscribers."""

    def __init__(self, pipeline: Pipeline[Any, Any]) -> None:
        self.pipeline = pipeline
        # Guards _subscribers, _stopping and _ended; notified when any changes. _sampling
        # is held by the thread while it calls back, so leave() can wait out a callback.
        self._changed = threading.Condition()
        self._sampling = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._stopping = False
        self._ended = False
        # A daemon only so that a callback which never returns cannot hold the program's
        # exit: leave() joins it whenever the callback returns within CLOSE_TIMEOUT.
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def join(self, subscription: Subscription) -> None:
        """Add a subscriber; called with `_samplers_lock` held."""
        with self._changed:
            self._subscribers.append(subscription)
            self._changed.notify_all()

    def leave(self, subscription: Subscription) -> None:
        """Remove a subscriber; the last one out stops and joins the thread."""
        with _samplers_lock, self._changed:
            self._subscribers.remove(subscription)
            last = not self._subscribers
            if last:
                self._stopping = True
                del _samplers[id(self.pipeline)]
            self._changed.notify_all()
        if threading.current_thread() is self._thread:
            return  # called from a callback: the thread ends, or samples others, after it
        if last:
            ended = self._wait_ended(time.monotonic() + CLOSE_TIMEOUT)
        else:
            ended = self._sampling.acquire(timeout=CLOSE_TIMEOUT)
            if ended:
                self._sampling.release()  # a callback of this subscriber in progress has ended
        if not ended:
            logger.warning(
                "the monitor thread of a pipeline is still in a subscriber's callback after "
                "%g s; that subscriber is not called again, and the thread ends when the "
                "callback returns",
                CLOSE_TIMEOUT,
            )

    def _wait_ended(self, deadline: float) -> bool:
        """Wait until the thread has left its loop, or `deadline`; join it if it has."""
        with self._changed:
            while not self._ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        self._thread.join()  # it has left its loop: only returning is left
        return True

    def _run(self) -> None:
        """Run `_sample_until_stopped`, then say the thread has ended; the thread's target."""
        try:
            self._sample_until_stopped()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _sample_until_stopped(self) -> None:
        """Wait for the next due subscriber, sample, call back, until told to stop."""
        while True:
            with self._changed:
                while not self._stopping:
                    if not self._subscribers:  # started, its first subscriber not yet in
                        self._changed.wait()
                        continue
                    now = time.monotonic()
                    due = [s for s in self._subscribers if s.due <= now]
                    if due:
                        break
                    next_due = min(s.due for s in self._subscribers)
                    self._changed.wait(next_due - now)
                if self._stopping:
                    return
                for subscription in due:
                    subscription.due = now + subscription.interval
            with self._sampling:
                with self._changed:
                    due = [s for s in due if s in self._subscribers]
                stats = self.pipeline.stats()
                if stats is None:
                    continue
                at = time.perf_counter()
                for subscription in due:
                    try:
                        subscription.callback(at, stats)
                    except BaseException:  # SystemExit too: it would end this thread
                        subscription.failures += 1
                        if subscription.failures == 1:
                            logger.exception(
                                "a statistics subscriber failed; its later failures are "
                                "logged at debug level"
                            )
                        else:
                            logger.debug(
                                "a statistics subscriber failed again (%d times)",
                                subscription.failures,
                                exc_info=True,
                            )
