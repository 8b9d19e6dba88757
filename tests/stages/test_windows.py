"""Tests of the window stages, the window statistics and the anomaly detector."""

from __future__ import annotations

import itertools
import logging
import math
import random
import re
import statistics
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import pytest

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.stages.windows import (
    CountWindows,
    LateItem,
    RunningStats,
    TimeWindows,
    Watermark,
    Window,
    WindowFull,
    anomalies,
    percentile,
    summarize,
)

Bounds = tuple[float, float, list[Any], bool]


def bounds(window: Window[Any]) -> Bounds:
    return (window.start, window.end, list(window.items), window.complete)


def drive(stage: PipelineStage[Any, Any], *batches: list[Any]) -> list[Any]:
    """Run a stage the way the engine does, in this thread: setup, batches, flush, teardown."""
    stage.setup()
    outputs = []
    for batch in batches:
        outputs.extend(stage.process_batch(batch))
    outputs.extend(stage.flush())
    stage.teardown()
    return outputs


# count windows


def test_tumbling_count_windows_and_the_last_partial_one() -> None:
    stage = CountWindows(bounds, 3)
    assert drive(stage, [0, 1], [2, 3, 4, 5, 6]) == [
        (0, 3, [0, 1, 2], True),
        (3, 6, [3, 4, 5], True),
        (6, 9, [6], False),
    ]


def test_sliding_count_windows() -> None:
    stage = CountWindows(bounds, 4, 2)
    assert drive(stage, list(range(7))) == [
        (0, 4, [0, 1, 2, 3], True),
        (2, 6, [2, 3, 4, 5], True),
        (4, 8, [4, 5, 6], False),
        (6, 10, [6], False),
    ]


def test_count_windows_with_a_step_beyond_the_size_sample_the_stream() -> None:
    assert drive(CountWindows(bounds, 2, 3), list(range(8))) == [
        (0, 2, [0, 1], True),
        (3, 5, [3, 4], True),
        (6, 8, [6, 7], True),
    ]


def test_an_empty_stream_gives_no_window() -> None:
    assert drive(CountWindows(bounds, 2)) == []
    assert drive(TimeWindows(bounds, 1.0, event_time=float)) == []


def test_count_windows_in_a_pipeline_give_every_complete_window() -> None:
    def total(window: Window[int]) -> int:
        return sum(window.items)

    outputs = Pipeline(CountWindows(total, 10)).run(range(100))
    assert outputs[:10] == [sum(range(start, start + 10)) for start in range(0, 100, 10)]


def test_a_pipeline_flushes_the_last_partial_window_at_end_of_stream() -> None:
    outputs = Pipeline(CountWindows(bounds, 10)).run(range(25))
    assert outputs[-1] == (20, 30, [20, 21, 22, 23, 24], False)


def test_without_the_engine_hook_the_open_windows_are_named_in_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage = CountWindows(bounds, 10)
    stage.setup()
    stage.process_batch(list(range(25)))
    with caplog.at_level(logging.WARNING, logger="pipeline.stages.windows"):
        stage.teardown()
    assert "CountWindows: 1 window(s) still open at the end of the stream" in caplog.text


def _fails(window: Window[Any]) -> object:
    raise ZeroDivisionError("no window function today")


@pytest.mark.parametrize(
    ("stage", "items"),
    [
        (CountWindows(_fails, 3), [0, 1]),  # fails in flush(), at the end of the stream
        (CountWindows(_fails, 2), [0, 1, 2]),  # fails in process_batch()
        (TimeWindows(_fails, 1.0, event_time=float), [0.5, 1.5, 2.5]),
    ],
)
def test_a_window_function_that_fails_is_not_reported_as_a_missing_flush(
    caplog: pytest.LogCaptureFixture, stage: PipelineStage[Any, Any], items: list[Any]
) -> None:
    # Before, teardown() then warned that "the engine did not call flush()".
    with (
        caplog.at_level(logging.WARNING, logger="pipeline.stages.windows"),
        pytest.raises(StageError) as caught,
    ):
        Pipeline(stage, batch_size=1).run(items)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    assert "did not call flush()" not in caplog.text


