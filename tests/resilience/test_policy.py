"""Tests for the error policies, dead letters and the failure budget."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import pytest

from pipeline import Pipeline, StageError
from pipeline.resilience import FailureBudgetExceeded
from pipeline.resilience.policy import DeadLetter, DeadLetters, FailureBudget, check_error_policy
from pipeline.resilience.resilient import ResilientStage
from pipeline.stages import FunctionStage

WAIT = 5.0


class Boom(Exception):
    """The exception the stages under test raise."""


def fail_on_multiples_of(divisor: int) -> Any:
    def process(item: int) -> int:
        if item % divisor == divisor - 1:
            raise Boom(f"bad {item}")
        return item

    process.__name__ = f"fail_every_{divisor}"
    return process


# Dead letters.


def test_dead_letters_can_be_read_as_a_snapshot_and_drained() -> None:
    letters = DeadLetters()
    error = Boom("x")
    letters.append(DeadLetter("parse", 1, error, 1))
    letters.append(DeadLetter("parse", 2, error, 3))
    assert [letter.item for letter in letters.snapshot()] == [1, 2]
    assert [letter.item for letter in letters] == [1, 2]
    assert len(letters) == 2
    assert [letter.item for letter in letters.drain()] == [1, 2]
    assert (len(letters), letters.total) == (0, 2)
    assert repr(letters) == "<DeadLetters held=0>"


def test_the_error_policy_names_are_checked() -> None:
    assert check_error_policy("skip") == "skip"
    with pytest.raises(
        ValueError, match="on_error must be 'raise', 'skip' or 'collect', got 'drop'"
    ):
        check_error_policy("drop")


# Skip.


def test_skip_drops_failed_items_counts_them_and_keeps_order() -> None:
    stage = ResilientStage(FunctionStage(fail_on_multiples_of(10), workers=3), on_error="skip")
    outputs = Pipeline(stage, queue_size=8).run(range(1000))
    assert outputs == [item for item in range(1000) if item % 10 != 9]
    assert stage.statistics().items_skipped == 100
    assert stage.statistics().items_in == 1000
    assert stage.dead_letters is None


def test_skip_logs_the_first_failure_and_then_one_in_log_every(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage = ResilientStage(FunctionStage(fail_on_multiples_of(2)), on_error="skip", log_every=10)
    with caplog.at_level(logging.WARNING, logger="pipeline.resilience.resilient"):
        Pipeline(stage).run(range(60))  # 30 failures
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4  # failures 1, 10, 20 and 30
    assert messages[0] == (
        "stage 'fail_every_2' skipped item 1 after 1 attempt(s): Boom: bad 1 (1 skipped so far)"
    )
    assert messages[-1].endswith("(30 skipped so far)")


# Collect.


def test_collect_routes_failed_items_with_their_errors_to_the_dead_letters() -> None:
    errors: dict[int, Boom] = {}

    def fail_on_odd(item: int) -> int:
        if item % 2:
            errors[item] = Boom(str(item))
            raise errors[item]
        return item

    stage = ResilientStage(FunctionStage(fail_on_odd, workers=2), on_error="collect")
    assert Pipeline(stage).run(range(10)) == [0, 2, 4, 6, 8]
    assert stage.dead_letters is not None
    letters = stage.dead_letters.snapshot()
    assert len(letters) == 5
    assert {letter.item for letter in letters} == {1, 3, 5, 7, 9}
    for letter in letters:
        assert letter.stage == "fail_on_odd"
        assert letter.error is errors[letter.item]  # type: ignore[index]
        assert letter.error.__traceback__ is not None
        assert letter.attempts == 1


def test_dead_letters_can_be_read_while_the_run_goes_on() -> None:
    seen_during_run = threading.Event()

    def process(item: int) -> int:
        if item == 3:
            raise Boom("three")
        if item == 10 and not seen_during_run.wait(WAIT):
            raise TimeoutError("the consumer never saw the dead letter")
        return item

    stage = ResilientStage(FunctionStage(process), on_error="collect")
    assert stage.dead_letters is not None
    pipeline = Pipeline(stage, batch_size=1)
    outputs = []
    for output in pipeline.stream(range(20)):
        outputs.append(output)
        if output == 4:  # item 3 was collected before item 4 came out
            stats = pipeline.stats()
            assert stats is not None
            assert stats.running
            assert [letter.item for letter in stage.dead_letters.drain()] == [3]
            seen_during_run.set()
    assert outputs == [item for item in range(20) if item != 3]
    assert stage.dead_letters.total == 1


def test_stages_can_share_one_dead_letter_sink() -> None:
    letters = DeadLetters()
    chain = ResilientStage(
        FunctionStage[int, int](fail_on_multiples_of(3), name="threes"),
        on_error="collect",
        dead_letters=letters,
    ) >> ResilientStage(
        FunctionStage[int, int](fail_on_multiples_of(5), name="fives"),
        on_error="collect",
        dead_letters=letters,
    )
    outputs = Pipeline(chain).run(range(30))
    expected = [("threes", item) for item in range(30) if item % 3 == 2] + [
        ("fives", item) for item in range(30) if item % 3 != 2 and item % 5 == 4
    ]
    assert sorted((letter.stage, letter.item) for letter in letters) == sorted(expected)
    assert len(outputs) + letters.total == 30


# The failure budget.


def test_a_count_budget_stops_the_run_at_the_first_failure_too_many() -> None:
    budget = FailureBudget(max_failures=4)
    stage = ResilientStage(FunctionStage(fail_on_multiples_of(10)), on_error="skip", budget=budget)
    with pytest.raises(StageError) as raised:
        Pipeline(stage).run(range(1000))
    assert str(raised.value) == (
        "stage 'fail_every_10' failed on item 49: "
        "FailureBudgetExceeded: 5 items failed, more than max_failures=4"
    )
    exceeded = raised.value.__cause__
    assert isinstance(exceeded, FailureBudgetExceeded)
    assert isinstance(exceeded.__cause__, Boom)  # the failure that broke the budget


def test_a_budget_shared_by_two_stages_counts_their_failures_together() -> None:
    budget = FailureBudget(max_failures=5)
    letters = DeadLetters()
    chain = ResilientStage(
        FunctionStage[int, int](fail_on_multiples_of(10), name="tens"),
        on_error="collect",
        budget=budget,
        dead_letters=letters,
    ) >> ResilientStage(
        FunctionStage[int, int](fail_on_multiples_of(11), name="elevens"),
        on_error="skip",
        budget=budget,
    )
    with pytest.raises(StageError, match="6 items failed, more than max_failures=5"):
        Pipeline(chain, queue_size=4).run(range(1000))
    # The stages run at once (truly, without the GIL): the other one may fail the item it
    # holds, and count it, before it sees the stop.
    assert budget.failures in (6, 7)


def test_a_fraction_budget_stops_the_run_once_min_items_have_been_seen() -> None:
    budget = FailureBudget(max_fraction=0.1, min_items=50)
    stage = ResilientStage(FunctionStage(fail_on_multiples_of(5)), on_error="skip", budget=budget)
    with pytest.raises(StageError) as raised:
        Pipeline(stage, batch_size=1).run(range(1000))
    assert str(raised.value) == (
        "stage 'fail_every_5' failed in process_batch(): FailureBudgetExceeded: "
        "9 of 50 items failed (18.0%), more than max_fraction=0.1"
    )


def test_failures_within_the_budget_let_the_run_finish() -> None:
    budget = FailureBudget(max_failures=100, max_fraction=0.5, min_items=10)
    stage = ResilientStage(FunctionStage(fail_on_multiples_of(10)), on_error="skip", budget=budget)
    assert len(Pipeline(stage).run(range(1000))) == 900
    assert (budget.items, budget.failures) == (1000, 100)
    budget.reset()
    assert (budget.items, budget.failures) == (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "a FailureBudget needs max_failures, max_fraction or both"),
        ({"max_failures": -1}, ValueError, "max_failures must be >= 0, got -1"),
        ({"max_failures": 1.5}, TypeError, "max_failures must be an int, got float"),
        ({"max_fraction": 0}, ValueError, "max_fraction must be in (0, 1], got 0"),
        ({"max_fraction": 1.5}, ValueError, "max_fraction must be in (0, 1], got 1.5"),
        ({"max_fraction": "1"}, TypeError, "max_fraction must be a number, got str"),
        ({"max_failures": 1, "min_items": 0}, ValueError, "min_items must be >= 1, got 0"),
        ({"max_failures": 1, "min_items": "a"}, TypeError, "min_items must be an int, got str"),
        ({"max_failures": 1, "min_items": True}, TypeError, "min_items must be an int, got bool"),
        ({"max_fraction": float("nan")}, ValueError, "max_fraction must be in (0, 1], got nan"),
    ],
)
def test_bad_budget_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        FailureBudget(**kwargs)
