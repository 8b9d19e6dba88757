"""CircuitBreaker: stop calling a failing downstream service, and test it again later.

Closed: calls go through; `failure_threshold` failures in a row open the circuit.
Open: calls fail fast with `CircuitOpen`, without calling, for `reset_timeout` seconds.
Half-open: the first call after that is a trial, and exactly one: every other call
fails fast while it runs. A successful trial closes the circuit; a failed one opens it
again for another `reset_timeout`.

The lock guards only the state; it is never held across the protected call, so a slow
call does not serialise the callers, and a breaker can be shared by every worker of a
stage, or by several stages that call the same service. Each admitted call carries the
generation (the count of state changes) it was admitted in; the result of a call that
outlived its generation (a slow call that ends after the circuit opened) is ignored.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, ParamSpec, TypeVar

from pipeline._checks import non_empty_str, positive_int, seconds
from pipeline.resilience.errors import CircuitOpen
from pipeline.resilience.retry import ExceptionTypes, exception_types

__all__ = ["BreakerState", "CircuitBreaker", "StateChange"]

Parameters = ParamSpec("Parameters")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class StateChange(NamedTuple):
    """One change of a breaker's state, as passed to `on_state_change`."""

    breaker: str
    old: BreakerState
    new: BreakerState


class _Permit(NamedTuple):
    """An admitted call: the generation it was admitted in, and whether it is the trial."""

    generation: int
    trial: bool


class CircuitBreaker:
    """Fail fast while a downstream service keeps failing; thread-safe, shareable.

    Args:
        failure_threshold: consecutive failures that open the circuit.
        reset_timeout: seconds the circuit stays open before admitting one trial call.
        name: shown in `CircuitOpen` messages and logs; a non-empty str.
        trip_on: the exception types that count as the service failing, as one class or
            any iterable of classes (kept as a tuple); any other exception (bad input
            data, say) passes through and counts as an answer.
        on_state_change: called with a `StateChange` after every change, in the thread
            whose call caused it, without the lock held; changes are also logged.
        clock: the monotonic clock to read; tests pass a fake one.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        name: str = "circuit",
        trip_on: ExceptionTypes = (Exception,),
        on_state_change: Callable[[StateChange], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        positive_int("failure_threshold", failure_threshold)
        reset_seconds = seconds("reset_timeout", reset_timeout, zero_allowed=True)
        non_empty_str("name", name)
        trip_types = exception_types("trip_on", trip_on)
        if on_state_change is not None and not callable(on_state_change):
            raise TypeError(
                f"on_state_change must be callable, got {type(on_state_change).__name__}"
            )
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_seconds
        self.trip_on = trip_types
        self.on_state_change = on_state_change
        self._clock = clock
        # Guards everything below. _generation counts state changes; _failures counts
        # consecutive failures while closed; _opened_at is when the circuit last opened;
        # in HALF_OPEN, exactly one trial call is in flight (an abandoned trial returns
        # the circuit to OPEN, so HALF_OPEN never lasts without one).
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._failures = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        """The current state; OPEN turns HALF_OPEN when a call arrives after `reset_timeout`."""
        with self._lock:
            return self._state

    def call(
        self,
        function: Callable[Parameters, Result],
        *args: Parameters.args,
        **kwargs: Parameters.kwargs,
    ) -> Result:
        """Call `function(*args, **kwargs)` if the circuit admits it, and record the outcome.

        Raises:
            CircuitOpen: the circuit is open, or half-open with its trial call in flight.
            Whatever `function` raises, unchanged.
        """
        permit = self.admit()
        try:
            result = function(*args, **kwargs)
        except Exception as exc:
            self.record(permit, failed=self.trips_on(exc))
            raise
        except BaseException:
            self.abandon(permit)
            raise
        self.record(permit, failed=False)
        return result

    def trips_on(self, error: BaseException) -> bool:
        """Return whether `error` counts as the service failing (one of `trip_on`)."""
        return isinstance(error, self.trip_on)

    def admit(self) -> _Permit:
        """Return a permit for one call, or raise `CircuitOpen`; pair it with record/abandon."""
        admission = self.try_admit()
        if isinstance(admission, CircuitOpen):
            raise admission
        return admission

    def try_admit(self) -> _Permit | CircuitOpen:
        """Return a permit for one call, or the `CircuitOpen` error that refuses it.

        The error is returned, not raised, for callers that treat a refusal as one more
        outcome of an attempt (a `ResilientStage`).
        """
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return _Permit(self._generation, trial=False)
            if self._state is BreakerState.HALF_OPEN:
                return CircuitOpen(f"circuit {self.name!r} is half-open and its trial call is busy")
            waited = self._clock() - self._opened_at
            if waited < self.reset_timeout:
                return CircuitOpen(
                    f"circuit {self.name!r} is open; next trial in "
                    f"{self.reset_timeout - waited:.3g} s"
                )
            change = self._change(BreakerState.HALF_OPEN)
            permit = _Permit(self._generation, trial=True)
        self._announce(change)
        return permit

    def record(self, permit: _Permit, *, failed: bool) -> None:
        """Record the outcome of an admitted call."""
        change = None
        with self._lock:
            if permit.generation != self._generation:
                return  # the circuit changed state while this call ran
            if permit.trial:
                change = self._change(BreakerState.OPEN if failed else BreakerState.CLOSED)
            elif not failed:
                self._failures = 0
            else:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    change = self._change(BreakerState.OPEN)
        if change is not None:
            self._announce(change)

    def abandon(self, permit: _Permit) -> None:
        """Give up an admitted call without a verdict (it was interrupted)."""
        if not permit.trial:
            return
        with self._lock:
            if permit.generation != self._generation:
                return
            opened_at = self._opened_at
            change = self._change(BreakerState.OPEN)
            self._opened_at = opened_at  # the next call may be a trial at once
        self._announce(change)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    def _change(self, new: BreakerState) -> StateChange:
        """Move to `new`; called with the lock held."""
        change = StateChange(self.name, self._state, new)
        self._state = new
        self._generation += 1
        self._failures = 0
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        return change

    def _announce(self, change: StateChange) -> None:
        """Log a change and pass it to the callback; called without the lock."""
        level = logging.WARNING if change.new is BreakerState.OPEN else logging.INFO
        old, new = change.old.value, change.new.value
        logger.log(level, "circuit %r: %s -> %s", change.breaker, old, new)
        if self.on_state_change is not None:
            self.on_state_change(change)
