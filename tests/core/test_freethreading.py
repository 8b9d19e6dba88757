"""Free-threading: the GIL stays off, and shared state stays exact when threads truly overlap.

`make check-ft` runs this file on a free-threaded CPython 3.13 (3.13t) with `PYTHON_GIL=0`,
where threads run Python code at the same time; `make check` runs it on the GIL build,
where the `switch_often` fixture shrinks the switch interval to a microsecond so threads
interleave every few bytecodes. Each test hammers one piece of state that several threads
share (a queue, the dead letters, a failure budget, a breaker, a stage's statistics, the
source) and checks an exact count: without the GIL, a bare `count += 1` from four threads
loses a third of its updates, so a missing lock shows up as a wrong total here.

Threads start together at a Barrier; every wait is bounded and every thread is joined.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from pipeline import Pipeline, PipelineStage, SafeQueue, ShutDown
from pipeline.resilience.breaker import BreakerState, CircuitBreaker
from pipeline.resilience.errors import CircuitOpen, FailureBudgetExceeded
from pipeline.resilience.policy import DeadLetter, DeadLetters, ErrorPolicy, FailureBudget
from pipeline.resilience.resilient import ResilientStage
from pipeline.stages import FunctionStage

WAIT = 30.0  # generous: the machine is shared, and nothing here is timed
THREADS = 4

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
needs_free_threading = pytest.mark.skipif(
    not FREE_THREADED, reason="needs a free-threaded interpreter (make check-ft runs it)"
)

# Modules that cannot be imported in the free-threaded check's venv, each with the reason.
UNAVAILABLE_ON_313T = {
    "pipeline.native.compiled": "cffi cannot build the C stage on free-threaded 3.13",
    "pipeline.executors.dask_cluster": "dask[distributed] is not in the check's 3.13t venv",
}


def gil_enabled() -> bool:
    """Return whether the GIL is enabled now (always True on a build that has one)."""
    is_enabled: Callable[[], bool] = getattr(sys, "_is_gil_enabled", lambda: True)
    return is_enabled()


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    """On a GIL build, switch threads every microsecond instead of every 5 ms."""
    if FREE_THREADED:
        yield
        return
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def run_together(count: int, target: Callable[[int], None]) -> None:
    """Run `target(index)` in `count` threads released together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(WAIT)
            target(index)
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [
        threading.Thread(target=body, args=(index,), name=f"ft-{index}") for index in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not [thread.name for thread in threads if thread.is_alive()]
    if errors:
        raise errors[0]


# The GIL stays off.


IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import pipeline
report = {"pipeline": sys._is_gil_enabled(), "modules": {}, "unavailable": {}}
for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
    if info.name.endswith("__main__") or info.name == "pipeline.native._native":
        continue
    try:
        importlib.import_module(info.name)
    except ImportError as error:
        report["unavailable"][info.name] = str(error)
    else:
        report["modules"][info.name] = sys._is_gil_enabled()
print(json.dumps(report))
"""


@needs_free_threading
def test_importing_pipeline_and_every_extra_keeps_the_gil_disabled() -> None:
    """An extension module without the free-threading slot would turn the GIL back on.

    The import runs in a fresh interpreter without PYTHON_GIL (which would force the GIL
    off whatever is imported) and with warnings as errors, so a module that re-enables
    the GIL fails here instead of slowing every later test down silently.
    """
    environment = {key: value for key, value in os.environ.items() if key != "PYTHON_GIL"}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", IMPORT_EVERY_MODULE],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["pipeline"] is False
    assert {name for name, enabled in report["modules"].items() if enabled} == set()
    assert "pipeline.resilience.resilient" in report["modules"]
    assert "pipeline.observe.dashboard" in report["modules"]
    expected = UNAVAILABLE_ON_313T if sys.version_info < (3, 14) else {}
    assert set(report["unavailable"]) == set(expected), report["unavailable"]


@needs_free_threading
@pytest.mark.skipif(sys.version_info >= (3, 14), reason="cffi builds the C stage on 3.14t")
@pytest.mark.thread_unsafe(reason="a failed import seen by several threads at once differs")
def test_the_c_stage_says_why_it_is_missing_on_free_threaded_3_13() -> None:
    with pytest.raises(ImportError) as raised:
        import pipeline.native.compiled  # noqa: F401
    assert str(raised.value) == (
        "pipeline.native.compiled is not available on free-threaded Python 3.13: cffi "
        "cannot build the C core there (it supports free-threaded 3.14 and later); "
        "select the pure-Python reference explicitly "
        "(pipeline.native.reference.transform_reference)"
    )


def test_the_gil_is_off_in_the_free_threaded_check() -> None:
    """`make check-ft` sets PYTHON_GIL=0: the tests there must really run without the GIL."""
    if os.environ.get("PYTHON_GIL") != "0":
        pytest.skip("runs under PYTHON_GIL=0 (make check-ft)")
    assert FREE_THREADED
    assert not gil_enabled()


# Shared state, hammered.


def test_a_queue_shared_by_many_producers_and_consumers_delivers_each_item_once() -> None:
    queue = SafeQueue[int](maxsize=64)
    producers, per_producer = THREADS // 2, 5_000
    taken: list[list[int]] = [[] for _ in range(THREADS - producers)]
    # Guards `finished`, the producers done so far; the last one shuts the queue down, and
    # the consumers drain what is left before they get ShutDown.
    lock = threading.Lock()
    finished = 0

    def work(index: int) -> None:
        nonlocal finished
        if index >= producers:
            mine = taken[index - producers]
            while True:
                try:
                    mine.extend(queue.get_many(13, timeout=WAIT))
                except ShutDown:
                    return
        first, end = index * per_producer, (index + 1) * per_producer
        for start in range(first, end, 7):
            queue.put_many(list(range(start, min(start + 7, end))), timeout=WAIT)
        with lock:
            finished += 1
            last = finished == producers
        if last:
            queue.shutdown()

    run_together(THREADS, work)
    everything = Counter(item for mine in taken for item in mine)
    assert len(everything) == producers * per_producer
    assert set(everything.values()) == {1}
    for mine in taken:  # FIFO: each consumer sees each producer's items in order
        for producer in range(producers):
            theirs = [item for item in mine if item // per_producer == producer]
            assert theirs == sorted(theirs)


def test_dead_letters_appended_and_drained_by_many_threads_are_all_counted() -> None:
    letters = DeadLetters()
    per_thread = 30_000
    drained: list[DeadLetter] = []
    error = ValueError("bad")

    def work(index: int) -> None:
        if index == 0:
            for _ in range(1_000):
                drained.extend(letters.drain())
            return
        for item in range(per_thread):
            letters.append(DeadLetter("stage", (index, item), error, 1))

    run_together(THREADS, work)
    drained.extend(letters.drain())
    appended = (THREADS - 1) * per_thread
    assert letters.total == appended
    assert len(drained) == appended
    assert len({letter.item for letter in drained}) == appended
    assert len(letters) == 0


def test_a_shared_failure_budget_counts_every_item_and_failure() -> None:
    budget = FailureBudget(max_failures=10**9)
    per_thread = 20_000

    def work(index: int) -> None:
        for _ in range(per_thread):
            budget.record_items(2)
            budget.record_failure()

    run_together(THREADS, work)
    assert budget.items == 2 * THREADS * per_thread
    assert budget.failures == THREADS * per_thread


def test_a_budget_exceeded_by_racing_threads_stops_each_of_them_past_the_limit() -> None:
    budget = FailureBudget(max_failures=100)
    exceeded = [0] * THREADS  # each thread writes only its own slot

    def work(index: int) -> None:
        for _ in range(1_000):
            try:
                budget.record_failure()
            except FailureBudgetExceeded:
                exceeded[index] += 1

    run_together(THREADS, work)
    assert budget.failures == THREADS * 1_000
    assert sum(exceeded) == THREADS * 1_000 - 100  # failure 101 onwards


class SlowClock:
    """A fake clock that takes a moment to read: it widens the breaker's check-then-act window.

    The breaker reads the clock between seeing OPEN and turning HALF_OPEN. Under its lock
    the threads read it one at a time; without the lock, all of them would be inside that
    window at once, and each would be admitted as "the" trial.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self._never = threading.Event()

    def __call__(self) -> float:
        self._never.wait(0.0005)
        return self.now


def test_a_half_open_breaker_admits_exactly_one_trial_among_racing_threads() -> None:
    clock = SlowClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=clock)
    rounds = 60
    trials = [0] * THREADS  # each thread writes only its own slot
    between_rounds = threading.Barrier(
        THREADS, action=lambda: setattr(clock, "now", clock.now + 11)
    )
    with pytest.raises(ConnectionError):
        breaker.call(_refuse, 0)

    def work(index: int) -> None:
        for _ in range(rounds):
            between_rounds.wait(WAIT)  # the circuit is open and its timeout has passed
            try:
                permit = breaker.admit()
            except CircuitOpen:
                continue
            assert permit.trial
            trials[index] += 1
            breaker.record(permit, failed=True)  # open again until the next round

    run_together(THREADS, work)
    assert sum(trials) == rounds
    assert breaker.state is BreakerState.OPEN


