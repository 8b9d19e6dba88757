"""Tests for CircuitBreaker: its states, its one trial call, its lock, and its use in stages.

Time is a fake clock the tests move by hand, so no test waits for a reset timeout.
Threads start together at a Barrier and coordinate with Events; every wait is bounded.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import pytest

from pipeline import Pipeline, PipelineStage
from pipeline.resilience import CircuitOpen
from pipeline.resilience.breaker import BreakerState, CircuitBreaker, StateChange
from pipeline.resilience.policy import DeadLetters
from pipeline.resilience.resilient import ResilientStage
from pipeline.resilience.retry import RetryPolicy
from pipeline.stages import FunctionStage

WAIT = 5.0

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def succeed(value: int) -> int:
    return value


def fail(value: int) -> int:
    raise ConnectionError(f"refused {value}")


def trip(breaker: CircuitBreaker) -> None:
    for value in range(breaker.failure_threshold):
        with pytest.raises(ConnectionError):
            breaker.call(fail, value)


# The state machine.


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=FakeClock())
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(fail, 0)
    assert breaker.call(succeed, 1) == 1
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(fail, 0)
    assert breaker.state is CLOSED
    with pytest.raises(ConnectionError):
        breaker.call(fail, 0)
    assert breaker.state is OPEN


def test_an_open_circuit_fails_fast_without_calling() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10, name="payments", clock=clock)
    trip(breaker)
    calls: list[int] = []
    clock.now += 4
    with pytest.raises(CircuitOpen, match=r"^circuit 'payments' is open; next trial in 6 s$"):
        breaker.call(calls.append, 1)
    assert calls == []


def test_a_successful_trial_after_the_reset_timeout_closes_the_circuit() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=clock)
    trip(breaker)
    clock.now += 10
    assert breaker.call(succeed, 5) == 5
    assert breaker.state is CLOSED


def test_a_failed_trial_opens_the_circuit_for_another_reset_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=clock)
    trip(breaker)
    clock.now += 10
    with pytest.raises(ConnectionError):
        breaker.call(fail, 0)
    assert breaker.state is OPEN
    clock.now += 9.5
    with pytest.raises(CircuitOpen, match=r"next trial in 0\.5 s"):
        breaker.call(succeed, 0)


def test_errors_not_in_trip_on_pass_through_and_count_as_answers() -> None:
    breaker = CircuitBreaker(failure_threshold=2, trip_on=(ConnectionError,), clock=FakeClock())
    with pytest.raises(ConnectionError):
        breaker.call(fail, 0)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda value: 1 // value, 0)
    with pytest.raises(ConnectionError):
        breaker.call(fail, 0)
    assert breaker.state is CLOSED  # the ZeroDivisionError broke the run of failures


def test_an_interrupted_trial_leaves_the_circuit_open_and_ready_for_a_new_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=clock)
    trip(breaker)
    clock.now += 10

    def interrupted(value: int) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted, 0)
    assert breaker.state is OPEN
    assert breaker.call(succeed, 1) == 1  # the next call is a trial at once
    assert breaker.state is CLOSED


def test_half_open_admits_exactly_one_trial_while_the_rest_fail_fast() -> None:
    callers = 8
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=clock)
    trip(breaker)
    clock.now += 10
    start = threading.Barrier(callers, timeout=WAIT)
    lock = threading.Lock()
    rejected: list[str] = []
    all_others_rejected = threading.Event()
    trials: list[int] = []
    errors: list[BaseException] = []

    def trial(caller: int) -> int:
        trials.append(caller)
        # Hold the trial open until every other caller has been turned away.
        if not all_others_rejected.wait(WAIT):
            raise TimeoutError("the other callers were not rejected")
        return caller

    def call(caller: int) -> None:
        try:
            start.wait()
            breaker.call(trial, caller)
        except CircuitOpen as exc:
            with lock:
                rejected.append(str(exc))
                if len(rejected) == callers - 1:
                    all_others_rejected.set()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(caller,)) for caller in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    assert len(trials) == 1
    assert rejected == ["circuit 'circuit' is half-open and its trial call is busy"] * 7
    assert breaker.state is CLOSED


def test_the_lock_is_not_held_across_the_protected_call() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    first_inside = threading.Event()
    second_done = threading.Event()
    outcome: list[object] = []

    def first(value: int) -> int:
        first_inside.set()
        if not second_done.wait(WAIT):  # would time out if the lock were held
            raise TimeoutError("the second call could not run while the first was in flight")
        return value

    def run_first() -> None:
        try:
            outcome.append(breaker.call(first, 1))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run_first)
    thread.start()
    assert first_inside.wait(WAIT)
    assert breaker.state is CLOSED
    assert breaker.call(succeed, 2) == 2
    second_done.set()
    thread.join(WAIT)
    assert outcome == [1]


def test_a_call_that_outlives_its_state_does_not_change_the_new_state() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=clock)
    inside = threading.Event()
    release = threading.Event()

    def slow(value: int) -> int:
        inside.set()
        if not release.wait(WAIT):
            raise TimeoutError("never released")
        return value

    thread = threading.Thread(target=breaker.call, args=(slow, 1))
    thread.start()
    assert inside.wait(WAIT)
    trip(breaker)  # the circuit opens while the slow call is in flight
    release.set()
    thread.join(WAIT)
    assert breaker.state is OPEN  # the slow call's success was admitted while closed


def test_state_changes_are_reported_to_the_callback_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changes: list[StateChange] = []
    clock = FakeClock()
    breaker = CircuitBreaker(
        failure_threshold=1,
        reset_timeout=10,
        name="db",
        on_state_change=changes.append,
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="pipeline.resilience.breaker"):
        trip(breaker)
        clock.now += 10
        breaker.call(succeed, 0)
    assert changes == [
        StateChange("db", CLOSED, OPEN),
        StateChange("db", OPEN, HALF_OPEN),
        StateChange("db", HALF_OPEN, CLOSED),
    ]
    assert [record.getMessage() for record in caplog.records] == [
        "circuit 'db': closed -> open",
        "circuit 'db': open -> half-open",
        "circuit 'db': half-open -> closed",
    ]
    assert caplog.records[0].levelno == logging.WARNING
    assert repr(breaker) == "<CircuitBreaker 'db' closed>"


@pytest.mark.parametrize(
    "trip_on",
    [ConnectionError, [ConnectionError], (kind for kind in [ConnectionError])],
    ids=["one class", "list", "generator"],
)
def test_trip_on_takes_one_class_or_any_iterable_of_them(trip_on: Any) -> None:
    breaker = CircuitBreaker(failure_threshold=1, trip_on=trip_on, clock=FakeClock())
    assert breaker.trip_on == (ConnectionError,)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda value: 1 // value, 0)
    assert breaker.state is CLOSED
    with pytest.raises(ConnectionError):
        breaker.call(fail, 0)
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold must be >= 1, got 0"),
        ({"failure_threshold": "3"}, TypeError, "failure_threshold must be an int, got str"),
        (
            {"reset_timeout": -1},
            ValueError,
            "reset_timeout must be >= 0 seconds and finite, got -1",
        ),
        (
            {"reset_timeout": float("inf")},
            ValueError,
            "reset_timeout must be >= 0 seconds and finite, got inf",
        ),
        ({"reset_timeout": None}, TypeError, "reset_timeout must be a number, got NoneType"),
        ({"trip_on": ()}, ValueError, "trip_on must hold at least one exception class, got ()"),
        (
            {"trip_on": [ConnectionError, None]},
            TypeError,
            "trip_on must hold exception classes, got None (NoneType)",
        ),
        (
            {"trip_on": dict},
            TypeError,
            "trip_on must hold exception classes, got dict, which is not a BaseException subclass",
        ),
        (
            {"trip_on": 1.5},
            TypeError,
            "trip_on must be an exception class or an iterable of them, got float 1.5",
        ),
        ({"name": 3}, TypeError, "name must be a str, got int"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"on_state_change": 3}, TypeError, "on_state_change must be callable, got int"),
        ({"clock": 0.0}, TypeError, "clock must be callable, got float"),
    ],
)
def test_bad_breaker_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        CircuitBreaker(**kwargs)


# Breakers on stages.


class Service(PipelineStage[int, int]):
    """A downstream service that refuses every call; counts the calls it gets."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls = 0

    def process(self, item: int) -> int:
        self.calls += 1
        raise ConnectionError("refused")


