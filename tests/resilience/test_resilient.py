"""Tests for ResilientStage itself: what it wraps, its arguments, and lifecycle failures."""

from __future__ import annotations

import re
import traceback
from typing import Any

import pytest
from support import Boom, Lifecycle

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.resilience import CircuitBreaker, RetryPolicy
from pipeline.resilience.policy import DeadLetters, FailureBudget
from pipeline.resilience.resilient import ResilientStage
from pipeline.stages import FlatMapFunctionStage, FunctionStage, PredicateStage

WAIT = 5.0


def fail_on_three(item: int) -> int:
    if item == 3:
        raise Boom("three")
    return item


def test_the_wrapper_takes_the_wrapped_stage_name_and_workers() -> None:
    inner = FunctionStage(fail_on_three, workers=3)
    stage = ResilientStage(inner, on_error="skip")
    assert (stage.name, stage.workers, stage.inner) == ("fail_on_three", 3, inner)
    assert repr(stage) == (
        "<ResilientStage <FunctionStage name='fail_on_three' workers=3> on_error='skip'>"
    )


def test_filter_and_flat_map_stages_can_be_wrapped() -> None:
    def odd_or_boom(item: int) -> bool:
        if item == 4:
            raise Boom("four")
        return item % 2 == 1

    def twice_or_boom(item: int) -> list[int]:
        if item == 5:
            raise Boom("five")
        return [item, item]

    chain = ResilientStage(PredicateStage(odd_or_boom), on_error="skip") >> ResilientStage(
        FlatMapFunctionStage(twice_or_boom), on_error="skip"
    )
    assert Pipeline(chain).run(range(8)) == [1, 1, 3, 3, 7, 7]


def test_a_vectorised_stage_failing_in_process_batch_is_blamed_on_the_right_item() -> None:
    class Vectorised(PipelineStage[int, int]):
        def process_batch(self, items: list[int]) -> list[int]:
            if 3 in items:
                raise Boom("a three in the batch")
            return [item * 10 for item in items]

    stage = ResilientStage(Vectorised(), on_error="collect")
    assert Pipeline(stage).run(range(5)) == [0, 10, 20, 40]
    assert stage.dead_letters is not None
    assert [letter.item for letter in stage.dead_letters] == [3]


def test_the_wrapper_works_outside_a_pipeline_too() -> None:
    stage = ResilientStage(FunctionStage(fail_on_three), on_error="skip")
    stage.setup()
    assert stage.process_batch([1, 2, 3, 4]) == [1, 2, 4]
    stage.teardown()


def test_under_raise_the_wrapper_fails_like_the_stage_it_wraps() -> None:
    with pytest.raises(StageError) as wrapped:
        Pipeline(ResilientStage(FunctionStage(fail_on_three))).run(range(10))
    with pytest.raises(StageError) as plain:
        Pipeline(FunctionStage(fail_on_three)).run(range(10))
    assert (
        str(wrapped.value)
        == str(plain.value)
        == ("stage 'fail_on_three' failed on item 3: Boom: three")
    )
    assert type(wrapped.value.__cause__) is Boom


# Lifecycle failures: the policy is for items; a setup or teardown failure stops the run.


@pytest.mark.parametrize("policy", ["raise", "skip", "collect"])
@pytest.mark.parametrize("phase", ["setup", "teardown"])
def test_a_lifecycle_failure_stops_the_run_under_every_policy(phase: str, policy: Any) -> None:
    inner = Lifecycle(phase, workers=3)
    stage = ResilientStage(inner, on_error=policy)
    with pytest.raises(StageError) as raised:
        Pipeline(FunctionStage[int, int](abs, name="first") >> stage).run(range(100))
    assert raised.value.phase == phase
    assert re.fullmatch(
        rf"stage 'Lifecycle' failed in {phase}\(\): worker [012]: Boom: .*", str(raised.value)
    )
    assert isinstance(raised.value.__cause__, Boom)
    assert inner.set_up == 3
    # A worker whose setup failed has nothing to tear down; every other worker tears down.
    assert inner.torn_down == (0 if phase == "setup" else 3)


