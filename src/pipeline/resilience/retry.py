"""RetryPolicy: how often, after how long, and on which errors to try an item again.

The delay before retry number n (n = 1 after the first failure) is drawn uniformly
from [0, min(max_delay, base_delay * multiplier ** (n - 1))]: exponential backoff with
"full jitter", which spreads the retries of many workers over the whole window instead
of sending them back to a struggling service in synchronised waves.

By default only the errors that say "try again later" are retried: `TRANSIENT_ERRORS`,
a timeout (`TimeoutError`, which `ItemTimeout` and `socket.timeout` are) or a broken
connection (`ConnectionError`: refused, reset, aborted, a broken pipe). Any other
error, a `ValueError` from bad data say, fails the same way on every attempt, so it
goes to the error policy at once; name your own transient errors with `retry_on`.

The policy only computes; the waiting is done by whoever applies it (a `ResilientStage`
waits on the pipeline's stop event, so a stopping pipeline never sits out a backoff).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from pipeline._checks import number, positive_int, seconds

__all__ = ["TRANSIENT_ERRORS", "ExceptionTypes", "RetryPolicy", "exception_types"]

TRANSIENT_ERRORS: Final[tuple[type[BaseException], ...]] = (TimeoutError, ConnectionError)
"""What `RetryPolicy()` retries by default: timeouts and broken connections."""

ExceptionTypes = type[BaseException] | Iterable[type[BaseException]]
"""What `retry_on` and `trip_on` accept: one exception class, or any iterable of them."""


@dataclass(frozen=True, init=False)
class RetryPolicy:
    """Try an item up to `max_attempts` times when it fails with one of `retry_on`.

    Args:
        max_attempts: attempts in all, the first included (1 means never retry).
        base_delay: the backoff window, in seconds, before the first retry.
        max_delay: the cap on the backoff window, in seconds.
        multiplier: how much the window grows after each failed attempt.
        retry_on: the exception types worth retrying, as one class or any iterable of
            classes (kept as a tuple); any other exception fails the item at once. The
            default, `TRANSIENT_ERRORS`, is `(TimeoutError, ConnectionError)`.
        rng: the random source of the jitter; pass `random.Random(seed)` to repeat a run
            (None, the default: a fresh `random.Random()`).

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    # A hand-written __init__ (the dataclass supplies repr and eq) so that retry_on can
    # take any iterable and still be stored, checked, as the tuple `isinstance` needs.
    def __init__(
        self,
        max_attempts: int = 3,
        base_delay: float = 0.1,
        max_delay: float = 30.0,
        multiplier: float = 2.0,
        retry_on: ExceptionTypes = TRANSIENT_ERRORS,
        rng: random.Random | None = None,
    ) -> None:
        positive_int("max_attempts", max_attempts)
        seconds("base_delay", base_delay, zero_allowed=True)
        seconds("max_delay", max_delay, zero_allowed=True)
        if math.isinf(number("multiplier", multiplier)):
            raise ValueError(f"multiplier must be finite, got {multiplier}")
        if max_delay < base_delay:
            raise ValueError(
                f"max_delay must be >= base_delay, got max_delay={max_delay} "
                f"and base_delay={base_delay}"
            )
        if not multiplier >= 1:  # also rejects NaN
            raise ValueError(f"multiplier must be >= 1, got {multiplier}")
        if rng is None:
            rng = random.Random()
        elif not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {type(rng).__name__}")
        object.__setattr__(self, "max_attempts", max_attempts)
        object.__setattr__(self, "base_delay", base_delay)
        object.__setattr__(self, "max_delay", max_delay)
        object.__setattr__(self, "multiplier", multiplier)
        object.__setattr__(self, "retry_on", exception_types("retry_on", retry_on))
        object.__setattr__(self, "rng", rng)

    def should_retry(self, error: BaseException, attempts: int) -> bool:
        """Return whether an item that failed with `error` on attempt `attempts` gets another."""
        return attempts < self.max_attempts and isinstance(error, self.retry_on)

    def backoff_window(self, retry: int) -> float:
        """Return the longest delay before retry number `retry` (1 for the first retry)."""
        try:
            window = self.base_delay * self.multiplier ** (retry - 1)
        except OverflowError:  # far past the cap
            return self.max_delay
        return min(self.max_delay, window)

    def delay(self, retry: int) -> float:
        """Return a delay drawn with full jitter from [0, backoff_window(retry)]."""
        return self.rng.uniform(0.0, self.backoff_window(retry))


def exception_types(name: str, value: object) -> tuple[type[BaseException], ...]:
    """Return `value`, one exception class or an iterable of them, as a non-empty tuple.

    Shared by `RetryPolicy(retry_on=)` and `CircuitBreaker(trip_on=)`: both end in
    `isinstance(error, types)`, which only a class or a tuple of classes can serve.

    Raises:
        TypeError: `value` is neither a class nor an iterable, or a member is not a
            `BaseException` subclass; the message names the parameter and the member.
        ValueError: the iterable is empty.
    """
    if isinstance(value, type):
        members: tuple[object, ...] = (value,)
    elif isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            f"{name} must be an exception class or an iterable of them, "
            f"got {type(value).__name__} {value!r}"
        )
    else:
        members = tuple(value)
    if not members:
        raise ValueError(f"{name} must hold at least one exception class, got {value!r}")
    kinds: list[type[BaseException]] = []
    for member in members:
        if not isinstance(member, type):
            raise TypeError(
                f"{name} must hold exception classes, got {member!r} ({type(member).__name__})"
            )
        if not issubclass(member, BaseException):
            raise TypeError(
                f"{name} must hold exception classes, got {member.__name__}, "
                "which is not a BaseException subclass"
            )
        kinds.append(member)
    return tuple(kinds)
