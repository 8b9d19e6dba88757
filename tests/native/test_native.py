"""Tests for pipeline.native.compiled and pipeline.native.reference, one body for both.

The contract tests run against both modules (``IMPLEMENTATIONS``): the same
functions, the same checks, the same messages. The differential tests compare
every function's results with the readable loop ``transform_reference``.
Results are compared by bit pattern (``tobytes()``), never with ``==``: ``==``
cannot tell -0.0 from 0.0. The threading tests start threads together with a
Barrier, bound every wait, and join every thread.
"""

from __future__ import annotations

import array
import ctypes
import gc
import importlib
import inspect
import mmap
import random
import re
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.native import compiled, reference
from pipeline.native.buffers import fresh_doubles, huge_page_size
from pipeline.native.compiled import transform, transform_into
from pipeline.native.counts import TransformCounts
from pipeline.native.production import TransformModule
from pipeline.native.reference import transform_reference

JOIN_TIMEOUT = 10.0
IMPLEMENTATIONS = pytest.mark.parametrize(
    "module", [compiled, reference], ids=["compiled", "reference"]
)


def from_bits(bits: int) -> float:
    """Return the double whose IEEE-754 bit pattern is ``bits``."""
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


DBL_MAX = sys.float_info.max
SMALLEST_SUBNORMAL = from_bits(1)
LARGEST_SUBNORMAL = from_bits(0x000F_FFFF_FFFF_FFFF)
SPECIAL_VALUES = [
    0.0,
    -0.0,
    SMALLEST_SUBNORMAL,
    -SMALLEST_SUBNORMAL,
    LARGEST_SUBNORMAL,
    sys.float_info.min,
    DBL_MAX,
    -DBL_MAX,
    float("inf"),
    float("-inf"),
    from_bits(0x7FF8_0000_0000_0000),  # the default quiet NaN
    from_bits(0xFFF8_0000_0000_0001),  # negative quiet NaN with a payload
    from_bits(0x7FF0_0000_0000_0001),  # signalling NaN, smallest payload
    from_bits(0x7FF4_0000_0000_00FF),  # signalling NaN with a payload
    from_bits(0xFFFF_FFFF_FFFF_FFFF),  # negative quiet NaN, every payload bit
    1.0,
    -1.0,
]

doubles = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.integers(min_value=0, max_value=2**64 - 1).map(from_bits),  # any bit pattern
)
double_lists = st.lists(doubles, max_size=300)


def pack(values: Sequence[float]) -> array.array[float]:
    """Return ``values`` as array('d'), bit patterns (NaN payloads) preserved."""
    return array.array("d", values)


def assert_same_as_reference(
    values: Sequence[float], result: memoryview[float] | array.array[float], counts: TransformCounts
) -> None:
    """Assert ``result`` and ``counts`` are bit for bit what the reference gives."""
    expected, expected_counts = transform_reference(values)
    assert result.tobytes() == expected.tobytes()
    assert counts == expected_counts
    assert counts.total == len(values)


# Differential tests: C against the reference.


@given(double_lists)
@IMPLEMENTATIONS
def test_transform_matches_reference_bit_for_bit(
    module: TransformModule, values: list[float]
) -> None:
    result, counts = module.transform(pack(values))
    assert_same_as_reference(values, result, counts)


@given(double_lists, st.integers(min_value=0, max_value=7))
@IMPLEMENTATIONS
def test_unaligned_memoryview_slice_matches_reference(
    module: TransformModule, values: list[float], offset: int
) -> None:
    raw = bytearray(offset + 8 * len(values))
    raw[offset:] = pack(values).tobytes()
    result, counts = module.transform(memoryview(raw)[offset:])
    assert_same_as_reference(values, result, counts)


@given(double_lists, st.integers(min_value=0, max_value=7), st.integers(0, 5))
@IMPLEMENTATIONS
def test_transform_into_unaligned_output_matches_reference(
    module: TransformModule, values: list[float], offset: int, spare: int
) -> None:
    raw = bytearray(offset + 8 * (len(values) + spare))
    counts = module.transform_into(pack(values), memoryview(raw)[offset:])
    kept = raw[offset : offset + 8 * counts.kept]
    expected, expected_counts = transform_reference(values)
    assert kept == expected.tobytes()
    assert counts == expected_counts


