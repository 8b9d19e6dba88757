"""Tests for pipeline.native.production: TransformStage and DataPipeline on the core Pipeline."""

from __future__ import annotations

import array
import random
import re
import sys
import tracemalloc
import warnings
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import IMPLEMENTATIONS

import pipeline.native
from pipeline.errors import StageError
from pipeline.native import production
from pipeline.native.buffers import Float64Input, fresh_doubles
from pipeline.native.counts import TransformCounts
from pipeline.native.production import DataPipeline, DataStats, TransformResult, TransformStage
from pipeline.native.reference import transform_reference


def sensor_readings(count: int, seed: int) -> array.array[float]:
    """Return readings with NaN, +/-Inf, negatives, -0.0 and ordinary values mixed in."""
    generator = random.Random(seed)
    specials = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, -5.0]
    return array.array(
        "d",
        (
            generator.choice(specials) if generator.random() < 0.2 else generator.uniform(-50, 100)
            for _ in range(count)
        ),
    )


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("thread_count", "batch_size"),
    [(1, 1), (1, 1000), (2, 7), (2, 5000), (3, 50), (4, 333), (5, 1)],
)
def test_process_matches_the_reference_in_input_order(
    implementation: str, thread_count: int, batch_size: int
) -> None:
    data = sensor_readings(5_000, seed=thread_count * 1000 + batch_size)
    expected, expected_counts = transform_reference(data)
    data_pipeline = DataPipeline(thread_count, batch_size, implementation)  # type: ignore[arg-type]

    results, stats = data_pipeline.process(data)

    assert results.tobytes() == expected.tobytes()
    assert stats.items_processed == expected_counts.kept
    assert stats.items_filtered == expected_counts.negative
    assert stats.items_invalid == expected_counts.invalid_input + expected_counts.invalid_output
    assert stats.items_invalid_after_transform == expected_counts.invalid_output
    assert stats.items_processed + stats.items_filtered + stats.items_invalid == len(data)
    assert stats.duration_secs > 0
    assert stats.throughput == pytest.approx(len(data) / stats.duration_secs)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("out_kind", ["array", "mapping"])
def test_process_with_out_matches_the_reference_and_reuses_out(
    implementation: str, out_kind: str
) -> None:
    data_pipeline = DataPipeline(2, 333, implementation)  # type: ignore[arg-type]
    out: array.array[float] | memoryview[float] = (
        array.array("d", [7.0]) * 5_000
        if out_kind == "array"
        else fresh_doubles(150_000, huge_pages=True)
    )
    for seed in (1, 2):
        data = sensor_readings(5_000, seed=seed)
        expected, expected_counts = transform_reference(data)
        results, stats = data_pipeline.process(data, out=out)
        assert results.tobytes() == expected.tobytes()
        assert results.obj is (out.obj if isinstance(out, memoryview) else out)
        assert stats.items_processed == expected_counts.kept
        results.release()


@pytest.mark.parametrize(
    ("out", "error", "message"),
    [
        (
            array.array("d", [0.0]),
            ValueError,
            "out holds 1 float64 items but data has 2; out needs room for every input item",
        ),
        (
            [0.0, 0.0],
            TypeError,
            "out must be a writable float64 buffer such as array('d'), got list",
        ),
        (bytes(16), TypeError, "out must be a writable buffer, got a read-only bytes"),
        (
            array.array("q", [0, 0]),
            TypeError,
            "out must hold float64 items (buffer format 'd'), got format 'q' (8-byte items) "
            "from array('q')",
        ),
    ],
)
def test_process_rejects_an_out_that_cannot_hold_the_results(
    out: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        DataPipeline(2, 1).process([1.0, 2.0], out=out)
    assert str(caught.value) == message


@pytest.mark.parametrize(("data_at", "out_at"), [(0, 0), (0, 1), (1, 0)])
def test_process_rejects_an_out_that_overlaps_data(data_at: int, out_at: int) -> None:
    buffer = array.array("d", [1.0, 4.0, 9.0, 16.0, 0.0])
    view = memoryview(buffer)
    message = "out overlaps data; pass a separate buffer"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DataPipeline(2, 1).process(view[data_at : data_at + 4], out=view[out_at : out_at + 4])
    assert buffer.tolist() == [1.0, 4.0, 9.0, 16.0, 0.0]  # untouched


any_doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.integers(min_value=0, max_value=2**64 - 1).map(
        lambda bits: array.array("d", bits.to_bytes(8, "little"))[0]
    ),
)