def test_each_run_starts_with_fresh_windows() -> None:
    pipeline = Pipeline(CountWindows(bounds, 2))
    assert pipeline.run([1, 2, 3, 4]) == pipeline.run([1, 2, 3, 4])


# time windows


def timed(*times: float) -> list[tuple[float, str]]:
    return [(at, f"item{index}") for index, at in enumerate(times)]


def first(item: tuple[float, str]) -> float:
    return item[0]


def names(window: Window[tuple[float, str]]) -> tuple[float, float, list[str], bool]:
    return (window.start, window.end, [name for _, name in window.items], window.complete)


def test_tumbling_time_windows_on_event_time() -> None:
    stage = TimeWindows(names, 1.0, event_time=first)
    items = timed(0.1, 0.5, 1.0, 1.9, 2.2, 5.0)
    assert drive(stage, items[:3], items[3:]) == [
        (0.0, 1.0, ["item0", "item1"], True),
        (1.0, 2.0, ["item2", "item3"], True),
        (2.0, 3.0, ["item4"], True),
        (5.0, 6.0, ["item5"], False),
    ]


def test_sliding_time_windows() -> None:
    stage = TimeWindows(names, 2.0, 1.0, event_time=first)
    assert drive(stage, timed(0.5, 1.5, 2.5, 3.5)) == [
        (-1.0, 1.0, ["item0"], True),
        (0.0, 2.0, ["item0", "item1"], True),
        (1.0, 3.0, ["item1", "item2"], True),
        (2.0, 4.0, ["item2", "item3"], False),
        (3.0, 5.0, ["item3"], False),
    ]


def test_an_item_within_the_allowed_lateness_joins_its_window() -> None:
    stage = TimeWindows(names, 1.0, event_time=first, allowed_lateness=0.5)
    assert drive(stage, timed(0.2, 1.1, 0.9, 1.6, 0.95)) == [
        (0.0, 1.0, ["item0", "item2"], True),  # closed by 1.6 - 0.5; item4 came after
        (1.0, 2.0, ["item1", "item3"], False),
    ]
    assert stage.late_items == 1


def test_late_items_are_dropped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    stage = TimeWindows(names, 1.0, event_time=first)
    with caplog.at_level(logging.WARNING, logger="pipeline.stages.windows"):
        outputs = drive(stage, timed(0.5, 1.5, 0.7, 0.8))
    assert [window[2] for window in outputs] == [["item0"], ["item1"]]
    assert stage.late_items == 2
    assert "dropped late item at time 0.7 (watermark 1.5); 1 late so far" in caplog.text


def test_late_items_can_go_to_a_callable() -> None:
    late: list[tuple[float, str]] = []
    stage = TimeWindows(names, 1.0, event_time=first, on_late=late.append)
    drive(stage, timed(0.5, 1.5, 0.7))
    assert late == [(0.7, "item2")]


def test_a_late_item_stops_the_run_under_raise() -> None:
    stage = TimeWindows(names, 1.0, event_time=first, on_late="raise")
    with pytest.raises(StageError) as caught:
        Pipeline(stage).run(timed(0.5, 1.5, 0.7))
    assert isinstance(caught.value.__cause__, LateItem)
    assert str(caught.value.__cause__) == (
        "late item at time 0.7: every window it belongs to closed at watermark 1.5"
    )


def test_in_sliding_windows_a_late_item_joins_the_windows_still_open() -> None:
    stage = TimeWindows(names, 2.0, 1.0, event_time=first)
    outputs = drive(stage, timed(0.5, 2.5, 1.5))
    assert (1.0, 3.0, ["item1", "item2"], False) in outputs
    assert stage.late_items == 0