def test_teardown_runs_in_every_worker_after_a_failure_elsewhere() -> None:
    inner = Lifecycle("nothing", workers=3)
    with pytest.raises(StageError, match="fail_on_three"):
        Pipeline(ResilientStage(inner, on_error="skip") >> FunctionStage(fail_on_three)).run(
            range(100)
        )
    assert inner.torn_down == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"on_error": "ignore"},
            ValueError,
            "on_error must be 'raise', 'skip' or 'collect', got 'ignore'",
        ),
        (
            {"budget": FailureBudget(1)},
            ValueError,
            "budget needs on_error='skip' or 'collect': with 'raise' the first failure "
            "already stops the run",
        ),
        (
            {"on_error": "skip", "dead_letters": DeadLetters()},
            ValueError,
            "dead_letters needs on_error='collect', got 'skip'",
        ),
        ({"retry": 3}, TypeError, "retry must be a RetryPolicy or None, got int"),
        ({"breaker": "x"}, TypeError, "breaker must be a CircuitBreaker or None, got str"),
        ({"on_error": "skip", "log_every": 0}, ValueError, "log_every must be >= 1, got 0"),
        ({"on_error": "skip", "log_every": "a"}, TypeError, "log_every must be an int, got str"),
        ({"on_error": "skip", "log_every": 2.0}, TypeError, "log_every must be an int, got float"),
    ],
)
def test_bad_wrapper_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        ResilientStage(FunctionStage(fail_on_three), **kwargs)


def test_only_a_stage_can_be_wrapped() -> None:
    with pytest.raises(TypeError, match="stage must be a PipelineStage, got function"):
        ResilientStage(fail_on_three)  # type: ignore[arg-type]


def test_skipped_and_dead_lettered_items_are_the_stage_extra_counts() -> None:
    skipping = ResilientStage(
        FunctionStage(fail_on_three, name="skipping", workers=2), on_error="skip"
    )
    collecting = ResilientStage(
        FunctionStage[int, int](lambda item: 10 // (item % 5), name="collecting"),
        on_error="collect",
    )
    pipeline = Pipeline(skipping >> collecting, batch_size=4)
    assert pipeline.run(range(20)) == [
        10 // (item % 5) for item in range(20) if item % 5 and item != 3
    ]
    stats = pipeline.stats()
    assert stats is not None
    assert stats.stage("skipping").extra == {"skipped": 1}
    assert stats.stage("collecting").extra == {"dead_lettered": 4}
    assert (skipping.statistics().items_skipped, collecting.statistics().items_dead_lettered) == (
        1,
        4,
    )


def test_a_failure_travels_as_a_value_not_as_a_chain_of_re_raises() -> None:
    # Before, the user's exception was raised again at each layer (the breaker, the time
    # limit, the retry loop), and each layer added its frames to the traceback.
    def fail(item: int) -> int:
        raise Boom(f"bad {item}")

    stage = ResilientStage(
        FunctionStage(fail),
        on_error="collect",
        retry=RetryPolicy(max_attempts=2, base_delay=0, retry_on=Boom),
        breaker=CircuitBreaker(failure_threshold=100),
        timeout=WAIT,
    )
    assert Pipeline(stage).run([1]) == []
    assert stage.dead_letters is not None
    [letter] = stage.dead_letters.snapshot()
    assert (letter.attempts, str(letter.error)) == (2, "bad 1")
    frames = [
        frame.f_code.co_filename for frame, _ in traceback.walk_tb(letter.error.__traceback__)
    ]
    assert not [name for name in frames if "pipeline/resilience/" in name], frames
    assert letter.error.__context__ is None


def test_under_raise_the_outputs_before_the_failing_item_are_delivered() -> None:
    # The failing batch's earlier outputs travel with ItemFailed, so a run that reports
    # a failure at its position (the default) delivers every output before it.
    def fail_on_fifty(item: int) -> int:
        if item == 50:
            raise Boom("fifty")
        return item

    seen: list[int] = []

    def consume() -> None:
        stage = ResilientStage(FunctionStage(fail_on_fifty))
        seen.extend(Pipeline(stage, batch_size=64).stream(range(100)))

    with pytest.raises(StageError, match="failed on item 50: Boom: fifty"):
        consume()
    assert seen == list(range(50))


class Interrupted(BaseException):
    """Stands in for Ctrl-C or SystemExit raised by the user's code."""


@pytest.mark.parametrize("policy", ["raise", "skip", "collect"])
def test_a_base_exception_is_no_outcome_and_stops_the_run_under_any_policy(policy: Any) -> None:
    def interrupt_on_two(item: int) -> int:
        if item == 2:
            raise Interrupted("stop")
        return item

    stage = ResilientStage(
        FunctionStage(interrupt_on_two),
        on_error=policy,
        retry=RetryPolicy(max_attempts=3, base_delay=0, retry_on=BaseException),
    )
    with pytest.raises(StageError) as raised:
        Pipeline(stage).run(range(5))
    assert type(raised.value.__cause__) is Interrupted
    assert stage.statistics().retries == 0
