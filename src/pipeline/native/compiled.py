"""Call the C transform (``csrc/transform.c``) on buffers of doubles, GIL released.

This module is the only importer of the compiled ``pipeline.native._native``. It
checks what the caller passed, hands the memory to C without copying it
(``ffi.from_buffer``), and checks the status the C function returns. The C call
runs with the GIL released (cffi's API mode does that for every call), so
several threads can transform distinct batches at the same time. ``move``
copies doubles the same way, GIL released, for callers that put results in
place in fresh memory (``pipeline.native.production`` does).

``pipeline.native.reference`` offers the same three functions with the same
signatures, the same argument checks (``pipeline.native.buffers``) and the same
``TransformCounts``: choosing an implementation is choosing a module.

Accepted inputs: any one-dimensional, C-contiguous buffer of native float64
(``array('d')``, a ``memoryview`` of format ``'d'``, a NumPy ``float64`` array),
a bytes-like object whose length is a multiple of 8 (read as float64), or
any other sequence of floats, which is converted with ``array('d', values)``.
A buffer that is not aligned on 8 bytes (a ``memoryview`` slice of a
``bytearray`` at an odd offset, say) is copied once into an aligned array,
because the C code reads doubles directly and unaligned access is undefined
behaviour in C.

If the extension is not built, importing this module raises ImportError that
says how to build it. Nothing falls back to the pure-Python reference
silently; ``pipeline.native.reference`` is there to be chosen explicitly.
"""

from __future__ import annotations

import array
import sys
import sysconfig
from typing import Any

from pipeline.native.buffers import (
    Float64Input,
    as_float64_view,
    checked_output,
    doubles,
    fresh_doubles,
)
from pipeline.native.counts import TransformCounts

try:
    from pipeline.native._native import ffi, lib
except ImportError as exc:
    if sysconfig.get_config_var("Py_GIL_DISABLED") and sys.version_info < (3, 14):
        raise ImportError(
            "pipeline.native.compiled is not available on free-threaded Python 3.13: cffi "
            "cannot build the C core there (it supports free-threaded 3.14 and later); "
            "select the pure-Python reference explicitly "
            "(pipeline.native.reference.transform_reference)"
        ) from exc
    raise ImportError(
        "pipeline.native.compiled needs the compiled C core pipeline.native._native, "
        "which is not built or failed to load: the package was installed without a "
        "working C compiler and Python's headers, or with PIPELINE_NATIVE=skip; "
        "reinstall with them (`make install` in a checkout) to build it, or select the "
        "pure-Python reference explicitly (pipeline.native.reference)"
    ) from exc

__all__ = [
    "Float64Input",
    "TransformCounts",
    "move",
    "transform",
    "transform_into",
    "transform_into_end",
]

_DOUBLE_SIZE = 8

_STATUS_MESSAGES = {
    lib.PL_ERROR_NULL_POINTER: "a NULL pointer was passed for a non-empty batch",
    lib.PL_ERROR_OUTPUT_TOO_SMALL: "the output buffer is smaller than the input",
}


def transform(
    values: Float64Input, *, out: object = None
) -> tuple[memoryview[float], TransformCounts]:
    """Transform ``values`` in C and return the kept results and the counts.

    Without ``out`` the results go to fresh memory (``buffers.fresh_doubles``:
    allocated once, never written before the C loop writes it, on huge pages
    where the platform has them), so the only cost beyond the loop is the
    kernel zeroing the pages the results land on. With ``out`` they go to
    the front of the caller's buffer, and a stream of calls pays for its
    pages once. The input is read in place (no copy, unless misaligned).

    Args:
        values: a float64 buffer or a sequence of floats (see the module docstring).
        out: None, or a writable float64 buffer with room for ``len(values)``
            items; it may be ``values`` itself (the transform then runs in place).

    Returns:
        The kept results, in input order, as a memoryview of format 'd' (a
        sequence of floats with the buffer protocol: ``tolist()``,
        ``tobytes()``, ``numpy.frombuffer``), over ``out`` if it was given,
        and the counts of the call.

    Raises:
        TypeError: ``values`` or ``out`` has another item type, ``out`` is
            read-only or no buffer, or an item of a sequence is not a real number.
        ValueError: ``out`` is shorter than ``values``, or a buffer is not
            one-dimensional and C-contiguous, or a byte buffer's length is not a
            multiple of 8.
    """
    input_view = as_float64_view(values, "values")
    if out is None:
        output = fresh_doubles(len(input_view))
    else:
        output = checked_output(out, len(input_view), argument="out", input_argument="values")
    counts = _call(input_view, output, at_end=False)
    return output[: counts.kept], counts


def transform_into(values: Float64Input, output: object) -> TransformCounts:
    """Transform ``values`` in C into the front of the caller's ``output`` buffer.

    Reusing one output buffer across calls avoids an allocation and its page
    faults per batch. The results are ``output[:counts.kept]``; the rest of
    ``output[:len(values)]`` is scratch space the C loop writes into (its
    store-always loop needs room for every item) and holds unspecified values
    afterwards. ``output`` may be ``values`` itself (the transform then runs in
    place) or overlap it in any way: the results are as if ``values`` had been
    read in full first.

    Args:
        values: a float64 buffer or a sequence of floats (see the module docstring).
        output: a writable, one-dimensional, C-contiguous float64 buffer with
            room for at least ``len(values)`` items.

    Returns:
        The counts of the call.

    Raises:
        TypeError: if either argument has the wrong item type, or ``output`` is
            read-only or not a buffer.
        ValueError: if ``output`` is too small, or a buffer is not one-dimensional
            and C-contiguous.
    """
    input_view = as_float64_view(values, "values")
    output_view = checked_output(
        output, len(input_view), argument="output", input_argument="values"
    )
    return _call(input_view, output_view, at_end=False)