@pytest.mark.c_stage
@settings(max_examples=40, deadline=None)
@given(
    st.lists(any_doubles, max_size=200),
    st.integers(1, 4),
    st.integers(1, 64),
    st.sampled_from(["fresh", "out", "huge-page out"]),
    st.sampled_from(["native", "reference"]),
)
def test_process_is_bit_identical_to_the_reference_in_every_mode(
    values: list[float], thread_count: int, batch_size: int, mode: str, implementation: str
) -> None:
    data = array.array("d", values)
    expected, expected_counts = transform_reference(data)
    out: memoryview[float] | None = None
    if mode == "out":
        out = memoryview(array.array("d", [7.0]) * (len(data) + 3)).cast("B").cast("d")
    elif mode == "huge-page out":
        out = fresh_doubles(150_000)  # a mapping of its own, on huge pages where available
    data_pipeline = DataPipeline(thread_count, batch_size, implementation)  # type: ignore[arg-type]
    results, stats = data_pipeline.process(data, out=out)
    assert results.tobytes() == expected.tobytes()
    assert stats.items_processed == expected_counts.kept
    assert stats.items_filtered == expected_counts.negative


def test_process_accepts_a_list_and_a_memoryview() -> None:
    data = [4.0, -1.0, float("nan"), 9.0]
    from_list, _ = DataPipeline(2, 1).process(data)
    from_view, _ = DataPipeline(2, 1).process(memoryview(array.array("d", data)))
    assert from_list.tolist() == from_view.tolist() == [4.0, 6.0]


@pytest.mark.parametrize("thread_count", [2, 3, 7])
def test_process_of_fewer_items_than_threads_matches_the_reference(thread_count: int) -> None:
    for data in ([4.0], [-1.0, 9.0], [9.0, float("nan")], []):
        results, stats = DataPipeline(thread_count, 2).process(data)
        expected, counts = transform_reference(data)
        assert results.tobytes() == expected.tobytes()
        assert stats.items_processed == counts.kept


JOIN_TIMEOUT = 10.0


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_process_returns_a_memoryview_of_doubles_usable_as_a_sequence(
    implementation: str,
) -> None:
    data = array.array("d", [16.0, -1.0, 25.0, float("nan"), 0.0, -0.0])
    results, _ = DataPipeline(2, 2, implementation).process(data)  # type: ignore[arg-type]
    assert isinstance(results, memoryview)
    assert isinstance(results, Sequence)
    assert (results.format, results.itemsize, results.ndim, results.readonly) == ("d", 8, 1, False)
    assert len(results) == 4
    assert results[0] == 8.0
    assert isinstance(results[1], float)
    assert list(results[1:3]) == [10.0, 0.0]
    assert results.tolist() == [8.0, 10.0, 0.0, -0.0]
    assert array.array("d", results.tobytes()).tobytes() == results.tobytes()


def test_process_results_stay_valid_after_the_input_is_freed() -> None:
    data = array.array("d", [float(index) for index in range(10_000)])
    expected, _ = transform_reference(data)
    results, _ = DataPipeline(2, 999).process(data)
    del data
    _ = [bytearray(80_000) for _ in range(10)]  # reuse the freed memory
    assert results.tobytes() == expected.tobytes()


def test_process_leaves_no_buffer_exported_on_the_input() -> None:
    data = array.array("d", [1.0, 4.0, 9.0])
    DataPipeline(2, 1).process(data)
    data.append(16.0)  # BufferError if a chunk view had outlived the call


@pytest.mark.parametrize("data", [array.array("d"), array.array("d", [-1.0, float("nan")] * 50)])
def test_process_without_results_returns_an_empty_memoryview(data: array.array[float]) -> None:
    results, stats = DataPipeline(2, 10).process(data)
    assert isinstance(results, memoryview)
    assert (results.format, len(results)) == ("d", 0)
    assert stats.items_processed == 0
    assert stats.items_filtered + stats.items_invalid == len(data)


def test_process_rejects_data_that_is_not_float64() -> None:
    with pytest.raises(TypeError, match=re.escape("data must hold float64 items")):
        DataPipeline(1, 10).process(array.array("f", [1.0]))


