"""Tests for Pipeline: results, order, backpressure, failure, early stop and Ctrl-C.

Every run must end with no thread left behind (the conftest fails a test that leaks
one). Concurrency is coordinated with events, never with sleeps.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import itertools
import logging
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import WAIT, Boom, Lifecycle, interrupt_when_ready

from pipeline import (
    Pipeline,
    PipelineClosed,
    PipelineError,
    PipelineStage,
    SafeQueue,
    ShutDown,
    StageError,
)
from pipeline.batching import next_batch_size
from pipeline.demos import AddStage, FilterStage, MultiplyStage
from pipeline.stages import FlatMapFunctionStage, FunctionStage, PredicateStage
from pipeline.worker import REORDER_BATCHES_PER_WORKER, StageRun, ToQueue, current_stop_event


def identity(item: Any) -> Any:
    return item


class FailOn(PipelineStage[int, int]):
    """Pass items through, raising `error` on `bad_item`."""

    def __init__(self, bad_item: int, error: Exception, *, workers: int = 1) -> None:
        super().__init__(workers=workers)
        self.bad_item = bad_item
        self.error = error

    def process(self, item: int) -> int:
        if item == self.bad_item:
            raise self.error
        return item


# Results and order.


def test_run_returns_every_output() -> None:
    assert Pipeline(MultiplyStage() >> AddStage() >> FilterStage()).run(range(1, 6)) == [
        12,
        14,
        16,
        18,
        20,
    ]


def test_empty_input_gives_empty_output() -> None:
    assert Pipeline(MultiplyStage()).run([]) == []
    assert list(Pipeline(MultiplyStage()).stream(iter([]))) == []


def test_none_and_falsy_items_pass_through_as_data() -> None:
    items: list[object] = [None, 0, "", [], False, (), 0.0, None]
    assert Pipeline(FunctionStage(identity) >> FunctionStage(identity)).run(items) == items


def test_a_sequence_of_stages_works_like_a_chain() -> None:
    assert Pipeline([MultiplyStage(), AddStage()]).run([1, 2]) == [12, 14]


@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize("batch_size", [1, 7, 1024])
def test_order_is_preserved_with_several_workers(workers: int, batch_size: int) -> None:
    chain = (
        FunctionStage[int, int](lambda x: x * 3, workers=workers)
        >> PredicateStage[int](lambda x: x % 2 == 0, workers=workers)
        >> FlatMapFunctionStage[int, int](lambda x: [x, -x], workers=workers)
    )
    expected = [y for x in range(5000) if x * 3 % 2 == 0 for y in (x * 3, -x * 3)]
    pipeline = Pipeline(chain, queue_size=64, batch_size=batch_size)
    assert pipeline.run(range(5000)) == expected


class FirstWaitsForSecond(PipelineStage[int, int]):
    """Item 0 cannot finish until item 1 has: forces completion out of input order."""

    def __init__(self) -> None:
        super().__init__(workers=2)
        self.second_done = threading.Event()

    def process(self, item: int) -> int:
        if item == 0 and not self.second_done.wait(WAIT):
            raise TimeoutError("item 1 never finished")
        if item == 1:
            self.second_done.set()
        return item


def test_outputs_keep_input_order_even_when_items_finish_out_of_order() -> None:
    assert Pipeline(FirstWaitsForSecond(), batch_size=1).run([0, 1, 2]) == [0, 1, 2]


def test_unordered_pipelines_deliver_in_completion_order() -> None:
    outputs = Pipeline(FirstWaitsForSecond(), batch_size=1, ordered=False).run([0, 1])
    assert outputs == [1, 0]


def test_a_pipeline_can_run_again_after_a_run_ends() -> None:
    pipeline = Pipeline(MultiplyStage())
    assert pipeline.run([1]) == [2]
    assert pipeline.run([2, 3]) == [4, 6]


@settings(max_examples=25, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["map", "filter", "flat"]), min_size=1, max_size=4),
    workers=st.lists(st.integers(min_value=1, max_value=3), min_size=4, max_size=4),
    queue_size=st.integers(min_value=1, max_value=50),
    batch_size=st.integers(min_value=1, max_value=64),
    items=st.lists(st.integers(min_value=-1000, max_value=1000), max_size=300),
)
def test_any_chain_gives_the_sequential_result(
    kinds: list[str], workers: list[int], queue_size: int, batch_size: int, items: list[int]
) -> None:
    functions: dict[str, Callable[[list[int]], list[int]]] = {
        "map": lambda xs: [x + 1 for x in xs],
        "filter": lambda xs: [x for x in xs if x % 3 != 0],
        "flat": lambda xs: [y for x in xs for y in (x, x)],
    }
    stages: list[PipelineStage[Any, Any]] = []
    expected = items
    for kind, count in zip(kinds, workers, strict=False):
        expected = functions[kind](expected)
        if kind == "map":
            stages.append(FunctionStage[int, int](lambda x: x + 1, workers=count))
        elif kind == "filter":
            stages.append(PredicateStage[int](lambda x: x % 3 != 0, workers=count))
        else:
            stages.append(FlatMapFunctionStage[int, int](lambda x: (x, x), workers=count))
    assert Pipeline(stages, queue_size=queue_size, batch_size=batch_size).run(items) == expected


# Streaming and backpressure.


def test_stream_yields_results_of_an_infinite_source_and_stops_on_break() -> None:
    pulled = itertools.count()
    source = (next(pulled) for _ in itertools.count())
    outputs = []
    for output in Pipeline(MultiplyStage(), queue_size=16, batch_size=4).stream(source):
        outputs.append(output)
        if len(outputs) == 100:
            break
    assert outputs == [2 * n for n in range(100)]


@pytest.mark.parametrize(
    ("size", "taken", "elapsed", "expected"),
    [
        (1, 1, 0.0001, 2),  # fast and full: grow
        (512, 512, 0.0001, 1024),
        (4096, 4096, 0.0001, 4096),  # never past the largest batch
        (8, 3, 0.0001, 8),  # the queue held fewer: nothing learned
        (8, 8, 0.003, 8),  # about on target: keep
        (8, 8, 0.05, 4),  # slow (a slow source or stage): shrink, so items flow
        (1, 1, 0.05, 1),  # never below one
    ],
)
def test_batches_grow_while_work_is_fast_and_shrink_when_it_is_slow(
    size: int, taken: int, elapsed: float, expected: int
) -> None:
    assert next_batch_size(size, taken, elapsed, max_size=4096) == expected


def test_a_source_waiting_on_its_own_outputs_works_with_batch_size_one() -> None:
    """A request/response source: each item is produced once the previous output is seen."""
    may_produce = [threading.Event() for _ in range(4)]

    def source() -> Iterator[int]:
        for index, event in enumerate(may_produce):
            if not event.wait(WAIT):
                raise TimeoutError("the consumer never asked for more")
            yield index

    may_produce[0].set()
    outputs = []
    for output in Pipeline(FunctionStage(identity), batch_size=1).stream(source()):
        outputs.append(output)
        if len(outputs) < len(may_produce):
            may_produce[len(outputs)].set()
    assert outputs == [0, 1, 2, 3]


def pipeline_bound(queue_size: int, batch_size: int, workers: int) -> int:
    stages = [FunctionStage(identity, workers=workers) for _ in range(3)]
    return Pipeline(stages, queue_size=queue_size, batch_size=batch_size).max_items_in_flight


@pytest.mark.parametrize(
    ("queue_size", "batch_size", "workers"), [(1, 1, 1), (8, 4, 2), (50, 16, 3)]
)
def test_items_in_flight_stay_under_the_bound_with_a_slow_last_stage(
    queue_size: int, batch_size: int, workers: int
) -> None:
    """Backpressure: a slow consumer keeps the source from racing ahead."""
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for item in range(2000):
            pulled += 1
            yield item

    stages = [FunctionStage(identity, workers=workers) for _ in range(3)]
    # The feeder's chunk, every link, each worker's batch and each stage's reorder
    # window of finished batches, and the consumer's batch.
    window = REORDER_BATCHES_PER_WORKER * workers if workers > 1 else 0
    bound = batch_size + 4 * queue_size + 3 * (workers + window) * batch_size + batch_size
    assert pipeline_bound(queue_size, batch_size, workers) == bound
    most_in_flight = 0
    pipeline = Pipeline(stages, queue_size=queue_size, batch_size=batch_size)
    slow_down = threading.Event()
    for consumed, _ in enumerate(pipeline.stream(source()), start=1):
        slow_down.wait(0.0002)  # The slow last stage: the consumer does the slow work.
        most_in_flight = max(most_in_flight, pulled - consumed)
        assert pulled - consumed <= bound
    assert pulled == 2000
    assert most_in_flight > 0


def test_a_blocked_consumer_blocks_the_source_once_the_queues_are_full() -> None:
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for item in itertools.count():
            pulled += 1
            yield item

    pipeline = Pipeline(FunctionStage(identity), queue_size=10, batch_size=5)
    stream = pipeline.stream(source())
    assert next(stream) == 0
    with pipeline:
        pass  # Leaving the block stops the run (the consumer never reads on).
    bound = 5 + 2 * 10 + 5 + 5
    assert pulled <= bound + 1


# Failure.


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("bad_item", [0, 999])
@pytest.mark.parametrize("queue_size", [1, 4096])
@pytest.mark.parametrize("workers", [1, 3])
def test_a_failing_stage_raises_stage_error_chained_to_the_original(
    position: str, bad_item: int, queue_size: int, workers: int
) -> None:
    original = Boom(f"bad item {bad_item}")
    failing = FailOn(bad_item, original, workers=workers)
    stages: list[PipelineStage[Any, Any]] = [FunctionStage(identity) for _ in range(2)]
    stages.insert({"first": 0, "middle": 1, "last": 2}[position], failing)
    with pytest.raises(StageError) as raised:
        Pipeline(stages, queue_size=queue_size).run(range(1000))
    error = raised.value
    assert error.stage == "FailOn"
    assert error.phase == "process"
    assert error.has_item
    assert error.item == bad_item
    assert error.__cause__ is original
    assert error.__cause__.__traceback__ is not None
    assert str(error) == f"stage 'FailOn' failed on item {bad_item}: Boom: bad item {bad_item}"


def test_a_failure_while_upstream_is_blocked_on_full_queues_does_not_hang() -> None:
    failing = FailOn(50, Boom("late"))
    pipeline = Pipeline(FunctionStage[int, int](identity) >> failing, queue_size=1, batch_size=1)
    with pytest.raises(StageError) as raised:
        pipeline.run(itertools.count())
    assert raised.value.item == 50


def test_a_failing_source_raises_stage_error_naming_the_source() -> None:
    original = Boom("the file vanished")

    def source() -> Iterator[int]:
        yield 1
        raise original

    with pytest.raises(StageError) as raised:
        Pipeline(MultiplyStage()).run(source())
    assert raised.value.stage == "source"
    assert raised.value.phase == "source"
    assert not raised.value.has_item
    assert raised.value.__cause__ is original
    assert str(raised.value) == (
        "stage 'source' failed while reading the source iterable: Boom: the file vanished"
    )


def test_a_failure_surfaces_from_stream_too() -> None:
    with pytest.raises(StageError) as raised:
        for _ in Pipeline(FailOn(3, Boom("three"))).stream(range(10)):
            pass
    assert raised.value.item == 3


@pytest.mark.parametrize("phase", ["setup", "teardown"])
def test_a_failing_setup_or_teardown_raises_stage_error_naming_the_worker(phase: str) -> None:
    stage = Lifecycle(phase, workers=2)
    with pytest.raises(StageError) as raised:
        Pipeline(FunctionStage[int, int](identity) >> stage).run(range(100))
    assert raised.value.phase == phase
    assert raised.value.stage == "Lifecycle"
    assert isinstance(raised.value.__cause__, Boom)
    assert f"failed in {phase}(): worker " in str(raised.value)


def test_teardown_runs_for_every_worker_even_after_a_failure() -> None:
    stage = Lifecycle("nothing", workers=3)
    with pytest.raises(StageError):
        Pipeline(stage >> FailOn(5, Boom("five"))).run(range(100))
    assert stage.torn_down == 3


def test_a_failing_process_batch_override_names_the_stage_without_an_item() -> None:
    class Vectorised(PipelineStage[int, int]):
        def process_batch(self, items: list[int]) -> list[int]:
            raise Boom("bad batch")

    with pytest.raises(StageError) as raised:
        Pipeline(Vectorised()).run([1, 2])
    assert not raised.value.has_item
    assert str(raised.value) == "stage 'Vectorised' failed in process_batch(): Boom: bad batch"


def test_the_first_failure_wins_when_several_workers_fail() -> None:
    class AlwaysFails(PipelineStage[int, int]):
        def process(self, item: int) -> int:
            raise Boom(str(item))

    with pytest.raises(StageError) as raised:
        Pipeline(AlwaysFails(workers=4), batch_size=1).run(range(100))
    assert isinstance(raised.value.__cause__, Boom)


# Stopping early and closing.


def test_breaking_out_of_a_stream_stops_every_thread() -> None:
    pipeline = Pipeline(MultiplyStage(workers=2) >> AddStage(workers=2), queue_size=8)
    for output in pipeline.stream(itertools.count()):
        if output > 100:
            break
    # The conftest fails this test if any pipeline thread is still alive.


def test_closing_a_pipeline_stops_a_stream_that_is_kept() -> None:
    pipeline = Pipeline(MultiplyStage(), queue_size=4)
    stream = pipeline.stream(itertools.count())
    assert next(stream) == 0
    pipeline.close()
    pipeline.close()
    with pytest.raises(PipelineClosed, match="the pipeline was closed before its input ended"):
        list(stream)


def test_a_pipeline_runs_one_run_at_a_time() -> None:
    pipeline = Pipeline(MultiplyStage(), queue_size=4)
    with pipeline:
        first = pipeline.stream(itertools.count())
        next(first)
        with pytest.raises(PipelineError, match="this pipeline is already running"):
            pipeline.run([1])


def test_a_failure_met_ahead_of_an_early_stop_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Like Executor.map: stopping early raises nothing for items never asked for."""
    stream = Pipeline(Lifecycle("teardown")).stream(itertools.count())
    next(stream)
    with caplog.at_level(logging.WARNING, logger="pipeline.pipeline"):
        stream.close()
    [record] = caplog.records
    assert record.getMessage().startswith("a run its consumer stopped early had failed too")
    assert isinstance(record.exc_info and record.exc_info[1], StageError)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"queue_size": 0}, ValueError, "queue_size must be >= 1, got 0"),
        ({"batch_size": -1}, ValueError, "batch_size must be >= 1, got -1"),
        ({"queue_size": None}, TypeError, "queue_size must be an int, got NoneType"),
        ({"ordered": "no"}, TypeError, "ordered must be a bool, got str"),
    ],
)
def test_bad_pipeline_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Pipeline(MultiplyStage(), **kwargs)


