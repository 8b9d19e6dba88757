"""RetryPolicy: how often, after how long, and on which errors to try an item again.

The delay before retry number n (n = 1 after the first failure) is drawn uniformly
from [0, min(max_delay, base_delay * multiplier ** (n - 1))]: exponential backoff with
"full jitter", which spreads the retries of many workers over the whole window instead
of sending them back to a struggling service in synchronised waves.

The policy only computes; the waiting is done by whoever applies it (a `ResilientStage`
waits on the pipeline's stop event, so a stopping pipeline never sits out a backoff).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Try an item up to `max_attempts` times when it fails with one of `retry_on`.

    Args:
        max_attempts: attempts in all, the first included (1 means never retry).
        base_delay: the backoff window, in seconds, before the first retry.
        max_delay: the cap on the backoff window, in seconds.
        multiplier: how much the window grows after each failed attempt.
        retry_on: the exception types worth retrying (a timeout, a refused connection);
            any other exception fails the item at once.
        rng: the random source of the jitter; pass `random.Random(seed)` to repeat a run.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool):
            raise TypeError(f"max_attempts must be an int, got {type(self.max_attempts).__name__}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("base_delay", "max_delay", "multiplier"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay must be >= base_delay, got max_delay={self.max_delay} "
                f"and base_delay={self.base_delay}"
            )
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if isinstance(self.retry_on, type):
            object.__setattr__(self, "retry_on", (self.retry_on,))
        if not self.retry_on or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in self.retry_on
        ):
            raise TypeError(
                f"retry_on must be a non-empty tuple of exception types, got {self.retry_on!r}"
            )

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
