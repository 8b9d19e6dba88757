"""Tests for the shared argument checks, and that every time argument uses the one for seconds."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from pipeline import Pipeline
from pipeline._checks import seconds
from pipeline.resilience import CircuitBreaker, ResilientStage, RetryPolicy
from pipeline.stages import FunctionStage


def test_seconds_accepts_finite_positive_numbers_as_floats() -> None:
    assert seconds("timeout", 2) == 2.0
    assert isinstance(seconds("timeout", 2), float)
    assert seconds("delay", 0, zero_allowed=True) == 0.0
    assert seconds("timeout", None, none_allowed=True) is None


@pytest.mark.parametrize(
    ("value", "options", "error", "message"),
    [
        (0, {}, ValueError, "t must be > 0 seconds and finite, got 0"),
        (-1, {"zero_allowed": True}, ValueError, "t must be >= 0 seconds and finite, got -1"),
        (float("nan"), {}, ValueError, "t must be > 0 seconds and finite, got nan"),
        (float("inf"), {}, ValueError, "t must be > 0 seconds and finite, got inf"),
        (True, {}, TypeError, "t must be a number, got bool"),
        ("1", {}, TypeError, "t must be a number, got str"),
        (None, {}, TypeError, "t must be a number, got NoneType"),
        ("1", {"none_allowed": True}, TypeError, "t must be a number or None, got str"),
    ],
)
def test_seconds_rejects_what_no_wait_can_take(
    value: object, options: dict[str, bool], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        seconds("t", value, **options)


def make_progress(value: object) -> object:
    from pipeline.observe.progress import Progress

    return Progress(Pipeline(FunctionStage(abs)), interval=value, file=io.StringIO())  # type: ignore[arg-type]


def make_recorder(value: object) -> object:
    from pipeline.observe.plot import TimelineRecorder

    return TimelineRecorder(interval=value)  # type: ignore[arg-type]


def make_dashboard(value: object) -> object:
    from pipeline.observe.dashboard import Dashboard

    return Dashboard(Pipeline(FunctionStage(abs)), request_timeout=value)  # type: ignore[arg-type]


# Every time argument of the package, and whether 0 is a valid value for it. Before the
# shared check, five hand-written ones behaved four ways (one took "1", one took inf).
TIME_ARGUMENTS: list[tuple[str, Callable[[Any], object], bool]] = [
    ("timeout", lambda value: ResilientStage(FunctionStage(abs), timeout=value), False),
    ("base_delay", lambda value: RetryPolicy(base_delay=value, max_delay=value or 1), True),
    ("max_delay", lambda value: RetryPolicy(base_delay=0, max_delay=value), True),
    ("reset_timeout", lambda value: CircuitBreaker(reset_timeout=value), True),
    ("interval", make_progress, False),
    ("interval", make_recorder, False),
    ("request_timeout", make_dashboard, False),
]


@pytest.mark.parametrize(("name", "make", "zero_allowed"), TIME_ARGUMENTS)
def test_every_time_argument_is_checked_the_same_way(
    name: str, make: Callable[[Any], object], zero_allowed: bool
) -> None:
    bound = ">= 0" if zero_allowed else "> 0"
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"^{name} must be {bound} seconds and finite, got "):
            make(bad)
    for wrong in ("1", True):
        with pytest.raises(TypeError, match=f"^{name} must be a number"):
            make(wrong)
    if zero_allowed:
        make(0)
    else:
        with pytest.raises(ValueError, match=f"^{name} must be > 0 seconds and finite, got 0$"):
            make(0)
    make(0.5)