@pytest.mark.parametrize("stages", [[], "abc", 3, [MultiplyStage(), "x"]])
def test_something_that_is_not_stages_is_rejected(stages: Any) -> None:
    with pytest.raises(TypeError, match="PipelineStage"):
        Pipeline(stages)


def test_a_source_that_is_not_iterable_is_rejected_at_once() -> None:
    with pytest.raises(TypeError, match="not iterable"):
        Pipeline(MultiplyStage()).run(5)  # type: ignore[arg-type]


# Ctrl-C: a real SIGINT to a process running a pipeline.

CTRL_C_SCRIPT = textwrap.dedent(
    """
    import itertools, sys, threading, time
    from pipeline import FunctionStage, Pipeline

    def slowish(item):
        time.sleep(0.001)  # the stage's own work
        return item

    pipeline = Pipeline(FunctionStage(slowish, workers=2) >> FunctionStage(slowish))
    try:
        for count, _ in enumerate(pipeline.stream(itertools.count())):
            if count == 10:
                print("running", flush=True)
    except KeyboardInterrupt:
        interrupted = time.monotonic()
        print("threads left:", threading.active_count() - 1, flush=True)
        sys.exit(0)
    sys.exit(3)
    """
)


def test_ctrl_c_stops_the_pipeline_and_leaves_no_thread() -> None:
    returncode, stdout, stderr = interrupt_when_ready(["-c", CTRL_C_SCRIPT], ready="running")
    assert returncode == 0, stderr
    assert stdout.strip() == "threads left: 0"