def test_stats_from_counts_puts_post_validation_failures_in_invalid() -> None:
    counts = TransformCounts(kept=5, negative=3, invalid_input=2, invalid_output=1)
    stats = DataStats.from_counts(counts, duration_secs=0.5)
    assert stats == DataStats(
        items_processed=5,
        items_filtered=3,
        items_invalid=3,
        items_invalid_after_transform=1,
        duration_secs=0.5,
        throughput=22.0,
    )


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((0, 10), ValueError, "thread_count must be >= 1, got 0"),
        ((1, 0), ValueError, "batch_size must be >= 1, got 0"),
        ((1.5, 10), TypeError, "thread_count must be an int, got float"),
        ((1, "10"), TypeError, "batch_size must be an int, got str"),
        (
            (1, 10, "fast"),
            ValueError,
            "implementation must be 'auto', 'native' or 'reference', got 'fast'",
        ),
    ],
)
def test_constructor_rejects_bad_arguments(
    arguments: tuple[object, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        DataPipeline(*arguments)  # type: ignore[arg-type]


def test_transform_stage_maps_one_chunk_to_one_result() -> None:
    stage = TransformStage("reference")
    result = stage.process(array.array("d", [16.0, -2.0]))
    assert result == TransformResult(
        array.array("d", [8.0]),
        TransformCounts(kept=1, negative=1, invalid_input=0, invalid_output=0),
    )


def test_stream_yields_one_result_per_chunk_in_order() -> None:
    chunks = [array.array("d", [float(index * index)] * 3) for index in range(50)]
    results = list(DataPipeline(3, 1).stream(chunks))
    assert [result.values.tolist() for result in results] == [
        [2.0 * index] * 3 for index in range(50)
    ]
    assert all(result.counts.kept == 3 for result in results)


def test_stream_stops_its_threads_when_the_consumer_stops_early() -> None:
    chunks = (array.array("d", [1.0]) * 100 for _ in range(10_000))
    results = DataPipeline(2, 1).stream(chunks)
    first = next(results)
    results.close()  # the autouse fixture fails the test if a worker thread is left
    assert first.counts.kept == 100


def test_stream_reports_a_bad_chunk_as_a_stage_error() -> None:
    chunks: list[Float64Input] = [array.array("d", [1.0]), array.array("i", [1])]
    with pytest.raises(StageError) as caught:
        list(DataPipeline(2, 1).stream(chunks))
    assert isinstance(caught.value.__cause__, TypeError)
    assert "got format 'i'" in str(caught.value.__cause__)


def test_stream_memory_stays_flat_for_a_million_values() -> None:
    chunk_size = 4_096
    chunk_count = 1_000_000 // chunk_size + 1  # 1,003,520 values, 8 MB of input

    def chunks() -> Iterator[array.array[float]]:
        for index in range(chunk_count):
            chunk = array.array("d", [float(index)]) * chunk_size
            chunk[::3] = array.array("d", [-1.0]) * len(chunk[::3])
            yield chunk

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        total = TransformCounts.ZERO
        for result in DataPipeline(2, chunk_size).stream(chunks()):
            total += result.counts
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total.total == chunk_count * chunk_size
    # All the input is 8 MB and all the output 5.4 MB; in flight stay a few chunks.
    print(f"peak traced memory growth: {peak - baseline:,} bytes")
    assert peak - baseline < 2_000_000, peak - baseline


@pytest.fixture
def without_the_c_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import pipeline.native.compiled` fail, as where the C stage was not built."""
    monkeypatch.setitem(sys.modules, "pipeline.native._native", None)
    monkeypatch.delitem(sys.modules, "pipeline.native.compiled", raising=False)
    monkeypatch.delattr(pipeline.native, "compiled", raising=False)
    monkeypatch.setattr(production, "_warned_about_the_reference", False)


@pytest.mark.c_stage
def test_auto_runs_the_c_core_when_it_is_built() -> None:
    assert DataPipeline(2, 1024).implementation == "native"
    assert production.resolved("auto") == "native"


@pytest.mark.usefixtures("without_the_c_core")
def test_auto_without_the_c_core_runs_the_reference_and_says_so_once() -> None:
    with pytest.warns(RuntimeWarning, match=r"C stage is not built.*100 times slower"):
        first = DataPipeline(2, 1024)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = DataPipeline(2, 1024)
    assert first.implementation == second.implementation == "reference"
    results, stats = first.process([4.0, -1.0, float("nan"), 9.0])
    assert results.tolist() == [4.0, 6.0]
    assert (stats.items_processed, stats.items_filtered, stats.items_invalid) == (2, 1, 1)


@pytest.mark.usefixtures("without_the_c_core")
def test_native_without_the_c_core_is_an_import_error_saying_how_to_build_it() -> None:
    with pytest.raises(ImportError, match="not built"):
        DataPipeline(2, 1024, implementation="native")
