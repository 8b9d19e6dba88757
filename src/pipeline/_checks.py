"""Argument checks shared by the constructors, so every one words its errors the same way.

Each check returns the value it accepted and raises TypeError for the wrong type or
ValueError for a value out of range, naming the parameter. A bool is not a number here,
though Python counts it as an int.
"""

from __future__ import annotations

__all__ = ["int_at_least", "integer", "non_empty_str", "number", "positive_int"]


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
