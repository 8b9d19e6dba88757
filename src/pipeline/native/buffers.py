"""Check that a Python object can be read as a flat buffer of float64, view it so, or make one.

Shared by ``pipeline.native.compiled`` (which hands the memory to C),
``pipeline.native.reference`` (which must accept and reject exactly the same
objects) and ``pipeline.native.production`` (which cuts buffers into chunks
without copying). Nothing here needs the compiled extension.

Accepted: any one-dimensional, C-contiguous buffer of native-order float64
(``array('d')``, a ``memoryview`` of format ``'d'``, a NumPy ``float64``
array), and a bytes-like object whose length is a multiple of 8, read as
float64. ``as_float64_view`` also converts any other iterable of floats with
``array('d', values)``. Everything else is rejected with a TypeError or
ValueError that names the format received and the one expected.

``fresh_doubles`` makes new output memory the cheap way: a private anonymous
mapping, which the operating system hands out untouched and zeroes one page at
a time on first write, so the writer (the C loop, GIL released) faults in only
the pages it fills. Where Linux offers transparent huge pages for such
mappings, it asks for them (``madvise(MADV_HUGEPAGE)``) and aligns the view on
a huge-page boundary: one fault per 2 MiB instead of one per 4 KiB
(docs/gil-free.md has the arithmetic). Elsewhere (another OS, THP off) the
same call gives ordinary pages.
"""

from __future__ import annotations

import array
import ctypes
import functools
import mmap
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TypeAlias

__all__ = [
    "Float64Input",
    "as_float64_view",
    "checked_output",
    "doubles",
    "float64_view",
    "fresh_doubles",
    "huge_page_size",
]

Float64Input: TypeAlias = "memoryview | bytes | bytearray | array.array[float] | Iterable[float]"
"""A float64 buffer or an iterable of floats."""

_DOUBLE_SIZE = 8
_BYTE_FORMATS = frozenset({"B", "b", "c"})
# Formats that mean "float64 in this machine's byte order".
_FLOAT64_FORMATS = frozenset({"d", "@d", "=d", "<d" if sys.byteorder == "little" else ">d"})
# Outputs smaller than this come from the heap: a mapping costs two system calls,
# and below a huge page it brings no fewer faults.
_SMALLEST_MAPPED_BYTES = 1 << 20
_TRANSPARENT_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage")


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


def checked_output(
    output: object, length: int, *, argument: str, input_argument: str
) -> memoryview[float]:
    """Return ``output`` as a writable 'd' view after checking it has room for ``length`` items.

    Args:
        output: the caller's output buffer.
        length: how many float64 items the input has.
        argument: the output's parameter name, for messages.
        input_argument: the input's parameter name, for messages.

    Raises:
        TypeError: ``output`` is no buffer, read-only, or not of float64 items.
        ValueError: ``output`` is too short, not one-dimensional or not contiguous.
    """
    view = float64_view(output, argument, writable=True)
    if view is None:
        raise TypeError(
            f"{argument} must be a writable float64 buffer such as array('d'), "
            f"got {type(output).__name__}"
        )
    if len(view) < length:
        raise ValueError(
            f"{argument} holds {len(view)} float64 items but {input_argument} has "
            f"{length}; {argument} needs room for every input item"
        )
    return view


def fresh_doubles(count: int, *, huge_pages: bool = True) -> memoryview[float]:
    """Return a new writable view of ``count`` float64 zeros whose pages are touched lazily.

    Large outputs live in a private anonymous mapping: nothing is written here,
    the first write to each page faults it in (zeroed by the kernel), in
    whichever thread writes it. With ``huge_pages`` (the default) and
    transparent huge pages available, the mapping asks for them and the view
    starts on a huge-page boundary. The memory lives as long as the view or
    any view derived from it; slicing the view keeps the whole mapping, but
    pages never written take no memory.

    Args:
        count: how many float64 items the view holds.
        huge_pages: False asks for ordinary pages (for comparison in benchmarks).

    Raises:
        ValueError: ``count`` is negative.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    size = count * _DOUBLE_SIZE
    if size < _SMALLEST_MAPPED_BYTES:
        return doubles(memoryview(bytearray(size)))
    huge_page = huge_page_size() if huge_pages else 0
    if huge_page == 0:
        return doubles(memoryview(_anonymous_mapping(size)))
    mapping = _anonymous_mapping(size + huge_page)
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # THP compiled out or refused: ordinary pages, still lazily zeroed
        return doubles(memoryview(mapping)[:size])
    skip = -_address(mapping) % huge_page
    return doubles(memoryview(mapping)[skip : skip + size])


@functools.cache
def huge_page_size() -> int:
    """Return the transparent huge page size this process may ask for, or 0 if it may not.

    Linux only, and only when THP is not switched off (``enabled`` is
    ``always`` or ``madvise``); read once.
    """
    if not hasattr(mmap, "MADV_HUGEPAGE") or not hasattr(mmap, "MAP_PRIVATE"):
        return 0
    try:
        enabled = (_TRANSPARENT_HUGE_PAGES / "enabled").read_text()
        size = int((_TRANSPARENT_HUGE_PAGES / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 0
    if "[never]" in enabled or size <= 0 or size % mmap.PAGESIZE:
        return 0
    return size


def overlap(first: memoryview[float], second: memoryview[float]) -> bool:
    """Return whether two views share memory, as far as can be told.

    Addresses are read through ``ctypes``, which only sees writable buffers:
    a read-only view is taken to share nothing (it could still be a read-only
    view of writable memory, which this cannot tell).
    """
    if first.readonly or second.readonly or len(first) == 0 or len(second) == 0:
        return False
    first_start = _address(first)
    second_start = _address(second)
    return first_start < second_start + second.nbytes and second_start < first_start + first.nbytes


def _anonymous_mapping(size: int) -> mmap.mmap:
    """Return ``size`` bytes of fresh memory private to this process, not yet touched."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return mmap.mmap(-1, size)  # Windows: backed by the page file, private to the process


def _address(writable: mmap.mmap | memoryview[float]) -> int:
    """Return the address where a writable buffer starts."""
    return ctypes.addressof(ctypes.c_char.from_buffer(writable))


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
