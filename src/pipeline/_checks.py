"""Argument checks shared by the constructors, so every one words its errors the same way.

Each check returns the value it accepted and raises TypeError for the wrong type or
ValueError for a value out of range, naming the parameter. A bool is not a number here,
though Python counts it as an int.
"""

from __future__ import annotations

import math
from typing import overload

__all__ = ["int_at_least", "integer", "non_empty_str", "number", "positive_int", "seconds"]


def integer(name: str, value: object) -> int:
    """Return `value` if it is an int (not a bool); else raise TypeError naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def int_at_least(name: str, value: object, minimum: int) -> int:
    """Return `value` if it is an int >= `minimum`; else raise TypeError or ValueError."""
    checked = integer(name, value)
    if checked < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {checked}")
    return checked


def positive_int(name: str, value: object) -> int:
    """Return `value` if it is an int >= 1; else raise TypeError or ValueError."""
    return int_at_least(name, value, 1)


def number(name: str, value: object) -> float:
    """Return `value` if it is an int or a float (not a bool); else raise TypeError."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return value


def non_empty_str(name: str, value: object) -> str:
    """Return `value` if it is a non-empty str; else raise TypeError or ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


@overload
def seconds(name: str, value: object, *, zero_allowed: bool = ...) -> float: ...
@overload
def seconds(
    name: str, value: object, *, zero_allowed: bool = ..., none_allowed: bool
) -> float | None: ...
def seconds(
    name: str, value: object, *, zero_allowed: bool = False, none_allowed: bool = False
) -> float | None:
    """Return `value` as a float if it is a finite number of seconds > 0; else raise.

    Every time argument of the package (timeouts, delays, intervals) goes through this
    one check, so they all accept and reject the same values with the same words.
    Infinity is refused because no wait of the standard library can take it.

    Args:
        name: the parameter's name, for the message.
        value: the argument.
        zero_allowed: accept 0 too (a delay may be nothing; a timeout may not).
        none_allowed: accept None (meaning "no limit") and return it.

    Raises:
        TypeError: `value` is not an int or a float (a bool is not), nor an allowed None.
        ValueError: `value` is negative, zero when that is not allowed, NaN or infinite.
    """
    if value is None and none_allowed:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        kind = "a number or None" if none_allowed else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    in_range = value >= 0 if zero_allowed else value > 0  # False for NaN
    if not in_range or math.isinf(value):
        bound = ">= 0" if zero_allowed else "> 0"
        raise ValueError(f"{name} must be {bound} seconds and finite, got {value}")
    return float(value)
