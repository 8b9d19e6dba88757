"""Tests for per-item timeouts: the overrunning call, its helper thread, and the policies.

An overrunning call is made to wait on an Event that a later item sets, so it ends
deterministically; the conftest then proves that no helper thread outlives the run.
TIMEOUT is generous, so that a quick item never times out on a loaded machine.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import pytest

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.resilience import ItemTimeout
from pipeline.resilience.resilient import ResilientStage
from pipeline.resilience.retry import RetryPolicy
from pipeline.stages import FunctionStage

WAIT = 5.0
TIMEOUT = 0.25


class Stuck(PipelineStage[int, int]):
    """Overrun on `stuck_item` until `release_item` is processed (by a fresh helper thread).

    Without a release, the overrunning call ends by itself after `overrun_seconds`.

    Records which thread ran setup, process and teardown, to show that they share one.
    """

    def __init__(
        self,
        stuck_item: int,
        release_item: int,
        *,
        stuck_attempts: int = 1,
        overrun_seconds: float = WAIT,
    ) -> None:
        super().__init__()
        self.overrun_seconds = overrun_seconds
        self.overrun_released = False
        self.stuck_item = stuck_item
        self.release_item = release_item
        self.stuck_attempts = stuck_attempts
        self.release = threading.Event()
        self.overrun_finished = threading.Event()
        self.lock = threading.Lock()
        self.attempts = 0
        self.threads: dict[str, list[int]] = {"setup": [], "process": [], "teardown": []}

    def _record(self, hook: str) -> None:
        with self.lock:
            self.threads[hook].append(threading.get_ident())

    def setup(self) -> None:
        self._record("setup")
        self.local.helper = threading.get_ident()

    def teardown(self) -> None:
        assert self.local.helper == threading.get_ident()
        self._record("teardown")

    def process(self, item: int) -> int:
        self._record("process")
        assert self.local.helper == threading.get_ident()  # set up in this very thread
        if item == self.release_item:
            self.release.set()
        if item == self.stuck_item:
            with self.lock:
                self.attempts += 1
                stuck = self.attempts <= self.stuck_attempts
            if stuck:
                # The abandoned call's exceptions go nowhere, so record what happened.
                self.overrun_released = self.release.wait(self.overrun_seconds)
                self.overrun_finished.set()
        return item


def test_an_overrunning_item_fails_with_item_timeout_and_the_run_goes_on() -> None:
    stuck = Stuck(stuck_item=2, release_item=3)
    stage = ResilientStage(stuck, on_error="collect", timeout=TIMEOUT)
    assert Pipeline(stage, batch_size=1).run(range(6)) == [0, 1, 3, 4, 5]
    assert stage.dead_letters is not None
    [letter] = stage.dead_letters.snapshot()
    assert letter.item == 2
    assert isinstance(letter.error, ItemTimeout)
    assert isinstance(letter.error, TimeoutError)
    assert str(letter.error) == (
        "no result within the 0.25 s timeout (the call goes on in its helper thread until it "
        "returns)"
    )
    assert stage.statistics().timeouts == 1


def test_the_run_ends_only_after_the_overrunning_call_has_returned() -> None:
    stuck = Stuck(stuck_item=2, release_item=3)
    Pipeline(ResilientStage(stuck, on_error="skip", timeout=TIMEOUT), batch_size=1).run(range(6))
    assert stuck.overrun_finished.is_set()
    assert stuck.overrun_released


def test_each_helper_thread_runs_its_own_setup_and_teardown() -> None:
    stuck = Stuck(stuck_item=2, release_item=3)
    Pipeline(ResilientStage(stuck, on_error="skip", timeout=TIMEOUT), batch_size=1).run(range(6))
    setups, teardowns = stuck.threads["setup"], stuck.threads["teardown"]
    assert len(setups) == 2  # the first helper, and the fresh one after the timeout
    assert sorted(setups) == sorted(teardowns)
    assert set(stuck.threads["process"]) == set(setups)
    assert threading.get_ident() not in setups


def test_under_raise_a_timeout_stops_the_run_naming_the_item() -> None:
    # Nothing releases item 0: it is a call that takes 2 * TIMEOUT, which the run waits for.
    stuck = Stuck(stuck_item=0, release_item=-1, overrun_seconds=2 * TIMEOUT)
    with pytest.raises(StageError) as raised:
        Pipeline(ResilientStage(stuck, timeout=TIMEOUT), batch_size=1).run(range(3))
    assert str(raised.value) == (
        "stage 'Stuck' failed on item 0: ItemTimeout: no result within the 0.25 s timeout "
        "(the call goes on in its helper thread until it returns)"
    )
    assert isinstance(raised.value.__cause__, ItemTimeout)
    assert stuck.overrun_finished.is_set()


def test_a_timed_out_attempt_is_retried_in_a_fresh_helper_thread() -> None:
    stuck = Stuck(stuck_item=2, release_item=3, stuck_attempts=1)
    stage = ResilientStage(
        stuck,
        retry=RetryPolicy(max_attempts=2, base_delay=0, retry_on=(TimeoutError,)),
        timeout=TIMEOUT,
    )
    # The retry of item 2 runs in the fresh helper and returns at once; item 3 then
    # releases the first attempt, which is still running in the abandoned helper.
    assert Pipeline(stage, batch_size=1).run(range(5)) == [0, 1, 2, 3, 4]
    assert stage.statistics().retries == 1
    assert stuck.overrun_released


def test_a_timeout_error_raised_by_the_call_itself_is_not_a_timeout() -> None:
    class OwnTimeout(PipelineStage[int, int]):
        def process(self, item: int) -> int:
            raise TimeoutError("the service said it timed out")

    stage = ResilientStage(OwnTimeout(), on_error="collect", timeout=WAIT)
    assert Pipeline(stage).run([1]) == []
    assert stage.dead_letters is not None
    [letter] = stage.dead_letters.snapshot()
    assert type(letter.error) is TimeoutError
    assert stage.statistics().timeouts == 0


class FailingLifecycle(PipelineStage[int, int]):
    def __init__(self, phase: str) -> None:
        super().__init__(workers=2)
        self.phase = phase

    def setup(self) -> None:
        if self.phase == "setup":
            raise OSError("no connection")

    def teardown(self) -> None:
        if self.phase == "teardown":
            raise OSError("could not close")

    def process(self, item: int) -> int:
        return item


@pytest.mark.parametrize("phase", ["setup", "teardown"])
def test_a_lifecycle_failure_in_a_helper_thread_surfaces_naming_the_worker(phase: str) -> None:
    stage = ResilientStage(FailingLifecycle(phase), on_error="skip", timeout=WAIT)
    with pytest.raises(StageError) as raised:
        Pipeline(stage).run(range(10))
    assert raised.value.phase == phase
    assert re.fullmatch(
        rf"stage 'FailingLifecycle' failed in {phase}\(\): worker [01]: OSError: .*",
        str(raised.value),
    )


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (0, ValueError, "timeout must be > 0 seconds and finite, got 0"),
        (-1.5, ValueError, "timeout must be > 0 seconds and finite, got -1.5"),
        (float("nan"), ValueError, "timeout must be > 0 seconds and finite, got nan"),
        # An infinite wait makes threading's waits raise OverflowError inside the worker.
        (float("inf"), ValueError, "timeout must be > 0 seconds and finite, got inf"),
        ("1", TypeError, "timeout must be a number or None, got str"),
        (True, TypeError, "timeout must be a number or None, got bool"),
    ],
)
def test_bad_timeouts_are_rejected(timeout: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        ResilientStage(Stuck(0, 0), timeout=timeout)


class _Announced(logging.Handler):
    """Set `event` when the time limit says it waits at its bound."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for one to return" in record.getMessage():
            self.event.set()