def test_arrival_time_windows_follow_the_clock() -> None:
    ticks = iter([0.0, 0.4, 1.2, 1.3, 3.5])
    stage: TimeWindows[str, list[str]] = TimeWindows(
        lambda window: window.items, 1.0, clock=lambda: next(ticks)
    )
    assert drive(stage, ["a", "b", "c", "d", "e"]) == [["a", "b"], ["c", "d"], ["e"]]


def test_a_window_holds_at_most_max_window_items() -> None:
    stage = TimeWindows(names, 1.0, event_time=first, max_window_items=2)
    stage.setup()
    with pytest.raises(WindowFull) as caught:
        stage.process_batch(timed(0.1, 0.2, 0.3))
    assert str(caught.value) == "window [0, 1) would hold more than max_window_items=2 items"


def test_time_windows_in_a_pipeline_in_order() -> None:
    items = [(index * 0.01, str(index)) for index in range(1000)]
    outputs = Pipeline(TimeWindows(lambda w: len(w.items), 1.0, event_time=first)).run(items)
    assert outputs[:9] == [100] * 9


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: CountWindows(bounds, 0), ValueError, "size must be >= 1, got 0"),
        (lambda: CountWindows(bounds, 2, 0), ValueError, "step must be >= 1, got 0"),
        (
            lambda: CountWindows(bounds, 2, workers=2),
            ValueError,
            "a window stage keeps the stream's order in one place, so workers must be 1, got 2",
        ),
        (lambda: CountWindows(42, 2), TypeError, "function must be callable, got int"),  # type: ignore[arg-type]
        (lambda: TimeWindows(bounds, 0), ValueError, "size must be a finite number > 0, got 0"),
        (
            lambda: TimeWindows(bounds, 1, allowed_lateness=-1),
            ValueError,
            "allowed_lateness must be >= 0, got -1",
        ),
        (
            lambda: TimeWindows(bounds, 1, on_late="keep"),  # type: ignore[arg-type]
            ValueError,
            "on_late must be 'drop', 'raise' or a callable, got 'keep'",
        ),
        (lambda: anomalies(k=0), ValueError, "k must be > 0, got 0"),
        (
            lambda: TimeWindows(bounds, 1.0, 1e-9),
            ValueError,
            "an item would fall in 1000000000 windows of size 1 every 1e-09; "
            "size / step must be at most 10000",
        ),
        (
            lambda: CountWindows(bounds, 1_000_000, 1),
            ValueError,
            "an item would fall in 1000000 windows of size 1e+06 every 1; "
            "size / step must be at most 10000",
        ),
        (lambda: anomalies(3), TypeError, "value must be callable or None, got int"),  # type: ignore[arg-type]
        (lambda: summarize(3), TypeError, "value must be callable or None, got int"),  # type: ignore[arg-type]
        (lambda: summarize(key=3), TypeError, "key must be callable or None, got int"),  # type: ignore[arg-type]
        (
            lambda: summarize(percentiles=[101]),
            ValueError,
            "percentiles must be in [0, 100], got 101",
        ),
    ],
)
def test_bad_arguments_are_named(make: Callable[[], object], error: type, message: str) -> None:
    with pytest.raises(error) as caught:
        make()
    assert str(caught.value) == message


# statistics


def exact_mean_and_variance(values: list[float]) -> tuple[Fraction, Fraction]:
    exact = [Fraction(value) for value in values]
    mean = sum(exact, Fraction(0)) / len(exact)
    return mean, sum(((value - mean) ** 2 for value in exact), Fraction(0)) / len(exact)