def _refuse(value: int) -> int:
    raise ConnectionError(f"refused {value}")


def test_statistics_of_a_run_with_several_workers_per_stage_are_exact() -> None:
    """Each batch is counted once, with the sizes it had when its worker handled it.

    Found on 3.13t: a worker counted its outputs after handing the list downstream, and
    SafeQueue hands whole lists over uncopied, so a consumer that had already taken the
    list and extended it with the next batch made the count too large (items_out 20,012
    for 20,000 items in). Workers and the source now count before the hand-off.
    """
    items = 20_000
    for _ in range(5):
        chain = (
            FunctionStage[int, int](lambda item: item * 2, name="double", workers=THREADS)
            >> FunctionStage[int, int](lambda item: item + 1, name="add one", workers=THREADS)
            >> FunctionStage[int, int](lambda item: item, name="last", workers=2)
        )
        pipeline = Pipeline(chain, queue_size=32, batch_size=16)
        assert pipeline.run(range(items)) == [item * 2 + 1 for item in range(items)]
        stats = pipeline.stats()
        assert stats is not None
        assert stats.items_read == stats.items_delivered == items
        for stage in stats.stages:
            assert (stage.items_in, stage.items_out, stage.failed) == (items, items, 0)
            assert sum(stage.latency_counts) == items


