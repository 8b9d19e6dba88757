"""The fault matrix: every place a failure can happen, under every policy, ends cleanly.

For a fault in the source or in the first, middle or last stage; on the first, a middle
or the last item; with queues of size 1 and large; with 1 and 4 workers; under "raise",
"skip" and "collect": the run ends within a bound, no thread is left (the conftest),
and either the right StageError comes out, or the outputs, skipped items and dead
letters account for every input exactly:

    inputs == outputs + skipped + dead letters

Then the same law over random chains (hypothesis), and the two ways a consumer stops a
run early: `break`, and Ctrl-C as a real SIGINT.
"""

from __future__ import annotations

import random
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import WAIT, interrupt_when_ready

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.resilience.policy import DeadLetters, ErrorPolicy, check_error_policy
from pipeline.resilience.resilient import ResilientStage
from pipeline.resilience.retry import RetryPolicy
from pipeline.stages import FunctionStage

ITEMS = 200
POSITIONS = {"first": 0, "middle": ITEMS // 2, "last": ITEMS - 1}
STAGE_INDEX = {"first": 0, "middle": 1, "last": 2}

pytestmark = pytest.mark.timeout(30)


class Boom(Exception):
    """The injected fault."""


class Faulty(PipelineStage[int, int]):
    """Pass items through; raise Boom on the items in `faults`."""

    def __init__(self, name: str, faults: frozenset[int], *, workers: int) -> None:
        super().__init__(name, workers=workers)
        self.faults = faults

    def process(self, item: int) -> int:
        if item in self.faults:
            raise Boom(f"{self.name} failed on {item}")
        return item


def failing_source(bad_index: int) -> Iterator[int]:
    """Yield the items up to `bad_index`, then fail in place of it."""
    yield from range(bad_index)
    raise Boom(f"source failed at {bad_index}")


def build(
    location: str, bad_item: int, workers: int, policy: ErrorPolicy
) -> tuple[list[ResilientStage[int, int]], DeadLetters | None]:
    letters = DeadLetters() if policy == "collect" else None
    stages = []
    for index, name in enumerate(["first", "middle", "last"]):
        faults = frozenset({bad_item}) if STAGE_INDEX.get(location) == index else frozenset()
        stages.append(
            ResilientStage(
                Faulty(name, faults, workers=workers), on_error=policy, dead_letters=letters
            )
        )
    return stages, letters


@pytest.mark.parametrize("policy", ["raise", "skip", "collect"])
@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("queue_size", [1, 10_000])
@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("location", ["source", "first", "middle", "last"])
def test_fault_matrix(
    location: str, position: str, queue_size: int, workers: int, policy: ErrorPolicy
) -> None:
    bad_item = POSITIONS[position]
    stages, letters = build(location, bad_item, workers, policy)
    source = failing_source(bad_item) if location == "source" else iter(range(ITEMS))
    started = time.monotonic()
    if location == "source" or policy == "raise":
        # A failing source stops the run under every policy: there is no item to drop.
        with pytest.raises(StageError) as raised:
            Pipeline(stages, queue_size=queue_size).run(source)
        error = raised.value
        assert error.stage == location
        assert isinstance(error.__cause__, Boom)
        if location == "source":
            assert str(error) == (
                "stage 'source' failed while reading the source iterable: "
                f"Boom: source failed at {bad_item}"
            )
        else:
            assert str(error) == (
                f"stage '{location}' failed on item {bad_item}: "
                f"Boom: {location} failed on {bad_item}"
            )
    else:
        outputs = Pipeline(stages, queue_size=queue_size).run(source)
        skipped = sum(stage.statistics().items_skipped for stage in stages)
        dead = [] if letters is None else [letter.item for letter in letters]
        assert outputs == [item for item in range(ITEMS) if item != bad_item]
        assert len(outputs) + skipped + len(dead) == ITEMS
        if policy == "skip":
            assert (skipped, dead) == (1, [])
        else:
            assert (skipped, dead) == (0, [bad_item])
            assert letters is not None
            assert [letter.stage for letter in letters] == [location]
    assert time.monotonic() - started < WAIT


# The conservation law over random chains.


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    stage_count=st.integers(min_value=1, max_value=4),
    queue_size=st.integers(min_value=1, max_value=40),
    batch_size=st.integers(min_value=1, max_value=32),
    item_count=st.integers(min_value=0, max_value=150),
)
def test_random_chains_account_for_every_item(
    data: st.DataObject, stage_count: int, queue_size: int, batch_size: int, item_count: int
) -> None:
    letters = DeadLetters()
    stages: list[ResilientStage[int, int]] = []
    failed_so_far: set[int] = set()
    expected_skipped = 0
    expected_dead: set[int] = set()
    for index in range(stage_count):
        policy = check_error_policy(
            data.draw(st.sampled_from(["skip", "collect"]), label=f"policy {index}")
        )
        faults = data.draw(
            st.frozensets(st.integers(min_value=0, max_value=max(item_count - 1, 0))),
            label=f"faults {index}",
        )
        flaky = data.draw(st.booleans(), label=f"faults of stage {index} heal on retry")
        delay = data.draw(st.sampled_from([0.0, 0.0, 0.0005]), label=f"delay {index}")
        workers = data.draw(st.integers(min_value=1, max_value=3), label=f"workers {index}")
        stage = RandomStage(f"s{index}", faults, flaky=flaky, delay=delay, workers=workers)
        stages.append(
            ResilientStage(
                stage,
                on_error=policy,
                retry=RetryPolicy(max_attempts=2, base_delay=0, retry_on=Boom) if flaky else None,
                dead_letters=letters if policy == "collect" else None,
            )
        )
        if not flaky:
            newly_failed = (faults & set(range(item_count))) - failed_so_far
            failed_so_far |= newly_failed
            if policy == "skip":
                expected_skipped += len(newly_failed)
            else:
                expected_dead |= newly_failed
    outputs = Pipeline(stages, queue_size=queue_size, batch_size=batch_size).run(range(item_count))
    skipped = sum(stage.statistics().items_skipped for stage in stages)
    assert outputs == [item for item in range(item_count) if item not in failed_so_far]
    assert skipped == expected_skipped
    dead = [letter.item for letter in letters]
    assert len(dead) == len(set(dead))  # each failed item once
    assert set(dead) == expected_dead
    assert item_count == len(outputs) + skipped + letters.total