def test_when_the_circuit_opens_items_follow_the_policy_with_circuit_open() -> None:
    service = Service("fetch")
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=60, clock=FakeClock())
    stage = ResilientStage(service, on_error="collect", breaker=breaker)
    assert Pipeline(stage).run(range(10)) == []
    assert service.calls == 3
    assert stage.dead_letters is not None
    errors = [type(letter.error) for letter in stage.dead_letters]
    assert errors == [ConnectionError] * 3 + [CircuitOpen] * 7
    assert stage.statistics().circuit_rejections == 7


def test_one_breaker_shared_by_two_stages_protects_both() -> None:
    """The second stage's failure opens the breaker the first stage calls through too.

    One failure opens it, so the first stage's successes (which close the count) cannot
    interleave with the failures that open it, whichever thread runs first.
    """
    opened = threading.Event()
    breaker = CircuitBreaker(
        failure_threshold=1,
        reset_timeout=60,
        on_state_change=lambda change: opened.set(),
        clock=FakeClock(),
    )

    def gate(item: int) -> int:
        # Item 0 opens the circuit in the second stage before the rest go on.
        if item >= 1 and not opened.wait(WAIT):
            raise TimeoutError("the circuit never opened")
        return item

    letters = DeadLetters()
    second_service = Service("second")
    chain = (
        FunctionStage(gate)
        >> ResilientStage(
            FunctionStage[int, int](succeed, name="first"),
            on_error="collect",
            breaker=breaker,
            dead_letters=letters,
        )
        >> ResilientStage(second_service, on_error="collect", breaker=breaker, dead_letters=letters)
    )
    assert Pipeline(chain, batch_size=1).run(range(5)) == []
    assert second_service.calls == 1
    assert sorted((letter.stage, letter.item, type(letter.error)) for letter in letters) == [
        ("first", 1, CircuitOpen),
        ("first", 2, CircuitOpen),
        ("first", 3, CircuitOpen),
        ("first", 4, CircuitOpen),
        ("second", 0, ConnectionError),
    ]