@pytest.mark.parametrize("offset", [0.0, 1e9])
def test_welford_matches_exact_statistics(offset: float) -> None:
    rng = random.Random(offset)
    values = [offset + rng.gauss(0, 1) for _ in range(10_000)]
    stats = RunningStats(values)
    mean, variance = exact_mean_and_variance(values)
    assert stats.mean == pytest.approx(float(mean), rel=1e-14, abs=1e-12)
    assert stats.variance == pytest.approx(float(variance), rel=1e-7)
    assert stats.sample_variance == pytest.approx(float(variance) * 10_000 / 9_999, rel=1e-7)
    assert (stats.min, stats.max) == (min(values), max(values))


def test_the_textbook_formula_fails_where_welford_does_not() -> None:
    values = [1e9 + offset for offset in (4.0, 7.0, 13.0, 16.0)]
    naive = sum(v * v for v in values) / 4 - (sum(values) / 4) ** 2
    assert naive != 22.5  # catastrophic cancellation
    assert RunningStats(values).variance == 22.5


def test_percentile_interpolates_as_numpy_does() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 3.0], 0) == 1.0
    assert percentile([1.0, 3.0], 100) == 3.0


def test_summarize_gives_exact_statistics_and_key_counts() -> None:
    rng = random.Random(3)
    readings = [(rng.choice("ab"), rng.uniform(0, 100)) for _ in range(501)]
    summary = summarize(lambda item: item[1], key=lambda item: item[0])(Window(0, 1, readings))
    values = [value for _, value in readings]
    assert summary.count == 501
    assert summary.mean == pytest.approx(statistics.fmean(values), rel=1e-12)
    assert summary.std == pytest.approx(statistics.pstdev(values), rel=1e-12)
    assert (summary.min, summary.max) == (min(values), max(values))
    assert summary.percentiles[50] == statistics.median(values)
    assert summary.key_counts == {
        key: sum(1 for name, _ in readings if name == key) for key in "ab"
    }


def test_anomalies_flag_exactly_the_values_beyond_k_deviations() -> None:
    rng = random.Random(11)
    values = [rng.gauss(20, 2) for _ in range(300)] + [45.0, -10.0, 26.5]
    result = anomalies(k=3)(Window(0, 1, values))
    mean, variance = exact_mean_and_variance(values)
    std = math.sqrt(variance)
    expected = [v for v in values if abs(v - float(mean)) > 3 * std]
    assert [anomaly.value for anomaly in result.anomalies] == expected
    assert {45.0, -10.0} <= set(expected)
    assert result.mean == pytest.approx(float(mean), rel=1e-12)
    assert result.std == pytest.approx(std, rel=1e-9)
    for anomaly in result.anomalies:
        assert anomaly.deviations == pytest.approx((anomaly.value - float(mean)) / std)


def test_a_window_of_ten_values_cannot_flag_anything_at_three_deviations() -> None:
    # The most any value can lie from the mean is sqrt(n - 1) deviations: 3 for n = 10.
    assert anomalies()(Window(0, 1, [0.0] * 9 + [1e6])).anomalies == ()
    assert len(anomalies()(Window(0, 1, [0.0] * 10 + [1e6])).anomalies) == 1


def test_a_constant_window_flags_nothing() -> None:
    assert anomalies()(Window(0, 1, [5.0] * 50)).anomalies == ()


def test_windows_of_a_stream_with_anomalies_end_to_end() -> None:
    rng = random.Random(5)

    def readings() -> Iterator[tuple[float, float]]:
        for index in itertools.count():
            if index == 2000:
                return
            spike = 50.0 if index % 500 == 250 else 0.0
            yield (index * 0.01, rng.uniform(19, 21) + spike)  # noise within 1.8 deviations

    stage = TimeWindows(anomalies(lambda item: item[1]), 1.0, event_time=first)
    results = Pipeline(stage).run(readings())
    flagged = [anomaly.item[0] for window in results for anomaly in window.anomalies]
    assert flagged == pytest.approx([2.5, 7.5, 12.5, 17.5])