def transform_into_end(values: Float64Input, output: object) -> TransformCounts:
    """Transform ``values`` in C into the end of the caller's ``output`` buffer.

    The mirror image of ``transform_into``: the results, in input order, are
    ``output[len(output) - counts.kept:]``, and the C loop walks ``values``
    from its last item to its first (``pl_transform_backward``). Its use is
    laying results end to end downwards without knowing in advance how many
    each batch keeps: ``DataPipeline`` has one thread fill an output
    downwards from a meeting point while another fills it upwards with
    ``transform_into``, so the two halves of the results meet without a copy.
    Slots ``output[len(output) - len(values):len(output) - counts.kept]`` are
    scratch; nothing before them is written. ``output`` may overlap ``values``
    in any way.

    Args, Returns and Raises: as for ``transform_into``.
    """
    input_view = as_float64_view(values, "values")
    output_view = checked_output(
        output, len(input_view), argument="output", input_argument="values"
    )
    return _call(input_view, output_view, at_end=True)


def move(source: Float64Input, destination: object) -> None:
    """Copy every item of ``source`` to the start of ``destination``, GIL released.

    The copy is C's ``memmove`` (``pl_move``), so the views may overlap. Its
    point is the released GIL: copying into fresh memory spends most of its
    time in page faults, which would otherwise stall every other thread.

    Args:
        source: a float64 buffer (or a sequence of floats) whose items are copied.
        destination: a writable float64 buffer with room for ``len(source)`` items.

    Raises:
        TypeError: a view is not of format 'd' (see ``pipeline.native.buffers``) or
            ``destination`` is read-only.
        ValueError: ``destination`` is shorter than ``source``.
    """
    source_view = as_float64_view(source, "source")
    count = len(source_view)
    destination_view = checked_output(
        destination, count, argument="destination", input_argument="source"
    )
    if count == 0:
        return
    source_pointer = ffi.from_buffer("double[]", source_view)
    destination_pointer = ffi.from_buffer("double[]", destination_view, require_writable=True)
    try:
        if (_address(source_pointer) | _address(destination_pointer)) % _DOUBLE_SIZE:
            # Misaligned doubles are undefined behaviour in C; memoryview copies bytes.
            destination_view[:count] = source_view
        else:
            lib.pl_move(destination_pointer, source_pointer, count)  # the GIL is released
    finally:
        ffi.release(source_pointer)
        ffi.release(destination_pointer)


def _call(
    input_view: memoryview[float], output_view: memoryview[float], *, at_end: bool
) -> TransformCounts:
    """Run the C transform on two validated 'd' views and return its counts.

    With ``at_end`` the results go to the end of ``output_view``
    (``pl_transform_backward``), otherwise to its front (``pl_transform``).
    """
    length = len(input_view)
    if length == 0:
        return TransformCounts.ZERO
    input_pointer = ffi.from_buffer("double[]", input_view)
    output_pointer = ffi.from_buffer("double[]", output_view, require_writable=True)
    try:
        input_address = _address(input_pointer)
        output_address = _address(output_pointer)
        if output_address % _DOUBLE_SIZE or (
            output_address != input_address
            and _overlap(input_address, output_address, length, len(output_view))
        ):
            # Misaligned doubles are undefined behaviour in C, and the C loop may
            # only write over inputs it has already read: go through separate
            # memory, as the reference does by construction.
            return _through(input_view, output_view, at_end=at_end)
        if input_address % _DOUBLE_SIZE:
            # Unaligned doubles are undefined behaviour in C: read from a copy.
            return _call(_aligned_copy(input_view), output_view, at_end=at_end)
        counts_struct = ffi.new("pl_transform_counts *")
        function = lib.pl_transform_backward if at_end else lib.pl_transform
        # The GIL is released for the duration of this call.
        status = function(input_pointer, length, output_pointer, len(output_view), counts_struct)
    finally:
        ffi.release(input_pointer)
        ffi.release(output_pointer)
    if status != lib.PL_OK:
        # Unreachable through this module's checks; reported, never ignored.
        reason = _STATUS_MESSAGES.get(status, "unknown status")
        raise RuntimeError(f"the C transform failed with status {status}: {reason}")
    return TransformCounts(
        kept=counts_struct.kept,
        negative=counts_struct.negative,
        invalid_input=counts_struct.invalid_input,
        invalid_output=counts_struct.invalid_output,
    )


def _through(
    input_view: memoryview[float], output_view: memoryview[float], *, at_end: bool
) -> TransformCounts:
    """Transform into fresh aligned memory, then copy the results into place."""
    separate = fresh_doubles(len(input_view))
    counts = _call(input_view, separate, at_end=False)
    start = len(output_view) - counts.kept if at_end else 0
    output_view[start : start + counts.kept] = separate[: counts.kept]
    return counts


def _aligned_copy(view: memoryview[float]) -> memoryview[float]:
    """Return a copy of ``view`` in memory aligned for doubles."""
    aligned: array.array[float] = array.array("d")
    aligned.frombytes(view.cast("B"))
    return doubles(memoryview(aligned))


def _address(pointer: Any) -> int:
    """Return the address a cffi pointer holds."""
    return int(ffi.cast("uintptr_t", pointer))


def _overlap(first: int, second: int, first_items: int, second_items: int) -> bool:
    """Return whether two ranges of doubles share any byte."""
    return first < second + second_items * _DOUBLE_SIZE and second < first + first_items * (
        _DOUBLE_SIZE
    )