def test_overrunning_calls_are_bounded_and_the_worker_waits_at_the_bound() -> None:
    # Before, each overrun left a helper thread behind without limit (96 threads for 200
    # calls of 1 s under a 10 ms timeout). Here every call hangs until released.
    release = threading.Event()
    at_bound, two_started = threading.Event(), threading.Event()
    started: list[int] = []
    alive_helpers: list[int] = []

    def hang(item: int) -> int:
        started.append(item)
        if len(started) == 2:
            two_started.set()
        alive_helpers.append(
            sum(1 for thread in threading.enumerate() if thread.name.startswith("pipeline-hang"))
        )
        release.wait(WAIT)
        return item

    stage = ResilientStage(
        FunctionStage(hang, name="hang"), on_error="collect", timeout=0.01, max_overrunning=2
    )
    handler = _Announced(at_bound)
    timeout_logger = logging.getLogger("pipeline.resilience.timeout")
    timeout_logger.addHandler(handler)
    outputs: list[list[int]] = []
    run = threading.Thread(
        target=lambda: outputs.append(Pipeline(stage, batch_size=1).run(range(20)))
    )
    run.start()
    try:
        assert at_bound.wait(WAIT)
        assert two_started.wait(WAIT)  # a call may start in its helper after its timeout
        assert started == [0, 1]  # two calls overran; the worker waits instead of a third
    finally:
        release.set()
        run.join()
        timeout_logger.removeHandler(handler)
    [result] = outputs
    assert stage.dead_letters is not None
    assert len(result) + len(stage.dead_letters) == 20
    assert max(alive_helpers) <= 1 + stage.max_overrunning  # the current helper + 2 abandoned


def test_max_overrunning_must_be_a_positive_int() -> None:
    with pytest.raises(ValueError, match=r"^max_overrunning must be >= 1, got 0$"):
        ResilientStage(Stuck(0, 0), timeout=1.0, max_overrunning=0)