class RandomStage(PipelineStage[int, int]):
    """Pass items through, pausing `delay` s on some; the items in `faults` fail.

    With `flaky`, each fault fails on its first attempt only (a retry heals it).
    """

    def __init__(
        self, name: str, faults: frozenset[int], *, flaky: bool, delay: float, workers: int
    ) -> None:
        super().__init__(name, workers=workers)
        self.faults = faults
        self.flaky = flaky
        self.delay = delay
        self.pause = threading.Event()  # never set: waiting on it is the stage's own work
        self.lock = threading.Lock()
        self.failed_once: set[int] = set()

    def process(self, item: int) -> int:
        if self.delay and item % 7 == 0:
            self.pause.wait(self.delay)
        if item in self.faults:
            with self.lock:
                first_time = item not in self.failed_once
                self.failed_once.add(item)
            if first_time or not self.flaky:
                raise Boom(f"{self.name} failed on {item}")
        return item


# Stopping early: break, and Ctrl-C.


@pytest.mark.parametrize("policy", ["raise", "skip", "collect"])
@pytest.mark.parametrize("workers", [1, 4])
def test_breaking_out_of_a_stream_with_faults_stops_every_thread(
    policy: ErrorPolicy, workers: int
) -> None:
    # Items in flight stay under ~100 (queues of 8, batches of 8), so no fault is reached
    # before the break under "raise"; under the other policies, faults are dropped.
    faults = frozenset(range(1000, 5000, 97))
    if policy != "raise":
        faults |= {5, 105, 205}
    stages = [
        ResilientStage(Faulty(name, faults, workers=workers), on_error=policy)
        for name in ("a", "b")
    ]
    outputs = []
    started = time.monotonic()
    for output in Pipeline(stages, queue_size=8, batch_size=8).stream(iter(range(10**9))):
        outputs.append(output)
        if len(outputs) == 300:
            break
    assert outputs == [item for item in range(1000) if item not in faults][:300]
    assert time.monotonic() - started < WAIT


class LongestDelay(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def test_breaking_out_during_a_30_second_backoff_returns_at_once() -> None:
    backing_off = threading.Event()

    def fail_on_five(item: int) -> int:
        if item == 5:
            backing_off.set()
            raise ConnectionError("down")
        return item

    stage = ResilientStage(
        FunctionStage(fail_on_five),
        retry=RetryPolicy(max_attempts=2, base_delay=30, max_delay=30, rng=LongestDelay()),
    )
    pipeline = Pipeline(stage, batch_size=1)
    stream = pipeline.stream(range(10))
    outputs = []
    for output in stream:
        outputs.append(output)
        if output == 4:
            assert backing_off.wait(WAIT)
            break
    started = time.monotonic()
    pipeline.close()  # the way to stop a stream that is kept
    assert time.monotonic() - started < WAIT  # far below the 30 s backoff: it was cut short
    assert outputs == [0, 1, 2, 3, 4]


CTRL_C_WITH_FAULTS = textwrap.dedent(
    """
    import itertools, sys, threading, time
    from pipeline import Pipeline, PipelineStage
    from pipeline.resilience.resilient import ResilientStage
    from pipeline.resilience.retry import RetryPolicy

    class Faulty(PipelineStage):
        def process(self, item):
            time.sleep(0.0005)  # the stage's own work
            if item % 5 == 0:
                raise ConnectionError(item)
            return item

    stages = [
        ResilientStage(Faulty(workers=4), on_error="collect",
                       retry=RetryPolicy(max_attempts=3, base_delay=0.01)),
        ResilientStage(Faulty(workers=2), on_error="skip"),
    ]
    try:
        for count, _ in enumerate(Pipeline(stages, queue_size=16).stream(itertools.count())):
            if count == 20:
                print("running", flush=True)
    except KeyboardInterrupt:
        print("threads left:", threading.active_count() - 1, flush=True)
        sys.exit(0)
    sys.exit(3)
    """
)


def test_ctrl_c_stops_a_pipeline_with_retries_and_faults_leaving_no_thread() -> None:
    returncode, stdout, stderr = interrupt_when_ready(["-c", CTRL_C_WITH_FAULTS], ready="running")
    assert returncode == 0, stderr
    assert stdout.strip() == "threads left: 0"
