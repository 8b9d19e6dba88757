"""Tests for RetryPolicy: the backoff it computes, and retries applied by ResilientStage.

Backoffs that matter for timing are 30 s long and must be cut short by the run's stop
event; the tests bound every wait and never sleep for correctness.
"""

from __future__ import annotations

import dataclasses
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WAIT, interrupt_when_ready

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.resilience import TRANSIENT_ERRORS, ItemTimeout
from pipeline.resilience.resilient import ResilientStage
from pipeline.resilience.retry import RetryPolicy
from pipeline.stages import FunctionStage


class LongestDelay(random.Random):
    """A jitter source that always picks the longest delay of the window."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Flaky(PipelineStage[int, int]):
    """Fail each item in `flaky` with `error` on its first `failures` attempts."""

    def __init__(
        self, flaky: set[int], failures: int, error: type[Exception], *, workers: int = 1
    ) -> None:
        super().__init__(workers=workers)
        self.flaky = flaky
        self.failures = failures
        self.error = error
        self.lock = threading.Lock()
        self.attempts: dict[int, int] = {}

    def process(self, item: int) -> int:
        with self.lock:
            attempt = self.attempts[item] = self.attempts.get(item, 0) + 1
        if item in self.flaky and attempt <= self.failures:
            raise self.error(f"attempt {attempt} at {item}")
        return item


# The policy's arithmetic.


def test_the_backoff_window_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    windows = [policy.backoff_window(retry) for retry in range(1, 7)]
    assert windows == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.backoff_window(100_000) == 1.0  # no overflow far past the cap


def test_delays_use_full_jitter_over_the_whole_window() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, rng=random.Random(7))
    delays = [policy.delay(3) for _ in range(2000)]
    assert all(0.0 <= delay <= 0.4 for delay in delays)
    assert min(delays) < 0.01
    assert max(delays) > 0.39
    assert 0.18 < sum(delays) / len(delays) < 0.22  # uniform: the mean is half the window


def test_the_same_seed_gives_the_same_delays() -> None:
    first = RetryPolicy(rng=random.Random(42))
    second = RetryPolicy(rng=random.Random(42))
    assert [first.delay(n) for n in range(1, 9)] == [second.delay(n) for n in range(1, 9)]


def test_only_the_listed_errors_are_retried_and_only_within_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, retry_on=(ConnectionError, TimeoutError))
    assert policy.should_retry(ConnectionRefusedError(), 1)  # a subclass counts
    assert policy.should_retry(TimeoutError(), 2)
    assert not policy.should_retry(TimeoutError(), 3)
    assert not policy.should_retry(ValueError(), 1)


def test_a_single_exception_type_is_accepted_for_retry_on() -> None:
    policy = RetryPolicy(retry_on=OSError)
    assert policy.retry_on == (OSError,)


@pytest.mark.parametrize(
    "retry_on",
    [
        [ConnectionError, TimeoutError],
        (ConnectionError, TimeoutError),
        (kind for kind in (ConnectionError, TimeoutError)),
        {ConnectionError: "refused", TimeoutError: "slow"},
    ],
    ids=["list", "tuple", "generator", "dict"],
)
def test_any_iterable_of_exception_types_is_kept_as_a_tuple(retry_on: Any) -> None:
    policy = RetryPolicy(retry_on=retry_on)
    assert policy.retry_on == (ConnectionError, TimeoutError)
    assert policy.should_retry(TimeoutError(), 1)
    assert not policy.should_retry(ValueError(), 1)


def test_a_policy_is_still_a_frozen_dataclass_that_replace_can_copy() -> None:
    policy = RetryPolicy(max_attempts=2, retry_on=[OSError])
    copy = dataclasses.replace(policy, max_attempts=5)
    assert (copy.max_attempts, copy.retry_on) == (5, (OSError,))
    assert policy == RetryPolicy(max_attempts=2, retry_on=OSError)
    assert repr(policy) == (
        "RetryPolicy(max_attempts=2, base_delay=0.1, max_delay=30.0, multiplier=2.0, "
        "retry_on=(<class 'OSError'>,))"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts must be >= 1, got 0"),
        ({"max_attempts": 2.0}, TypeError, "max_attempts must be an int, got float"),
        ({"base_delay": -1}, ValueError, "base_delay must be >= 0 seconds and finite, got -1"),
        (
            {"max_delay": float("nan")},
            ValueError,
            "max_delay must be >= 0 seconds and finite, got nan",
        ),
        (
            {"max_delay": float("inf")},
            ValueError,
            "max_delay must be >= 0 seconds and finite, got inf",
        ),
        ({"multiplier": float("inf")}, ValueError, "multiplier must be finite, got inf"),
        ({"multiplier": float("nan")}, ValueError, "multiplier must be >= 1, got nan"),
        ({"base_delay": "1"}, TypeError, "base_delay must be a number, got str"),
        (
            {"base_delay": 2, "max_delay": 1},
            ValueError,
            "max_delay must be >= base_delay, got max_delay=1 and base_delay=2",
        ),
        ({"multiplier": 0.5}, ValueError, "multiplier must be >= 1, got 0.5"),
        ({"retry_on": ()}, ValueError, "retry_on must hold at least one exception class, got ()"),
        ({"retry_on": []}, ValueError, "retry_on must hold at least one exception class, got []"),
        (
            {"retry_on": (ValueError, 3)},
            TypeError,
            "retry_on must hold exception classes, got 3 (int)",
        ),
        (
            {"retry_on": [ValueError, "OSError"]},
            TypeError,
            "retry_on must hold exception classes, got 'OSError' (str)",
        ),
        (
            {"retry_on": [ValueError, int]},
            TypeError,
            "retry_on must hold exception classes, got int, which is not a BaseException subclass",
        ),
        (
            {"retry_on": int},
            TypeError,
            "retry_on must hold exception classes, got int, which is not a BaseException subclass",
        ),
        (
            {"retry_on": 3},
            TypeError,
            "retry_on must be an exception class or an iterable of them, got int 3",
        ),
        (
            {"retry_on": "ValueError"},
            TypeError,
            "retry_on must be an exception class or an iterable of them, got str 'ValueError'",
        ),
        ({"rng": 42}, TypeError, "rng must be a random.Random or None, got int"),
    ],
)
def test_bad_retry_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        RetryPolicy(**kwargs)


# Retries in a pipeline.


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("batch_size", [1, 64])
def test_retried_items_succeed_and_keep_their_place_in_order(workers: int, batch_size: int) -> None:
    flaky = Flaky(set(range(0, 500, 7)), failures=2, error=ConnectionError, workers=workers)
    stage = ResilientStage(flaky, retry=RetryPolicy(max_attempts=3, base_delay=0))
    assert Pipeline(stage, queue_size=16, batch_size=batch_size).run(range(500)) == list(range(500))
    assert stage.statistics().retries == 2 * len(flaky.flaky)
    assert all(flaky.attempts[item] == 3 for item in flaky.flaky)


def test_a_list_for_retry_on_retries_in_a_run_under_skip() -> None:
    # A list once reached isinstance() in the worker, whose TypeError stopped the run.
    flaky = Flaky({3}, failures=1, error=ConnectionError)
    stage = ResilientStage(
        flaky,
        on_error="skip",
        retry=RetryPolicy(max_attempts=2, base_delay=0, retry_on=[ConnectionError]),
    )
    assert Pipeline(stage).run(range(6)) == list(range(6))
    assert (stage.statistics().retries, stage.statistics().items_skipped) == (1, 0)


def test_an_error_not_listed_in_retry_on_is_not_retried() -> None:
    flaky = Flaky({3}, failures=1, error=ValueError)
    stage = ResilientStage(
        flaky,
        on_error="collect",
        retry=RetryPolicy(max_attempts=5, base_delay=0, retry_on=(ConnectionError,)),
    )
    assert Pipeline(stage).run(range(6)) == [0, 1, 2, 4, 5]
    assert stage.dead_letters is not None
    [letter] = stage.dead_letters.snapshot()
    assert (letter.item, letter.attempts, str(letter.error)) == (3, 1, "attempt 1 at 3")
    assert flaky.attempts[3] == 1


def test_an_item_that_keeps_failing_is_given_up_after_max_attempts() -> None:
    flaky = Flaky({3}, failures=100, error=ConnectionError)
    stage = ResilientStage(
        flaky, on_error="collect", retry=RetryPolicy(max_attempts=4, base_delay=0)
    )
    assert Pipeline(stage).run(range(6)) == [0, 1, 2, 4, 5]
    assert stage.dead_letters is not None
    [letter] = stage.dead_letters.snapshot()
    assert (letter.item, letter.attempts, str(letter.error)) == (3, 4, "attempt 4 at 3")
    assert stage.statistics().retries == 3


def test_under_raise_the_last_attempt_error_stops_the_run_naming_the_item() -> None:
    flaky = Flaky({3}, failures=100, error=ConnectionError)
    stage = ResilientStage(flaky, retry=RetryPolicy(max_attempts=2, base_delay=0))
    with pytest.raises(StageError) as raised:
        Pipeline(stage).run(range(6))
    assert str(raised.value) == "stage 'Flaky' failed on item 3: ConnectionError: attempt 2 at 3"
    assert isinstance(raised.value.__cause__, ConnectionError)


def test_a_30_second_backoff_ends_at_once_when_another_part_of_the_run_fails() -> None:
    backing_off = threading.Event()

    def fail_once_then_signal(item: int) -> int:
        backing_off.set()
        raise ConnectionError("service down")

    def source() -> Iterator[int]:
        yield 1
        if not backing_off.wait(WAIT):
            raise TimeoutError("the stage never failed")
        raise OSError("the source broke during the backoff")

    stage = ResilientStage(
        FunctionStage(fail_once_then_signal),
        retry=RetryPolicy(max_attempts=2, base_delay=30, max_delay=30, rng=LongestDelay()),
    )
    started = time.monotonic()
    with pytest.raises(StageError, match="the source broke during the backoff"):
        Pipeline(stage, batch_size=1, fail_fast=True).run(source())
    assert time.monotonic() - started < WAIT  # far below the 30 s backoff: it was cut short


def test_ctrl_c_during_a_30_second_backoff_stops_at_once_leaving_no_thread() -> None:
    """A real SIGINT to benchmarks/ctrl_c_backoff.py, which times the stop it causes.

    How fast is measured by `benchmarks/ctrl_c_backoff.py --measure N`; here the bound
    only proves the backoff was cut short rather than waited out.
    """
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "ctrl_c_backoff.py"
    returncode, stdout, stderr = interrupt_when_ready([str(script)], ready="backing off")
    assert returncode == 0, stderr
    stopped, threads = stdout.strip().splitlines()
    assert float(stopped.removeprefix("stopped after ").removesuffix(" s")) < WAIT
    assert threads == "threads left: 0"


def test_the_default_policy_retries_only_transient_errors() -> None:
    # Before, RetryPolicy() retried every Exception, a ValueError from bad data too.
    policy = RetryPolicy()
    assert policy.retry_on == TRANSIENT_ERRORS == (TimeoutError, ConnectionError)
    assert policy.should_retry(TimeoutError(), 1)
    assert policy.should_retry(ConnectionResetError(), 1)
    assert policy.should_retry(ItemTimeout("slow"), 1)
    assert not policy.should_retry(ValueError("bad data"), 1)
    assert not policy.should_retry(KeyError("missing"), 1)


def test_a_value_error_is_not_retried_by_default_in_a_run() -> None:
    flaky = Flaky({3}, failures=1, error=ValueError)
    stage = ResilientStage(flaky, on_error="collect", retry=RetryPolicy(base_delay=0))
    assert Pipeline(stage).run(range(6)) == [0, 1, 2, 4, 5]
    assert flaky.attempts[3] == 1
    assert stage.statistics().retries == 0