class Flaky(PipelineStage[int, int]):
    def process(self, item: int) -> int:
        if item % 7 == 0:
            raise ValueError(f"bad {item}")
        return item


def test_a_resilient_stage_called_by_many_threads_counts_every_item_and_skip() -> None:
    stage = ResilientStage(Flaky(workers=THREADS), on_error="skip", log_every=10**9)
    per_thread = 20_000

    def work(index: int) -> None:
        for item in range(per_thread):
            stage.process_batch([item])

    run_together(THREADS, work)
    statistics = stage.statistics()
    assert statistics.items_in == THREADS * per_thread
    assert statistics.items_skipped == THREADS * len(range(0, per_thread, 7))


@pytest.mark.parametrize("on_error", ["skip", "collect"])
def test_a_resilient_stage_with_many_workers_accounts_for_every_item(
    on_error: ErrorPolicy,
) -> None:
    items = 10_000
    failing = len(range(0, items, 7))
    budget = FailureBudget(max_failures=items)
    stage = ResilientStage(Flaky(workers=THREADS), on_error=on_error, budget=budget)
    pipeline = Pipeline(stage, queue_size=16, batch_size=8, ordered=False)
    outputs = pipeline.run(range(items))
    assert sorted(outputs) == [item for item in range(items) if item % 7]
    statistics = stage.statistics()
    assert statistics.items_in == items
    assert budget.items == items
    assert budget.failures == failing
    stats = pipeline.stats()
    assert stats is not None
    counted = stats.stages[0]
    if on_error == "skip":
        assert (statistics.items_skipped, counted.extra["skipped"]) == (failing, failing)
    else:
        assert stage.dead_letters is not None
        assert (statistics.items_dead_lettered, counted.extra["dead_lettered"]) == (
            failing,
            failing,
        )
        assert {letter.item for letter in stage.dead_letters} == set(range(0, items, 7))


def test_the_source_is_read_by_one_thread_only() -> None:
    """Without the GIL a shared iterator has no once-only guarantee: only the feeder reads it."""
    readers: set[int] = set()

    def source() -> Iterator[int]:
        for item in range(5_000):
            readers.add(threading.get_ident())
            yield item

    chain = FunctionStage[int, int](lambda item: item, name="a", workers=THREADS) >> FunctionStage[
        int, int
    ](lambda item: item, name="b", workers=THREADS)
    assert Pipeline(chain, batch_size=8).run(source()) == list(range(5_000))
    assert len(readers) == 1
    assert threading.get_ident() not in readers


def test_pipelines_running_at_once_in_several_threads_do_not_mix_their_items() -> None:
    results: list[list[int]] = [[] for _ in range(THREADS)]

    def work(index: int) -> None:
        chain = FunctionStage[int, int](lambda item: item + index, workers=2) >> FunctionStage[
            int, int
        ](lambda item: item * 10, name="times ten", workers=2)
        results[index] = Pipeline(chain, queue_size=8, batch_size=4).run(range(2_000))

    run_together(THREADS, work)
    for index, outputs in enumerate(results):
        assert outputs == [(item + index) * 10 for item in range(2_000)]


ORDERED_RUNS = """
from pipeline import FlatMapFunctionStage, FunctionStage, Pipeline, PredicateStage
for attempt in range(20):
    chain = (
        FunctionStage(lambda x: x * 3, workers=4)
        >> PredicateStage(lambda x: x % 2 == 0, workers=4)
        >> FlatMapFunctionStage(lambda x: [x, -x], workers=4)
    )
    expected = [y for x in range(5000) if x * 3 % 2 == 0 for y in (x * 3, -x * 3)]
    assert Pipeline(chain, queue_size=64, batch_size=1).run(range(5000)) == expected
print("ok")
"""


@pytest.mark.thread_unsafe(reason="a subprocess that keeps every core busy on its own")
def test_ordered_runs_with_several_workers_never_strand_a_parked_batch() -> None:
    """The worker that stops emitting must not miss a batch parked just then.

    Found on 3.13t: the emitting worker found the next batch missing and released the
    lock, then cleared its "emitting" flag in a second step; a worker parking exactly
    that batch in between saw the flag still set and left it to the emitter, which was
    already leaving. Nobody emitted it, the reorder window filled, and the run hung.
    Runs in a subprocess, since the failure is a hang.
    """
    try:
        result = subprocess.run(
            [sys.executable, "-c", ORDERED_RUNS],
            capture_output=True,
            text=True,
            timeout=40,  # within pytest-timeout's 60 s
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("ordered runs with 4 workers hung: a parked batch was never emitted")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
