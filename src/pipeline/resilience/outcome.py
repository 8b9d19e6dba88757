"""Outcome: the result of one attempt as a value, so the resilience code needs no exceptions
to steer by.

An attempt at an item either succeeds with its outputs or fails with an exception. The
retry loop, the breaker's bookkeeping and the error policy all look at that result, so
it travels between them as a value: caught once where the user's code runs, never
re-raised on the way, and raised only at the end, under the "raise" policy, to the core.
A `BaseException` that is not an `Exception` (Ctrl-C, `SystemExit`) is not an outcome:
it still propagates and stops the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, ParamSpec, TypeVar

from pipeline.stage import ItemFailed

__all__ = ["Failure", "Outcome", "Success", "capture", "capture_item"]

Item = TypeVar("Item")
Result = TypeVar("Result")
Parameters = ParamSpec("Parameters")


@dataclass(frozen=True, slots=True)
class Success(Generic[Result]):
    """An attempt that returned `value`."""

    value: Result


@dataclass(frozen=True, slots=True)
class Failure:
    """An attempt that failed with `error`: the user's own exception, or the resilience
    code's (`ItemTimeout`, `CircuitOpen`)."""

    error: Exception


Outcome = Success[Result] | Failure
"""What one attempt gave."""


def capture(
    function: Callable[Parameters, Result], *args: Parameters.args, **kwargs: Parameters.kwargs
) -> Success[Result] | Failure:
    """Call `function` and return what it returned or raised, as an outcome.

    Raises:
        A `BaseException` that is not an `Exception`, unchanged.
    """
    try:
        return Success(function(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - every failure of the call is its outcome
        return Failure(exc)


def capture_item(
    process_batch: Callable[[list[Item]], Result], item: Item
) -> Success[Result] | Failure:
    """Return the outcome of `process_batch([item])`, with the user's own exception.

    A stage's `process_batch` reports a failing item as `ItemFailed` caused by the
    user's exception (so the worker loop can name the item); here, with one item, the
    cause is the outcome.

    Raises:
        A `BaseException` that is not an `Exception`, unchanged, even when the stage
        reported it as the cause of an `ItemFailed`.
    """
    outcome = capture(process_batch, [item])
    if isinstance(outcome, Failure) and isinstance(outcome.error, ItemFailed):
        cause = outcome.error.__cause__
        if isinstance(cause, Exception):
            return Failure(cause)
        if cause is not None:  # Ctrl-C or SystemExit in the user's code: not an outcome
            raise cause
    return outcome