@given(double_lists)
@IMPLEMENTATIONS
def test_transform_into_in_place_matches_reference(
    module: TransformModule, values: list[float]
) -> None:
    buffer = pack(values)
    counts = module.transform_into(buffer, buffer)
    assert_same_as_reference(values, buffer[: counts.kept], counts)


@given(double_lists, st.integers(0, 5), st.booleans())
@IMPLEMENTATIONS
def test_transform_with_out_matches_reference_and_returns_a_view_of_out(
    module: TransformModule, values: list[float], spare: int, same_buffer: bool
) -> None:
    out = pack(values) if same_buffer else pack([7.0] * (len(values) + spare))
    result, counts = module.transform(out if same_buffer else pack(values), out=out)
    assert_same_as_reference(values, result, counts)
    assert result.obj is out
    assert out[: counts.kept].tobytes() == result.tobytes()


# Enough items that fresh output is a mapping of its own (1 MiB and more).
MAPPED_ITEMS = 150_000


@settings(max_examples=15, deadline=None)
@given(st.lists(doubles, min_size=1, max_size=64), st.booleans())
@IMPLEMENTATIONS
def test_fresh_output_on_huge_and_ordinary_pages_matches_reference(
    module: TransformModule, values: list[float], huge_pages: bool
) -> None:
    repeats = -(-MAPPED_ITEMS // len(values))
    data = pack(values) * repeats
    expected, expected_counts = transform_reference(values)
    out = fresh_doubles(len(data), huge_pages=huge_pages)
    assert isinstance(out.obj, mmap.mmap)
    result, counts = module.transform(data, out=out)
    assert result.tobytes() == expected.tobytes() * repeats
    assert counts.kept == expected_counts.kept * repeats
    assert counts.total == len(data)


@IMPLEMENTATIONS
def test_fresh_output_of_a_large_input_is_a_mapping_on_a_huge_page_boundary(
    module: TransformModule,
) -> None:
    data = pack([4.0, -1.0]) * MAPPED_ITEMS
    result, counts = module.transform(data)
    assert counts.kept == MAPPED_ITEMS
    assert result.tobytes() == pack([4.0]).tobytes() * MAPPED_ITEMS
    assert isinstance(result.obj, mmap.mmap)
    huge_page = huge_page_size()
    if huge_page:
        assert ctypes.addressof(ctypes.c_char.from_buffer(result)) % huge_page == 0


def test_compiled_and_reference_offer_the_same_functions_with_the_same_signatures() -> None:
    names = ["TransformCounts", "move", "transform", "transform_into", "transform_into_end"]
    assert set(names) <= set(compiled.__all__) & set(reference.__all__)
    assert compiled.TransformCounts is reference.TransformCounts is TransformCounts
    for name in names[1:]:
        assert inspect.signature(getattr(compiled, name)) == inspect.signature(
            getattr(reference, name)
        )


@pytest.mark.parametrize(
    ("out", "error", "message"),
    [
        (
            array.array("d", [0.0]),
            ValueError,
            "out holds 1 float64 items but values has 2; out needs room for every input item",
        ),
        (
            [0.0, 0.0],
            TypeError,
            "out must be a writable float64 buffer such as array('d'), got list",
        ),
        (bytes(16), TypeError, "out must be a writable buffer, got a read-only bytes"),
        (
            array.array("f", [0.0] * 4),
            TypeError,
            "out must hold float64 items (buffer format 'd'), got format 'f' (4-byte items) "
            "from array('f')",
        ),
    ],
)
@IMPLEMENTATIONS
def test_transform_rejects_an_out_that_cannot_hold_the_results(
    module: TransformModule, out: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        module.transform([1.0, 2.0], out=out)
    assert str(caught.value) == message


@IMPLEMENTATIONS
def test_every_special_value_has_its_documented_outcome(
    module: TransformModule,
) -> None:
    result, counts = module.transform(SPECIAL_VALUES)
    assert counts == TransformCounts(kept=7, negative=3, invalid_input=7, invalid_output=0)
    assert (
        result.tobytes()
        == pack(
            [
                0.0,
                -0.0,  # -0.0 is kept and stays -0.0
                SMALLEST_SUBNORMAL**0.5 * 2.0,
                LARGEST_SUBNORMAL**0.5 * 2.0,
                sys.float_info.min**0.5 * 2.0,
                DBL_MAX**0.5 * 2.0,  # finite: post-validation never fires for doubles
                2.0,
            ]
        ).tobytes()
    )


@pytest.mark.parametrize("length", [0, 1, 2, 3, 1023, 1024, 1025, 4097])
@IMPLEMENTATIONS
def test_lengths_around_the_block_size(module: TransformModule, length: int) -> None:
    generator = random.Random(length)
    values = [generator.choice([*SPECIAL_VALUES, generator.uniform(-9, 9)]) for _ in range(length)]
    result, counts = module.transform(values)
    assert_same_as_reference(values, result, counts)


@IMPLEMENTATIONS
def test_empty_input_gives_empty_output_and_zero_counts(
    module: TransformModule,
) -> None:
    result, counts = module.transform([])
    assert (result.format, len(result), counts) == ("d", 0, TransformCounts.ZERO)
    assert module.transform_into(array.array("d"), array.array("d")) == TransformCounts.ZERO


# Every accepted kind of input.

VALUES = [4.0, -1.0, float("nan"), 9.0, -0.0, float("inf")]
EXPECTED = pack([4.0, 6.0, -0.0]).tobytes()


@pytest.mark.parametrize(
    "make_input",
    [
        pytest.param(lambda: list(VALUES), id="list"),
        pytest.param(lambda: tuple(VALUES), id="tuple"),
        pytest.param(lambda: iter(VALUES), id="iterator"),
        pytest.param(lambda: pack(VALUES), id="array"),
        pytest.param(lambda: memoryview(pack(VALUES)), id="memoryview"),
        pytest.param(lambda: pack(VALUES).tobytes(), id="bytes"),
        pytest.param(lambda: bytearray(pack(VALUES).tobytes()), id="bytearray"),
        pytest.param(lambda: memoryview(pack(VALUES).tobytes()), id="memoryview-of-bytes"),
        pytest.param(lambda: memoryview(pack(VALUES * 2))[: len(VALUES)], id="sliced-memoryview"),
    ],
)
@IMPLEMENTATIONS
def test_accepted_input_kinds(module: TransformModule, make_input: Callable[[], object]) -> None:
    result, counts = module.transform(make_input())  # type: ignore[arg-type]
    assert result.tobytes() == EXPECTED
    assert counts == TransformCounts(kept=3, negative=1, invalid_input=2, invalid_output=0)


def test_importing_the_package_does_not_import_numpy() -> None:
    code = "import sys, pipeline.native.compiled; print('numpy' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=JOIN_TIMEOUT,
        check=True,
    )
    assert completed.stdout.strip() == "False"


@IMPLEMENTATIONS
def test_numpy_float64_array_is_accepted(
    module: TransformModule,
) -> None:
    numpy = pytest.importorskip("numpy")
    result, counts = module.transform(numpy.array(VALUES, dtype=numpy.float64))
    assert result.tobytes() == EXPECTED
    assert counts.kept == 3
    output = numpy.zeros(len(VALUES))
    module.transform_into(numpy.array(VALUES), output)
    assert output[:3].tobytes() == EXPECTED


# Rejected inputs: the messages are part of the interface.


@pytest.mark.parametrize(
    ("bad_input", "error", "message"),
    [
        (
            array.array("f", [1.0]),
            TypeError,
            "values must hold float64 items (buffer format 'd'), got format 'f' "
            "(4-byte items) from array('f')",
        ),
        (
            array.array("i", [1]),
            TypeError,
            "values must hold float64 items (buffer format 'd'), got format 'i' "
            "(4-byte items) from array('i')",
        ),
        (
            array.array("q", [1]),
            TypeError,
            "values must hold float64 items (buffer format 'd'), got format 'q' "
            "(8-byte items) from array('q')",
        ),
        (
            memoryview(b"abc"),
            ValueError,
            "values is a byte buffer of 3 bytes, which is not a whole number of "
            "float64 items (8 bytes each)",
        ),
        (
            memoryview(pack([1.0, 2.0, 3.0]))[::2],
            ValueError,
            "values must be a contiguous buffer, got a strided view (strides (16,), "
            "item size 8); copy it first",
        ),
        (
            memoryview(pack([1.0, 2.0])).cast("B").cast("d", shape=[1, 2]),
            ValueError,
            "values must be a one-dimensional buffer, got 2 dimensions (shape (1, 2)); "
            "flatten it first, e.g. with .reshape(-1) in NumPy",
        ),
        (
            "1.0",
            TypeError,
            "values must be a float64 buffer or an iterable of floats, got str: "
            "cannot use a str to initialize an array with typecode 'd'",
        ),
        (
            [1.0, "2.0"],
            TypeError,
            "values must be a float64 buffer or an iterable of floats, got list: "
            "must be real number, not str",
        ),
        (
            None,
            TypeError,
            "values must be a float64 buffer or an iterable of floats, got NoneType: "
            "'NoneType' object is not iterable",
        ),
    ],
)
@IMPLEMENTATIONS
def test_rejected_inputs_name_the_problem(
    module: TransformModule, bad_input: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        module.transform(bad_input)  # type: ignore[arg-type]
    assert str(caught.value) == message


@IMPLEMENTATIONS
def test_big_endian_float64_is_rejected_naming_the_byte_order(
    module: TransformModule,
) -> None:
    numpy = pytest.importorskip("numpy")
    with pytest.raises(TypeError) as caught:
        module.transform(numpy.zeros(2, dtype=">f8"))
    assert str(caught.value) == (
        "values must hold float64 items (buffer format 'd'), got format '>d' "
        "(8-byte items in non-native byte order) from ndarray"
    )


@IMPLEMENTATIONS
def test_transform_into_rejects_a_read_only_output(
    module: TransformModule,
) -> None:
    with pytest.raises(TypeError) as caught:
        module.transform_into([1.0], bytes(8))
    assert str(caught.value) == "output must be a writable buffer, got a read-only bytes"


@IMPLEMENTATIONS
def test_transform_into_rejects_an_output_that_is_not_a_buffer(
    module: TransformModule,
) -> None:
    with pytest.raises(TypeError) as caught:
        module.transform_into([1.0], [0.0])
    assert str(caught.value) == (
        "output must be a writable float64 buffer such as array('d'), got list"
    )


@IMPLEMENTATIONS
def test_transform_into_rejects_an_output_of_another_type(
    module: TransformModule,
) -> None:
    with pytest.raises(TypeError) as caught:
        module.transform_into([1.0], array.array("f", [0.0, 0.0]))
    assert str(caught.value) == (
        "output must hold float64 items (buffer format 'd'), got format 'f' "
        "(4-byte items) from array('f')"
    )


@IMPLEMENTATIONS
@pytest.mark.parametrize("function", ["transform_into", "transform_into_end"])
def test_transform_into_rejects_an_output_smaller_than_the_input(
    module: TransformModule, function: str
) -> None:
    output = pack([0.0, 0.0])
    message = (
        "output holds 2 float64 items but values has 3; output needs room for every input item"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        getattr(module, function)([1.0, 2.0, 3.0], output)
    assert output.tobytes() == pack([0.0, 0.0]).tobytes()  # untouched


@given(double_lists, st.integers(0, 5), st.integers(0, 7))
@IMPLEMENTATIONS
def test_transform_into_end_puts_the_reference_results_at_the_end(
    module: TransformModule, values: list[float], spare: int, offset: int
) -> None:
    guard = [-7.0] * spare
    raw = bytearray(offset + 8 * (len(guard) + len(values)))
    raw[offset:] = pack(guard + [3.0] * len(values)).tobytes()
    output = memoryview(raw)[offset:].cast("d")  # misaligned when offset % 8
    counts = module.transform_into_end(pack(values), output)
    expected, expected_counts = transform_reference(values)
    assert counts == expected_counts
    assert output[len(output) - counts.kept :].tobytes() == expected.tobytes()
    assert output[:spare].tolist() == guard  # nothing before len(output) - len(values)


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 1023, 1024, 1025, 4099])
@IMPLEMENTATIONS
def test_transform_into_end_matches_transform_into_around_the_block_size(
    module: TransformModule, length: int
) -> None:
    generator = random.Random(length)
    values = pack(
        [generator.choice([*SPECIAL_VALUES, generator.uniform(-9, 9)]) for _ in range(length)]
    )
    front = pack([0.0] * length)
    back = pack([0.0] * length)
    front_counts = module.transform_into(values, front)
    back_counts = module.transform_into_end(values, back)
    assert front_counts == back_counts
    kept = front_counts.kept
    assert back[length - kept :].tobytes() == front[:kept].tobytes()


@IMPLEMENTATIONS
def test_transform_into_end_in_place_matches_reference(module: TransformModule) -> None:
    values = [4.0, -1.0, 9.0, float("nan"), 16.0, 0.0, -0.0] * 300
    buffer = pack(values)
    counts = module.transform_into_end(buffer, buffer)
    expected, _ = transform_reference(values)
    assert buffer[len(buffer) - counts.kept :].tobytes() == expected.tobytes()


@IMPLEMENTATIONS
@pytest.mark.parametrize(("input_at", "output_at"), [(0, 1), (1, 0), (0, 3), (2, 0), (0, 6)])
def test_partly_overlapping_buffers_give_the_results_of_reading_every_input_first(
    module: TransformModule, input_at: int, output_at: int
) -> None:
    values = [1.0, -4.0, 4.0, 9.0, float("nan"), 16.0, 25.0]
    buffer = pack([0.0] * input_at + values + [0.0] * 7)
    view = memoryview(buffer)
    counts = module.transform_into(view[input_at : input_at + len(values)], view[output_at:])
    expected, expected_counts = transform_reference(values)
    assert counts == expected_counts
    assert buffer[output_at : output_at + counts.kept].tobytes() == expected.tobytes()


@IMPLEMENTATIONS
def test_transform_into_leaves_results_at_the_front_of_a_larger_output(
    module: TransformModule,
) -> None:
    output = pack([7.0] * 10)
    counts = module.transform_into([16.0, -1.0, 25.0], output)
    assert counts.kept == 2
    assert output[:2].tolist() == [8.0, 10.0]
    assert output[3:].tolist() == [7.0] * 7  # past len(values): never written


# move: the GIL-free copy DataPipeline uses to put results in place.


@IMPLEMENTATIONS
def test_move_copies_into_a_larger_destination_and_between_overlapping_views(
    module: TransformModule,
) -> None:
    destination = pack([0.0] * 5)
    module.move(memoryview(pack([1.0, -0.0, float("inf")])), memoryview(destination)[1:])
    assert destination.tobytes() == pack([0.0, 1.0, -0.0, float("inf"), 0.0]).tobytes()
    buffer = pack([1.0, 2.0, 3.0, 4.0, 5.0])
    view = memoryview(buffer)
    module.move(view[1:], view[:4])  # overlapping, like memmove
    assert buffer.tolist() == [2.0, 3.0, 4.0, 5.0, 5.0]
    module.move(view[:0], view[:0])  # nothing to copy


@given(st.lists(doubles, max_size=40), st.integers(0, 7), st.integers(0, 7))
@IMPLEMENTATIONS
def test_move_handles_misaligned_views(
    module: TransformModule, values: list[float], source_at: int, target_at: int
) -> None:
    source = bytearray(source_at + 8 * len(values))
    source[source_at:] = pack(values).tobytes()
    destination = bytearray(target_at + 8 * len(values))
    module.move(
        memoryview(source)[source_at:].cast("d"), memoryview(destination)[target_at:].cast("d")
    )
    assert destination[target_at:] == source[source_at:]


@IMPLEMENTATIONS
def test_move_rejects_a_destination_shorter_than_the_source(
    module: TransformModule,
) -> None:
    destination = pack([0.0])
    message = (
        "destination holds 1 float64 items but source has 2; "
        "destination needs room for every input item"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        module.move(memoryview(pack([1.0, 2.0])), memoryview(destination))
    assert destination.tolist() == [0.0]


# Buffers and their lifetimes.


@IMPLEMENTATIONS
def test_result_stays_valid_after_the_input_is_freed(
    module: TransformModule,
) -> None:
    values = pack([float(index) for index in range(10_000)])
    raw = bytearray(values.tobytes())
    result, _ = module.transform(memoryview(raw))
    expected = transform_reference(values)[0].tobytes()
    del raw, values
    gc.collect()
    _ = [bytearray(80_000) for _ in range(10)]  # reuse the freed memory
    assert result.tobytes() == expected


@IMPLEMENTATIONS
def test_no_buffer_stays_exported_after_a_call(
    module: TransformModule,
) -> None:
    values = pack([1.0, 2.0])
    output = pack([0.0, 0.0])
    module.transform(values)
    module.transform_into(values, output)
    module.transform(values, out=output)
    module.move(values, output)
    values.append(3.0)  # BufferError if a call had kept an export
    output.append(3.0)
    result, _ = module.transform(values, out=output)
    with pytest.raises(BufferError):  # the result is a view of out, as NumPy's out= gives
        output.append(4.0)
    result.release()
    output.append(4.0)


def test_missing_extension_raises_import_error_saying_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pipeline.native._native", None)  # makes the import fail
    monkeypatch.delitem(sys.modules, "pipeline.native.compiled")
    with pytest.raises(ImportError) as caught:
        importlib.import_module("pipeline.native.compiled")
    assert "reinstall with them (`make install` in a checkout) to build it" in str(caught.value)
    assert "PIPELINE_NATIVE=skip" in str(caught.value)
    assert isinstance(caught.value.__cause__, ImportError)


# Threads.


def test_many_threads_transform_distinct_buffers_at_once() -> None:
    thread_count = 8
    rounds = 20
    generator = random.Random(3)
    inputs = [
        pack(
            [
                generator.choice([*SPECIAL_VALUES, generator.uniform(-1e6, 1e6)])
                for _ in range(20_000)
            ]
        )
        for _ in range(thread_count)
    ]
    expected = [transform_reference(values)[0].tobytes() for values in inputs]
    barrier = threading.Barrier(thread_count)
    failures: list[str] = []

    def work(index: int) -> None:
        output = array.array("d", [0.0]) * len(inputs[index])
        barrier.wait(timeout=JOIN_TIMEOUT)
        for _ in range(rounds):
            counts = transform_into(inputs[index], output)
            if output[: counts.kept].tobytes() != expected[index]:
                failures.append(f"thread {index}: wrong result")
            fresh, _ = transform(inputs[index])
            if fresh.tobytes() != expected[index]:
                failures.append(f"thread {index}: wrong fresh result")

    threads = [threading.Thread(target=work, args=(index,)) for index in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def caught_half_written(
    call: Callable[[memoryview[float]], object], length: int, attempts: int
) -> tuple[bool, int]:
    """Run ``call(output)`` on fresh zeroed outputs in a worker thread while this thread,
    running Python code, looks for an output caught half-written.

    ``call`` writes every item of ``output`` (nonzero values), front to back. Seeing
    ``output[0]`` written and then ``output[-1]`` not yet written means this thread
    ran Python code while ``call`` was under way, which it cannot do while ``call``
    holds the GIL. Each output is written by one call only (zeros before, results
    after), so no earlier call can fake it. No clock is read: a loaded machine only
    takes more attempts. The worker stops after ``attempts`` calls, or as soon as an
    output was caught.

    Returns:
        (whether an output was caught half-written, how many looks this thread took).
    """
    current: list[memoryview[float] | None] = [None]
    caught = threading.Event()
    done = threading.Event()

    def worker() -> None:
        try:
            for _ in range(attempts):
                if caught.is_set():
                    break
                output = fresh_doubles(length)
                current[0] = output
                call(output)
        finally:
            done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    looks = 0
    try:
        while not done.is_set():
            output = current[0]
            if output is None:
                continue
            looks += 1
            if output[0] != 0.0 and output[-1] == 0.0:
                caught.set()
                break
    finally:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not thread.is_alive()
    return caught.is_set(), looks


def test_c_call_releases_the_gil() -> None:
    # Calls of a few ms each: under load some calls may pass before this thread is
    # scheduled during one; the worker stops at the first call caught.
    values = array.array("d", [2.0]) * 3_000_000
    caught, _ = caught_half_written(
        lambda output: transform_into(values, output), len(values), attempts=1000
    )
    assert caught
    output = array.array("d", [0.0]) * len(values)
    transform_into(values, output)
    assert output[0] == 2.0 * 2.0**0.5


def test_gil_probe_detects_a_call_that_holds_the_gil() -> None:
    # The control: a memoryview slice assignment is one memmove that holds the GIL.
    values = memoryview(array.array("d", [2.0]) * 3_000_000)

    def copy(output: memoryview[float]) -> None:
        output[:] = values

    caught, looks = caught_half_written(copy, len(values), attempts=30)
    assert not caught
    assert looks > 0  # the probe did look, between the calls