def test_a_watermark_closes_the_windows_it_passes_and_infinity_closes_all() -> None:
    stage: TimeWindows[Any, Any] = TimeWindows(names, 1.0, event_time=first)
    stage.setup()
    marked: list[Any] = [*timed(0.1, 1.2), Watermark(2.0)]
    assert stage.process_batch(marked) == [
        (0.0, 1.0, ["item0"], True),
        (1.0, 2.0, ["item1"], True),
    ]
    marked = [*timed(2.5, 7.0), Watermark(math.inf)]
    assert stage.process_batch(marked) == [
        (2.0, 3.0, ["item0"], True),
        (7.0, 8.0, ["item1"], True),
    ]
    assert stage.flush() == []
    assert stage.process_batch(timed(9.0)) == []  # after infinity every item is late
    assert stage.late_items == 1


def test_a_bounded_source_ending_with_an_infinite_watermark_needs_no_flush(
    caplog: pytest.LogCaptureFixture,
) -> None:
    items: list[Any] = [*timed(0.1, 0.7, 1.5), Watermark(math.inf)]
    with caplog.at_level(logging.WARNING):
        outputs = Pipeline(TimeWindows(names, 1.0, event_time=first)).run(items)
    assert [window[2] for window in outputs] == [["item0", "item1"], ["item2"]]
    assert caplog.text == ""


def test_count_windows_emit_their_open_windows_at_an_infinite_watermark() -> None:
    items: list[Any] = [0, 1, 2, Watermark(5.0), 3, 4, Watermark(math.inf)]
    assert Pipeline(CountWindows(bounds, 2)).run(items) == [
        (0, 2, [0, 1], True),
        (2, 4, [2, 3], True),
        (4, 6, [4], False),
    ]


# non-finite times and readings