def _consume(items: Iterable[object]) -> None:
    for _ in items:
        pass


def test_a_worker_leaving_after_the_stop_began_passes_on_no_end_of_stream() -> None:
    """A stop sets the run's event before shutting any queue (results last), so a worker
    that leaves in between must not pass end of stream on: the consumer would take a
    stopped run for a finished one."""
    inbox, outbox = SafeQueue[Any](4), SafeQueue[Any](4)
    stopping = threading.Event()
    stage_run = StageRun(
        FunctionStage(identity),
        inbox,
        ToQueue(outbox),
        max_batch=1,
        ordered=True,
        on_failure=lambda error: None,
        stopping=stopping,
    )
    stopping.set()
    inbox.shutdown(immediate=True)  # The outbox is not shut down yet.
    stage_run.work(0)
    assert outbox.qsize() == 0


# Found in review (each of these failed before its fix).


def test_a_source_raising_shutdown_fails_the_run_instead_of_hanging() -> None:
    """A generator reading a queue that was shut down raises ShutDown: a source failure."""
    original = ShutDown()

    def source() -> Iterator[int]:
        yield 1
        raise original

    with pytest.raises(StageError) as raised:
        Pipeline(FunctionStage(identity), queue_size=4).run(source())
    assert raised.value.stage == "source"
    assert raised.value.__cause__ is original


