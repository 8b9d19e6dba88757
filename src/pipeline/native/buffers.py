"""Check that a Python object can be read as a flat buffer of float64, and view it so.

Shared by ``pipeline.native.compiled`` (which hands the memory to C) and
``pipeline.native.production`` (which cuts it into chunks without copying). Nothing
here needs the compiled extension.

Accepted: any one-dimensional, C-contiguous buffer of native-order float64
(``array('d')``, a ``memoryview`` of format ``'d'``, a NumPy ``float64``
array), and a bytes-like object whose length is a multiple of 8, read as
float64. ``as_float64_view`` also converts any other iterable of floats with
``array('d', values)``. Everything else is rejected with a TypeError or
ValueError that names the format received and the one expected.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Iterable
from typing import TypeAlias

__all__ = ["Float64Input", "as_float64_view", "doubles", "float64_view"]

Float64Input: TypeAlias = "memoryview | bytes | bytearray | array.array[float] | Iterable[float]"
"""A float64 buffer or an iterable of floats."""

_DOUBLE_SIZE = 8
_BYTE_FORMATS = frozenset({"B", "b", "c"})
# Formats that mean "float64 in this machine's byte order".
_FLOAT64_FORMATS = frozenset({"d", "@d", "=d", "<d" if sys.byteorder == "little" else ">d"})


def as_float64_view(values: Float64Input, argument: str) -> memoryview[float]:
    """Return ``values`` as a flat memoryview of format 'd', converting iterables.

    A buffer is viewed without a copy; any other iterable is read into a new
    ``array('d')``. ``argument`` names the value in error messages.
    """
    view = float64_view(values, argument, writable=False)
    if view is not None:
        return view
    try:
        converted = array.array("d", values)
    except TypeError as exc:
        raise TypeError(
            f"{argument} must be a float64 buffer or an iterable of floats, "
            f"got {type(values).__name__}: {exc}"
        ) from exc
    return doubles(memoryview(converted))


def float64_view(obj: object, argument: str, *, writable: bool) -> memoryview[float] | None:
    """Return ``obj`` as a flat memoryview of format 'd', or None if it is no buffer.

    Raises TypeError/ValueError for a buffer that cannot be read as float64.
    """
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        return None
    if writable and view.readonly:
        raise TypeError(f"{argument} must be a writable buffer, got a read-only {_describe(obj)}")
    if view.ndim != 1:
        raise ValueError(
            f"{argument} must be a one-dimensional buffer, got {view.ndim} dimensions "
            f"(shape {view.shape}); flatten it first, e.g. with .reshape(-1) in NumPy"
        )
    if not view.c_contiguous:
        raise ValueError(
            f"{argument} must be a contiguous buffer, got a strided view "
            f"(strides {view.strides}, item size {view.itemsize}); copy it first"
        )
    if view.format in _BYTE_FORMATS:
        if view.nbytes % _DOUBLE_SIZE:
            raise ValueError(
                f"{argument} is a byte buffer of {view.nbytes} bytes, which is not a whole "
                f"number of float64 items ({_DOUBLE_SIZE} bytes each)"
            )
    elif view.format not in _FLOAT64_FORMATS:
        byte_order = " in non-native byte order" if view.format.endswith("d") else ""
        raise TypeError(
            f"{argument} must hold float64 items (buffer format 'd'), got "
            f"format {view.format!r} ({view.itemsize}-byte items{byte_order}) "
            f"from {_describe(obj)}"
        )
    return doubles(view)


def doubles(view: memoryview) -> memoryview[float]:
    """Return a contiguous view re-read as plain format 'd', so len() counts doubles.

    One canonical format for every accepted buffer ('<d' from NumPy, 'B' from
    bytes, 'd' from array) also lets slices of two views be assigned to each
    other. Casting through 'B' is how memoryview allows a 'd' to 'd' cast.
    """
    return view.cast("B").cast("d")


def _describe(obj: object) -> str:
    """Name the kind of object a buffer came from, for error messages."""
    if isinstance(obj, array.array):
        return f"array({obj.typecode!r})"
    return type(obj).__name__
