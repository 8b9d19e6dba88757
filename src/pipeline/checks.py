"""Argument checks shared by the constructors, so every one words its errors the same way."""

from __future__ import annotations

__all__ = ["positive_int"]


def positive_int(name: str, value: object) -> int:
    """Return `value` if it is an int >= 1 (not a bool).

    Raises:
        TypeError: `value` is not an int; the message names the parameter and the type.
        ValueError: `value` is less than 1; the message names the parameter and the value.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