@pytest.mark.parametrize("kind", ["map", "filter", "flat map"])
def test_a_stop_iteration_in_a_hook_is_an_error_not_a_short_batch(kind: str) -> None:
    def hook(item: int) -> Any:
        if item == 3:
            next(iter([]))  # a stray next() raises StopIteration
        return {"map": item, "filter": True, "flat map": [item]}[kind]

    stages: dict[str, PipelineStage[int, Any]] = {
        "map": FunctionStage(hook),
        "filter": PredicateStage(hook),
        "flat map": FlatMapFunctionStage(hook),
    }
    with pytest.raises(StageError) as raised:
        Pipeline(stages[kind]).run(range(10))
    assert raised.value.item == 3
    assert isinstance(raised.value.__cause__, StopIteration)


def test_a_process_batch_that_returns_no_list_is_an_error() -> None:
    class Forgetful(PipelineStage[int, int]):
        def process_batch(self, items: list[int]) -> list[int]:
            [item * 2 for item in items]  # forgot the return
            return None  # type: ignore[return-value]

    with pytest.raises(StageError, match=r"Forgetful.process_batch\(\) must return a list"):
        Pipeline(Forgetful()).run(range(10))


def test_a_pipeline_runs_again_after_close_while_a_stream_is_kept() -> None:
    with Pipeline(FunctionStage[int, int](lambda x: x + 1)) as pipeline:
        kept = pipeline.stream(itertools.count())
        assert next(kept) == 1
    assert pipeline.run([1, 2]) == [2, 3]
    with pytest.raises(PipelineClosed):
        list(kept)  # what it already held, then the news that the run was closed


