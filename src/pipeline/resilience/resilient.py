"""ResilientStage: wrap any stage with an error policy, retries, a circuit breaker, a timeout.

    fetch = ResilientStage(
        FetchPage(workers=8),
        on_error="collect",
        retry=RetryPolicy(max_attempts=4, base_delay=0.2, retry_on=(ConnectionError,)),
        breaker=CircuitBreaker(failure_threshold=5, reset_timeout=30),
        timeout=10.0,
        budget=FailureBudget(max_fraction=0.01),
    )

The wrapper processes its batch one item at a time, in order, each item through the
same steps: the breaker admits the attempt (or fails it fast with `CircuitOpen`); the
wrapped stage's `process_batch([item])` runs, in a helper thread if there is a timeout;
a failure the retry policy accepts waits out a backoff and tries again; a failure it
does not (or the last attempt's) goes to the error policy. Retries happen in place, so
outputs keep input order.

Every wait watches the run's stop event: when the pipeline stops (a failure elsewhere,
an early break, Ctrl-C, close()), a backoff ends at once and the rest of the batch is
left unprocessed, since nothing downstream will take it.

Items per call: the wrapped stage sees batches of one item. Its outputs are the same,
but a vectorised `process_batch` loses its speed; wrap the slow, failure-prone stage
(the one that calls a service), not the fast ones around it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from pipeline._checks import positive_int, seconds
from pipeline.errors import describe, short_repr
from pipeline.resilience.breaker import CircuitBreaker
from pipeline.resilience.errors import CircuitOpen, FailureBudgetExceeded, ItemTimeout
from pipeline.resilience.outcome import Failure, Success, capture_item
from pipeline.resilience.policy import (
    DeadLetter,
    DeadLetters,
    ErrorPolicy,
    FailureBudget,
    check_error_policy,
)
from pipeline.resilience.retry import RetryPolicy
from pipeline.resilience.timeout import DEFAULT_MAX_OVERRUNNING, TimeLimit
from pipeline.stage import ItemFailed, PipelineStage
from pipeline.worker import current_stop_event, current_worker_counters

__all__ = ["DEAD_LETTERED", "SKIPPED", "ResilienceStatistics", "ResilientStage"]

In = TypeVar("In")
Out = TypeVar("Out")

logger = logging.getLogger(__name__)

SKIPPED: Final = "skipped"
"""The name of the per-stage count of items dropped by "skip" (`StageStatistics.extra`)."""

DEAD_LETTERED: Final = "dead_lettered"
"""The name of the per-stage count of items sent to dead letters by "collect"."""

_NEVER_STOPPING: Final = threading.Event()
"""The stop event outside a pipeline run (a direct call in a test): never set."""


@dataclass(frozen=True, slots=True)
class ResilienceStatistics:
    """What a `ResilientStage` did with failures, summed over its workers and runs."""

    items_in: int
    retries: int
    timeouts: int
    circuit_rejections: int
    items_skipped: int
    items_dead_lettered: int


@dataclass(frozen=True, slots=True)
class _GaveUp:
    """An item failed for good with `error`, after `attempts` attempts."""

    error: Exception
    attempts: int


class _Stopped:
    """The run stopped while an item waited for a retry."""


_STOPPED: Final = _Stopped()


class ResilientStage(PipelineStage[In, Out], Generic[In, Out]):
    """Apply an error policy, retries, a circuit breaker and a timeout to `stage`.

    The wrapper takes the wrapped stage's name and worker count, and runs its setup and
    teardown once per worker thread (in the worker's helper thread when there is a
    timeout, so that `stage.local` is the same for setup, process and teardown).

    Args:
        stage: the stage to protect.
        on_error: what to do with an item that fails for good: "raise" stops the run
            with a `StageError` (the default); "skip" drops it, counts it and logs the
            first failure and then every `log_every`-th; "collect" drops it from the
            flow into `dead_letters`.
        retry: try failed items again, in place; a `CircuitOpen` is never retried.
        breaker: admit each attempt through this breaker (it may be shared with other
            stages); a rejected attempt fails with `CircuitOpen`.
        timeout: seconds to wait for each attempt; an overrun fails with `ItemTimeout`
            and the call goes on in a helper thread until it returns (see
            `pipeline.resilience.timeout`: the run waits for it before it ends).
        max_overrunning: with a timeout, the most overrunning calls each worker leaves
            running; a worker at the bound waits for the oldest to return before it
            starts the next attempt, so the stage holds at most
            `workers * (1 + max_overrunning)` helper threads.
        budget: a failure budget, often shared by several stages; exceeding it stops
            the run. Only with "skip" or "collect".
        dead_letters: the sink for "collect" (a new one if not given; several stages
            may share one). Only with "collect".
        log_every: with "skip", log one failure in this many.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range, or
            does not go with the error policy.
    """

    def __init__(
        self,
        stage: PipelineStage[In, Out],
        *,
        on_error: ErrorPolicy = "raise",
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: float | None = None,
        budget: FailureBudget | None = None,
        dead_letters: DeadLetters | None = None,
        log_every: int = 100,
        max_overrunning: int = DEFAULT_MAX_OVERRUNNING,
    ) -> None:
        if not isinstance(stage, PipelineStage) or not hasattr(stage, "workers"):
            raise TypeError(f"stage must be a PipelineStage, got {type(stage).__name__}")
        super().__init__(stage.name, workers=stage.workers)
        self.named_by_user = stage.named_by_user
        self.inner = stage
        self.on_error: ErrorPolicy = check_error_policy(on_error)
        _check_type("retry", retry, RetryPolicy)
        _check_type("breaker", breaker, CircuitBreaker)
        _check_type("budget", budget, FailureBudget)
        _check_type("dead_letters", dead_letters, DeadLetters)
        seconds("timeout", timeout, none_allowed=True)
        positive_int("max_overrunning", max_overrunning)
        if budget is not None and self.on_error == "raise":
            raise ValueError(
                "budget needs on_error='skip' or 'collect': with 'raise' the first failure "
                "already stops the run"
            )
        if dead_letters is not None and self.on_error != "collect":
            raise ValueError(f"dead_letters needs on_error='collect', got {self.on_error!r}")
        positive_int("log_every", log_every)
        self.retry = retry
        self.breaker = breaker
        self.timeout = timeout
        self.budget = budget
        if self.on_error == "collect" and dead_letters is None:
            dead_letters = DeadLetters()
        self.dead_letters = dead_letters
        self.log_every = log_every
        self.max_overrunning = max_overrunning
        # Guards the counters below, which any worker updates.
        self._lock = threading.Lock()
        self._items_in = 0
        self._retries = 0
        self._timeouts = 0
        self._circuit_rejections = 0
        self._skipped = 0
        self._dead_lettered = 0

    def setup(self) -> None:
        """Set up the wrapped stage for this worker; runs in the worker's thread."""
        if self.timeout is None:
            self.inner.setup()
            return
        time_limit = TimeLimit(
            self.timeout,
            self.inner.setup,
            self.inner.teardown,
            f"pipeline-{self.name}-timed",
            self.max_overrunning,
        )
        time_limit.start()
        self.local.time_limit = time_limit

    def teardown(self) -> None:
        """Tear down the wrapped stage for this worker, joining any helper threads."""
        if self.timeout is None:
            self.inner.teardown()
            return
        time_limit: TimeLimit = self.local.time_limit
        del self.local.time_limit
        time_limit.close()

    def process_batch(self, items: list[In]) -> list[Out]:
        """Process `items` one by one under the policies; runs in a worker thread.

        Raises:
            ItemFailed: an item failed under "raise", or exceeded the failure budget.
        """
        stopping = current_stop_event() or _NEVER_STOPPING
        with self._lock:
            self._items_in += len(items)
        if self.budget is not None:
            self.budget.record_items(len(items))
        outputs: list[Out] = []
        for index, item in enumerate(items):
            if stopping.is_set():
                break  # the run is over; nothing downstream takes the rest
            verdict = self._process_item(item, stopping)
            if verdict is _STOPPED:
                break
            if isinstance(verdict, Success):
                outputs.extend(verdict.value)
            elif isinstance(verdict, _GaveUp):
                self._give_up(item, index, verdict, outputs)
        return outputs

    def statistics(self) -> ResilienceStatistics:
        """Return the failure counts so far (over every run of this stage object)."""
        with self._lock:
            return ResilienceStatistics(
                items_in=self._items_in,
                retries=self._retries,
                timeouts=self._timeouts,
                circuit_rejections=self._circuit_rejections,
                items_skipped=self._skipped,
                items_dead_lettered=self._dead_lettered,
            )

    def __repr__(self) -> str:
        return f"<ResilientStage {self.inner!r} on_error={self.on_error!r}>"

    def _process_item(
        self, item: In, stopping: threading.Event
    ) -> Success[list[Out]] | _GaveUp | _Stopped:
        """Return the outputs of `item`, or why there are none, retrying as the policy allows."""
        time_limit: TimeLimit | None = self.local.time_limit if self.timeout else None
        attempts = 0
        while True:
            attempts += 1
            if time_limit is not None:
                time_limit.start()  # a fresh helper after a timeout; failing here stops the run
            outcome = self._attempt(item, time_limit)
            if isinstance(outcome, Success):
                return outcome
            error = outcome.error
            self._count_error(error)
            retry = self.retry
            if retry is None or isinstance(error, CircuitOpen):
                return _GaveUp(error, attempts)
            if not retry.should_retry(error, attempts):
                return _GaveUp(error, attempts)
            with self._lock:
                self._retries += 1
            delay = retry.delay(attempts)
            logger.debug(
                "stage %r: retry %d of item %s in %.3g s after %s",
                self.name,
                attempts,
                short_repr(item),
                delay,
                describe(error),
            )
            if stopping.wait(delay):
                return _STOPPED

    def _attempt(self, item: In, time_limit: TimeLimit | None) -> Success[list[Out]] | Failure:
        """Make one attempt at `item`: through the breaker, within the time limit."""
        breaker = self.breaker
        if breaker is None:
            return self._call(item, time_limit)
        permit = breaker.try_admit()
        if isinstance(permit, CircuitOpen):
            return Failure(permit)
        try:
            outcome = self._call(item, time_limit)
        except BaseException:
            breaker.abandon(permit)
            raise
        failed = isinstance(outcome, Failure) and breaker.trips_on(outcome.error)
        breaker.record(permit, failed=failed)
        return outcome

    def _call(self, item: In, time_limit: TimeLimit | None) -> Success[list[Out]] | Failure:
        """Return the outcome of the wrapped stage on `item`, in the helper if there is one."""
        if time_limit is None:
            return capture_item(self.inner.process_batch, item)
        return time_limit.call(capture_item, self.inner.process_batch, item)

    def _give_up(self, item: In, index: int, gave_up: _GaveUp, outputs: list[Out]) -> None:
        """Apply the error policy to an item that failed for good; runs in a worker thread.

        Raises:
            ItemFailed: under "raise", or when the failure budget is exceeded, carrying
                the batch's `outputs` so far; the worker loop turns it into the run's
                `StageError`, after delivering those outputs when the run reports
                failures at their position.
        """
        error, attempts = gave_up.error, gave_up.attempts
        if self.on_error == "raise":
            raise ItemFailed(item, index, outputs) from error
        counters = current_worker_counters()
        if self.dead_letters is not None:
            with self._lock:
                self._dead_lettered += 1
            if counters is not None:
                counters.count(DEAD_LETTERED)
            self.dead_letters.append(DeadLetter(self.name, item, error, attempts))
        else:
            with self._lock:
                self._skipped += 1
                skipped = self._skipped
            if counters is not None:
                counters.count(SKIPPED)
            if skipped == 1 or skipped % self.log_every == 0:
                self._log_skip(item, error, attempts, skipped)
        if self.budget is not None:
            try:
                self.budget.record_failure()
            except FailureBudgetExceeded as exceeded:
                exceeded.__cause__ = error
                raise ItemFailed(item, index, outputs) from exceeded

    def _count_error(self, error: Exception) -> None:
        if isinstance(error, CircuitOpen):
            with self._lock:
                self._circuit_rejections += 1
        elif isinstance(error, ItemTimeout):
            with self._lock:
                self._timeouts += 1

    def _log_skip(self, item: In, error: BaseException, attempts: int, skipped: int) -> None:
        logger.warning(
            "stage %r skipped item %s after %d attempt(s): %s (%d skipped so far)",
            self.name,
            short_repr(item),
            attempts,
            describe(error),
            skipped,
        )


def _check_type(name: str, value: object, kind: type[Any]) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__} or None, got {type(value).__name__}")
