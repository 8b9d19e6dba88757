"""The production transform in plain Python, with the same functions as the C caller.

This module is the readable statement of what ``csrc/transform.c`` computes,
item by item; ``pipeline.native.compiled`` runs the same transform in C. The tests
compare the two bit for bit, so a learner can read this loop and know exactly
what the fast path does:

    validation       drop x if it is NaN or +/-Inf        -> invalid_input
    business filter  drop x if x < 0                      -> negative
    transform        y = sqrt(x) * 2
    post-validation  drop y if it is NaN or +/-Inf        -> invalid_output
    output           keep y, in input order               -> kept

-0.0 is not negative (``-0.0 < 0`` is false), so it is kept and gives -0.0.
``math.sqrt`` and the C ``sqrt`` are both correctly rounded (IEEE-754), which
is why the results agree to the last bit. For IEEE doubles the
post-validation never drops anything (the largest result is
``sqrt(DBL_MAX) * 2``, about 2.7e154); it is kept because the stage's
contract names it.

``transform``, ``transform_into`` and ``move`` have the signatures, argument
checks, error messages and ``TransformCounts`` of ``pipeline.native.compiled``,
so code written against one runs against the other. The one difference is
speed, and the GIL: this module holds it. The reference is 50 to 200 times
slower than the C core; select it explicitly (``DataPipeline(implementation=
"reference")``) where the C extension cannot be built. Nothing falls back to it
silently.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable

from pipeline.native.buffers import (
    Float64Input,
    as_float64_view,
    checked_output,
    doubles,
    fresh_doubles,
)
from pipeline.native.counts import TransformCounts

__all__ = [
    "Float64Input",
    "TransformCounts",
    "move",
    "transform",
    "transform_into",
    "transform_into_end",
    "transform_reference",
]


def transform(
    values: Float64Input, *, out: object = None
) -> tuple[memoryview[float], TransformCounts]:
    """Transform ``values`` and return the kept results and the counts.

    The same contract as ``pipeline.native.compiled.transform``: results in
    fresh memory, or at the front of ``out``, as a memoryview of format 'd'.

    Raises:
        TypeError, ValueError: exactly where ``compiled.transform`` raises them.
    """
    input_view = as_float64_view(values, "values")
    if out is None:
        results, counts = transform_reference(input_view)
        output = fresh_doubles(counts.kept)
    else:
        output = checked_output(out, len(input_view), argument="out", input_argument="values")
        results, counts = transform_reference(input_view)
    output[: counts.kept] = doubles(memoryview(results))
    return output[: counts.kept], counts


def transform_into(values: Float64Input, output: object) -> TransformCounts:
    """Transform ``values`` into the front of ``output``; return the counts.

    The same contract as ``pipeline.native.compiled.transform_into``. Every
    input is read before any result is written, so ``output`` may overlap
    ``values`` in any way.

    Raises:
        TypeError, ValueError: exactly where ``compiled.transform_into`` raises them.
    """
    input_view = as_float64_view(values, "values")
    output_view = checked_output(
        output, len(input_view), argument="output", input_argument="values"
    )
    results, counts = transform_reference(input_view)
    output_view[: counts.kept] = doubles(memoryview(results))
    return counts


def transform_into_end(values: Float64Input, output: object) -> TransformCounts:
    """Transform ``values`` into the end of ``output``; return the counts.

    The same contract as ``pipeline.native.compiled.transform_into_end``: the
    results are ``output[len(output) - counts.kept:]``.

    Raises:
        TypeError, ValueError: exactly where ``compiled.transform_into_end`` raises them.
    """
    input_view = as_float64_view(values, "values")
    output_view = checked_output(
        output, len(input_view), argument="output", input_argument="values"
    )
    results, counts = transform_reference(input_view)
    output_view[len(output_view) - counts.kept :] = doubles(memoryview(results))
    return counts


def move(source: Float64Input, destination: object) -> None:
    """Copy every item of ``source`` to the start of ``destination`` (holding the GIL).

    The same contract as ``pipeline.native.compiled.move``; the views may overlap.

    Raises:
        TypeError, ValueError: exactly where ``compiled.move`` raises them.
    """
    source_view = as_float64_view(source, "source")
    count = len(source_view)
    destination_view = checked_output(
        destination, count, argument="destination", input_argument="source"
    )
    destination_view[:count] = source_view


def transform_reference(values: Iterable[float]) -> tuple[array.array[float], TransformCounts]:
    """Transform ``values`` one item at a time, exactly as the C core does.

    Args:
        values: the input items, read once, in order.

    Returns:
        The kept results as a fresh ``array('d')`` in input order, and the counts.

    Raises:
        TypeError: if an item is not a real number.
    """
    output: array.array[float] = array.array("d")
    negative = invalid_input = invalid_output = 0
    for value in values:
        if not math.isfinite(value):
            invalid_input += 1
            continue
        if value < 0.0:
            negative += 1
            continue
        result = math.sqrt(value) * 2.0
        if not math.isfinite(result):
            invalid_output += 1
            continue
        output.append(result)
    counts = TransformCounts(
        kept=len(output),
        negative=negative,
        invalid_input=invalid_input,
        invalid_output=invalid_output,
    )
    return output, counts