def test_an_early_stop_after_an_unseen_failure_raises_and_prints_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop_events: list[threading.Event | None] = []
    taken = threading.Event()

    def note_the_stop_event(item: int) -> int:
        if not stop_events:
            stop_events.append(current_stop_event())
        return item

    def fail_on_fifty(item: int) -> int:
        if item == 50:
            taken.wait(WAIT)
            raise Boom("fifty")
        return item

    unraisable: list[object] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda info: unraisable.append(info.exc_value)
    chain = FunctionStage(note_the_stop_event) >> FunctionStage(fail_on_fifty)
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.pipeline"):
            for item in Pipeline(chain, queue_size=100, batch_size=1).stream(range(100)):
                assert item == 0
                taken.set()
                stopping = stop_events[0]
                assert stopping is not None
                assert stopping.wait(WAIT)  # set once the failure has been recorded
                break
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == []
    assert "fifty" in caplog.text


def test_close_from_another_thread_joins_every_thread_of_the_run() -> None:
    stages = [FunctionStage(identity, name=f"s{index}", workers=4) for index in range(8)]
    pipeline = Pipeline(stages, queue_size=2, batch_size=2)
    source_started = threading.Event()

    def source() -> Iterator[int]:
        source_started.set()  # the feeder thread is up; the others may still be starting
        yield from range(1000)

    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            pipeline.run(source())
        except PipelineClosed as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert source_started.wait(WAIT)
    pipeline.close()
    run = pipeline._latest
    assert run is not None
    # A thread close() returned before even starting was never waited for.
    assert [
        thread.name for thread in run.threads if thread.ident is None or thread.is_alive()
    ] == []
    consumer.join(WAIT)


def test_ctrl_c_while_an_early_stop_waits_for_a_busy_worker_reaches_the_caller() -> None:
    stop_events: list[threading.Event | None] = []
    busy = threading.Event()
    release = threading.Event()

    def work(item: int) -> int:
        if item == 1:
            stop_events.append(current_stop_event())
            busy.set()
            release.wait(WAIT)
        return item

    pipeline = Pipeline(FunctionStage(work), batch_size=1)

    def press_ctrl_c_during_the_stop() -> None:
        stopping = stop_events[0]
        if stopping is not None and stopping.wait(WAIT):
            _thread.interrupt_main()
        release.set()  # the Ctrl-C is re-raised once the busy worker has been joined

    presser = threading.Thread(target=press_ctrl_c_during_the_stop)

    def take_one_then_stop() -> None:
        with contextlib.closing(pipeline.stream(range(10))) as stream:
            assert next(stream) == 0
            assert busy.wait(WAIT)
            presser.start()

    try:
        with pytest.raises(KeyboardInterrupt):
            take_one_then_stop()
    finally:
        release.set()
        presser.join(WAIT)
        pipeline.close()
    assert pipeline._active is None