def test_an_item_rejected_by_an_open_circuit_is_not_retried() -> None:
    service = Service("service")
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30, clock=FakeClock())
    stage = ResilientStage(
        service,
        on_error="collect",
        retry=RetryPolicy(max_attempts=3, base_delay=0, retry_on=Exception),
        breaker=breaker,
    )
    assert Pipeline(stage, batch_size=1).run(range(3)) == []
    assert stage.dead_letters is not None
    letters = [(letter.item, type(letter.error), letter.attempts) for letter in stage.dead_letters]
    # Item 0's ConnectionError opens the circuit and is retried; the retry is rejected.
    assert letters == [(0, CircuitOpen, 2), (1, CircuitOpen, 1), (2, CircuitOpen, 1)]
    assert service.calls == 1


def test_call_passes_any_arguments_through() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    assert breaker.call(divmod, 7, 2) == (3, 1)
    assert breaker.call(int, "ff", base=16) == 255
    assert breaker.call(list) == []
    with pytest.raises(ZeroDivisionError):
        breaker.call(divmod, 1, 0)
    assert breaker.state is OPEN


def test_try_admit_returns_the_refusal_instead_of_raising_it() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60, name="svc")
    with pytest.raises(ZeroDivisionError):
        breaker.call(divmod, 1, 0)
    refusal = breaker.try_admit()
    assert isinstance(refusal, CircuitOpen)
    assert str(refusal).startswith("circuit 'svc' is open; next trial in ")