@pytest.mark.parametrize("at", [math.inf, -math.inf, math.nan])
def test_a_non_finite_event_time_is_refused_naming_the_item_and_the_time(at: float) -> None:
    stage = TimeWindows(names, 1.0, event_time=first, name="windows")
    stage.setup()
    message = (
        f"windows: item ({at!r}, 'bad') has event time {at!r}; "
        "a time must be a finite number of seconds"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        stage.process_batch([(0.5, "ok"), (at, "bad")])


def test_a_non_finite_event_time_stops_a_run_with_the_item_named() -> None:
    stage = TimeWindows(names, 1.0, event_time=first, name="windows")
    with pytest.raises(StageError) as caught:
        Pipeline(stage).run([(0.5, "ok"), (math.inf, "bad")])
    assert isinstance(caught.value.__cause__, ValueError)
    assert "item (inf, 'bad') has event time inf" in str(caught.value.__cause__)


def test_a_non_finite_arrival_time_is_refused() -> None:
    ticks = iter([0.0, math.inf])
    stage: TimeWindows[str, list[str]] = TimeWindows(
        lambda window: window.items, 1.0, clock=lambda: next(ticks), name="arrivals"
    )
    stage.setup()
    message = "arrivals: item 'b' has arrival time inf; a time must be a finite number of seconds"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        stage.process_batch(["a", "b"])


@pytest.mark.parametrize("returned", ["soon", None])
def test_an_event_time_that_is_not_a_number_is_refused_naming_the_item(returned: Any) -> None:
    stage: TimeWindows[Any, Any] = TimeWindows(
        bounds, 1.0, event_time=lambda item: returned, name="windows"
    )
    stage.setup()
    with pytest.raises(TypeError) as caught:
        stage.process_batch(["a"])
    assert str(caught.value) == (
        f"windows: event_time returned {returned!r} for item 'a', not a number of seconds"
    )
    assert isinstance(caught.value.__cause__, TypeError | ValueError)


def test_a_clock_that_returns_no_number_is_refused_naming_the_item() -> None:
    no_time: Any = None
    stage: TimeWindows[str, Any] = TimeWindows(bounds, 1.0, clock=lambda: no_time, name="arrivals")
    stage.setup()
    message = "arrivals: clock returned None for item 'a', not a number of seconds"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        stage.process_batch(["a"])


@pytest.mark.parametrize("detector", [anomalies(first), summarize(first)])
def test_a_reading_that_is_not_a_number_is_refused_naming_the_item(
    detector: Callable[[Window[Any]], object],
) -> None:
    message = "the value of item ('n/a', 'x') is 'n/a', not a number"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        detector(Window(0, 1, [(1.0, "a"), ("n/a", "x")]))


def test_a_watermark_must_be_a_number_and_not_nan() -> None:
    message = "a Watermark's time must not be NaN: it would say nothing about the items to follow"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Watermark(math.nan)
    with pytest.raises(TypeError) as wrong_type:
        Watermark("5")  # type: ignore[arg-type]
    assert str(wrong_type.value) == "a Watermark's time must be a number, got str"
    assert Watermark(-math.inf).time == -math.inf


def test_a_nan_allowed_lateness_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^allowed_lateness must be >= 0, got nan$"):
        TimeWindows(names, 1.0, allowed_lateness=math.nan)


@pytest.mark.parametrize("reading", [math.inf, -math.inf, math.nan])
def test_a_non_finite_reading_is_flagged_and_left_out_of_the_statistics(reading: float) -> None:
    # Before, one inf or NaN made the mean and std non-finite and nothing was flagged.
    values = [0.0] * 20 + [1e6, reading]
    result = anomalies(k=3)(Window(0, 1, values))
    assert [anomaly.item for anomaly in result.anomalies[:1]] == [1e6]
    (spike, odd) = result.anomalies
    assert spike.deviations == pytest.approx(math.sqrt(20))
    assert odd.item is reading
    assert math.isnan(odd.deviations) if math.isnan(reading) else odd.deviations == reading
    assert (result.count, result.non_finite) == (21, 1)
    assert result.mean == pytest.approx(1e6 / 21)
    assert math.isfinite(result.std)


def test_a_window_of_only_non_finite_readings_flags_them_all() -> None:
    result = anomalies()(Window(0, 1, [math.nan, math.inf]))
    assert len(result.anomalies) == 2
    assert (result.count, result.non_finite, result.mean, result.std) == (0, 2, 0.0, 0.0)


def test_summarize_leaves_non_finite_readings_out_and_counts_them() -> None:
    summary = summarize()(Window(0, 1, [1.0, 2.0, math.nan, math.inf, 3.0]))
    assert (summary.count, summary.non_finite) == (3, 2)
    assert (summary.mean, summary.min, summary.max) == (2.0, 1.0, 3.0)
    assert summary.percentiles == {50.0: 2.0, 90.0: pytest.approx(2.8), 99.0: pytest.approx(2.98)}


# what keeps window statistics fast, and exact all the same


def windows_of(values: list[Any], size: int, step: int) -> list[list[Any]]:
    """The items of each window that received one, as the module defines them."""
    starts = range(0, len(values), step)
    return [values[start : start + size] for start in starts]


def exact_figures(values: list[Any]) -> tuple[int, float, float, float, float]:
    finite = [float(value) for value in values if math.isfinite(value)]
    if not finite:
        return (0, 0.0, 0.0, math.inf, -math.inf)
    std = statistics.pstdev(finite) if len(finite) > 1 else 0.0
    return (len(finite), statistics.fmean(finite), std, min(finite), max(finite))


@pytest.mark.parametrize("offset", [0.0, 1e9])
@pytest.mark.parametrize(("size", "step"), [(100, 100), (100, 10), (100, 30), (50, 1), (10, 25)])
def test_window_statistics_match_statistics_on_seeded_streams(
    offset: float, size: int, step: int
) -> None:
    rng = random.Random(f"{offset} {size} {step}")
    values: list[Any] = [offset + rng.gauss(0, 1) for _ in range(1234)]
    for index in rng.sample(range(len(values)), 12):
        values[index] = rng.choice([math.nan, math.inf, -math.inf])
    values[200:300] = [math.nan] * 100  # windows with no finite reading at all
    batches = [values[start : start + 97] for start in range(0, len(values), 97)]
    results = drive(CountWindows(summarize(percentiles=(0, 50, 100)), size, step), *batches)
    expected = windows_of(values, size, step)
    assert len(results) == len(expected)
    for result, items in zip(results, expected, strict=True):
        count, mean, std, low, high = exact_figures(items)
        assert (result.count, result.non_finite) == (count, len(items) - count)
        assert math.isclose(result.mean, mean, rel_tol=1e-9)
        assert math.isclose(result.std, std, rel_tol=1e-9)
        assert (result.min, result.max) == (low, high)
        ordered = sorted(value for value in items if math.isfinite(value))
        assert result.percentiles == (
            {0.0: ordered[0], 50.0: percentile(ordered, 50), 100.0: ordered[-1]} if ordered else {}
        )


def test_sliding_windows_give_what_the_window_function_gives_each_window() -> None:
    rng = random.Random(7)
    readings = [(rng.choice("abc"), rng.uniform(-5, 5)) for _ in range(777)]
    summary = summarize(lambda item: item[1], key=lambda item: item[0])
    stage = CountWindows(summary, 60, 20)
    results = Pipeline(stage, batch_size=50).run(readings)
    expected = [
        summary(Window(start, start + 60, items, start + 60 <= len(readings)))
        for start, items in zip(range(0, 777, 20), windows_of(readings, 60, 20), strict=True)
    ]
    assert [(r.start, r.end, r.complete, r.count, r.key_counts) for r in results] == [
        (e.start, e.end, e.complete, e.count, e.key_counts) for e in expected
    ]
    for result, reference in zip(results, expected, strict=True):
        assert math.isclose(result.mean, reference.mean, rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(result.std, reference.std, rel_tol=1e-12)
        assert (result.min, result.max) == (reference.min, reference.max)
        assert result.percentiles == pytest.approx(reference.percentiles, rel=1e-12)


def test_summarize_sorts_nothing_when_no_percentile_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Percentiles are the only figures that need a window's values in order.
    from pipeline.stages import windows

    sorts = 0

    def counting_sorted(values: Any, **options: Any) -> list[Any]:
        nonlocal sorts
        sorts += 1
        return sorted(values, **options)

    monkeypatch.setattr(windows, "sorted", counting_sorted, raising=False)
    readings = [float(index % 17) for index in range(5000)]
    for step in (1000, 100):
        drive(CountWindows(summarize(percentiles=()), 1000, step), readings)
    assert sorts == 0
    drive(CountWindows(summarize(percentiles=(50,)), 1000), readings)
    assert sorts > 0  # the hook does see the sorts that percentiles need


def test_sliding_windows_read_each_reading_once_not_once_per_window() -> None:
    # A window of 1,000 every 100 shares 900 readings with the one before: they are
    # summed once, in blocks of 100, and the blocks' figures combined per window.
    calls = 0

    def reading(item: float) -> float:
        nonlocal calls
        calls += 1
        return item

    readings = [float(index) for index in range(10_000)]
    results = drive(CountWindows(summarize(reading, percentiles=()), 1000, 100), readings)
    assert len(results) == 100
    assert calls == len(readings)
    assert results[0].mean == statistics.fmean(readings[:1000])


@pytest.mark.parametrize("spread", [1, 2, 5])
def test_values_a_few_units_in_the_last_place_apart_at_a_large_offset(spread: int) -> None:
    values = [1e9 + math.ulp(1e9) * (index % (spread + 1)) for index in range(99)]
    summary = summarize(percentiles=())(Window(0, 99, values))
    assert math.isclose(summary.mean, statistics.fmean(values), rel_tol=1e-15)
    assert math.isclose(summary.std, statistics.pstdev(values), rel_tol=1e-9)
