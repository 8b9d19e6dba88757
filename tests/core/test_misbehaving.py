"""User code that misbehaves must not hang a run, lose items silently, or leave a thread.

Each test here names a way user code can misbehave. Scenarios that could hang
the interpreter itself run in a subprocess with a timeout.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support import WAIT, Boom

from pipeline import (
    FilteringStage,
    FlatMapStage,
    Pipeline,
    PipelineClosed,
    PipelineStage,
    SafeQueue,
    ShutDown,
    StageError,
)
from pipeline.errors import describe, short_repr
from pipeline.resilience import ResilientStage
from pipeline.stages import FunctionStage
from pipeline.worker import current_stop_event


class Unprintable(Exception):
    """An exception whose __str__ and __repr__ themselves raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


class UnprintableItem:
    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


def identity(item: Any) -> Any:
    return item


def collect_until_failure(outputs: Iterator[Any], received: list[Any]) -> None:
    for output in outputs:
        received.append(output)


def run_python(code: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# 1. The failure path must never fail.


def test_describe_and_short_repr_never_raise() -> None:
    assert describe(Unprintable()) == "Unprintable: <str() failed>"
    assert short_repr(Unprintable()).startswith("<Unprintable instance at 0x")
    assert short_repr(UnprintableItem()).startswith("<UnprintableItem instance at 0x")


class TornDown(PipelineStage[int, int]):
    def __init__(self, fail_on: int, *, workers: int = 1) -> None:
        super().__init__(workers=workers)
        self.fail_on = fail_on
        self.torn_down = threading.Event()

    def process(self, item: int) -> int:
        if item == self.fail_on:
            raise Unprintable
        return item

    def teardown(self) -> None:
        self.torn_down.set()


@pytest.mark.parametrize("workers", [1, 3])
def test_an_exception_whose_str_raises_fails_the_run_and_tears_down(workers: int) -> None:
    stage = TornDown(fail_on=500, workers=workers)
    with pytest.raises(StageError) as raised:
        Pipeline(stage).run(range(1000))
    assert isinstance(raised.value.__cause__, Unprintable)
    assert "Unprintable: <str() failed>" in str(raised.value)
    assert stage.torn_down.is_set()


def test_an_unprintable_item_is_named_safely() -> None:
    def fail(item: object) -> object:
        raise Boom("no")

    with pytest.raises(StageError, match="on item <UnprintableItem instance at 0x"):
        Pipeline(FunctionStage(fail)).run([UnprintableItem()])


def test_a_source_raising_an_unprintable_exception_fails_the_run() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise Unprintable

    with pytest.raises(StageError) as raised:
        Pipeline(FunctionStage(identity, workers=2)).run(source())
    assert raised.value.stage == "source"


@pytest.mark.parametrize("phase", ["setup", "teardown"])
def test_an_unprintable_exception_in_setup_or_teardown_fails_the_run(phase: str) -> None:
    class Broken(PipelineStage[int, int]):
        def setup(self) -> None:
            if phase == "setup":
                raise Unprintable

        def teardown(self) -> None:
            if phase == "teardown":
                raise Unprintable

        def process(self, item: int) -> int:
            return item

    with pytest.raises(StageError, match=phase):
        Pipeline(Broken(workers=2)).run(range(10))


def test_skip_skips_an_item_whose_exception_cannot_be_printed() -> None:
    def fail_on_3(item: int) -> int:
        if item == 3:
            raise Unprintable
        return item

    stage = ResilientStage(FunctionStage(fail_on_3), on_error="skip")
    assert Pipeline(stage).run(range(6)) == [0, 1, 2, 4, 5]


# 2. Runs still going at interpreter exit are stopped, so the process exits.


@pytest.mark.parametrize(
    "ending",
    [
        "it = pipeline.stream(itertools.count()); next(it)",
        "for item in pipeline.stream(itertools.count()): raise ValueError('user code')",
        "def f():\n"
        "    for item in pipeline.stream(itertools.count()):\n"
        "        raise ValueError()\n"
        "f()",
    ],
    ids=["referenced-iterator", "raise-in-loop", "raise-in-function"],
)
def test_the_interpreter_exits_with_a_stream_still_referenced(ending: str) -> None:
    code = (
        "import itertools\n"
        "from pipeline import Pipeline\n"
        "from pipeline.stages import FunctionStage\n"
        "pipeline = Pipeline(FunctionStage(lambda x: x, workers=2))\n"
    ) + ending
    result = run_python(code)  # TimeoutExpired here is the hang
    if ending.startswith("it ="):
        assert result.stderr == ""  # nothing printed while the interpreter tears down
    else:
        assert "ValueError" in result.stderr
        assert "pipeline" not in result.stderr.split("ValueError")[-1]


# 3. A stream iterator collected inside one of its own run's threads.


def test_a_stream_collected_in_a_thread_of_its_own_run_stops_it_without_joining_itself() -> None:
    code = """
        import gc, itertools, sys, threading
        from pipeline import FunctionStage, Pipeline

        collect = threading.Event()

        def maybe_collect(item):
            if collect.is_set():
                collect.clear()
                gc.collect()
            return item

        problems = []
        threading.excepthook = lambda args: problems.append(repr(args.exc_value))
        sys.unraisablehook = lambda args: problems.append(repr(args.exc_value))
        gc.disable()
        pipeline = Pipeline(FunctionStage(maybe_collect), batch_size=1, queue_size=1)

        class Cycle:
            pass

        holder = Cycle()
        holder.self = holder
        holder.stream = pipeline.stream(itertools.count())
        next(holder.stream)
        del holder
        collect.set()
        pipeline.close()  # joins whatever the supervisor has not
        print("problems:", problems)
        print("threads left:", threading.active_count() - 1)
    """
    for _ in range(5):
        result = run_python(code)
        assert "problems: []" in result.stdout, result.stdout + result.stderr
        assert "threads left: 0" in result.stdout, result.stdout + result.stderr
        assert "cannot join current thread" not in result.stderr


# 4. Ctrl-C while a stop is joining threads.


def test_ctrl_c_during_close_waits_for_every_thread_even_pressed_twice() -> None:
    busy = threading.Event()
    release = threading.Event()
    delivered = threading.Semaphore(0)

    stop_events: list[threading.Event] = []

    def work(item: int) -> int:
        if item == 1:
            stopping = current_stop_event()
            assert stopping is not None
            stop_events.append(stopping)
            busy.set()
            release.wait(WAIT)
        return item

    def handler(signum: int, frame: object) -> None:
        delivered.release()
        raise KeyboardInterrupt

    pipeline = Pipeline(FunctionStage(work), batch_size=1)

    main = threading.main_thread().ident or 0

    def press_twice_then_release() -> None:
        """Press Ctrl-C twice while close() waits, then let the busy worker finish.

        A signal that lands just before the main thread blocks in a lock does not wake
        it, so each press is repeated until the handler has run, as a person would.
        """
        assert stop_events[0].wait(WAIT)  # close() has begun the stop
        for _ in range(2):
            for _ in range(int(WAIT / 0.01)):
                signal.pthread_kill(main, signal.SIGINT)
                if delivered.acquire(timeout=0.01):
                    break
            else:
                raise AssertionError("the main thread never took the Ctrl-C")
        release.set()

    presser = threading.Thread(target=press_twice_then_release)
    previous = signal.signal(signal.SIGINT, handler)
    stream = pipeline.stream(range(10))
    try:
        assert next(stream) == 0
        assert busy.wait(WAIT)
        run = pipeline._active
        assert run is not None
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            pipeline.close()
        # Re-raised only once every thread of the run had been joined.
        assert release.is_set()
        assert [thread.name for thread in run.threads if thread.is_alive()] == []
        assert pipeline._active is None
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
        presser.join(WAIT)
        stream.close()
        pipeline.close()


# 5. close() from inside the run.


def test_close_called_by_a_stage_stops_the_run_like_any_close() -> None:
    pipeline: Pipeline[int, int]

    def close_on_5(item: int) -> int:
        if item == 5:
            pipeline.close()
        return item

    pipeline = Pipeline(FunctionStage(close_on_5), batch_size=1)
    with pytest.raises(PipelineClosed):
        pipeline.run(itertools.count())
    pipeline.close()
    assert pipeline._active is None


def test_close_called_by_the_observer_stops_the_run_like_any_close() -> None:
    pipeline = Pipeline(FunctionStage(identity), batch_size=1, observer=lambda event: close())

    def close() -> None:
        pipeline.close()

    with pytest.raises(PipelineClosed):
        pipeline.run(itertools.count())


# 8. Say where a failure really happened.


def test_an_observer_failure_is_reported_as_the_observers() -> None:
    def observer(event: object) -> None:
        raise Boom("observer broke")

    with pytest.raises(StageError, match="in the pipeline's observer") as raised:
        Pipeline(FunctionStage(identity), observer=observer).run(range(3))
    assert raised.value.phase == "observer"
    assert isinstance(raised.value.__cause__, Boom)


def test_a_system_exit_in_a_stage_names_the_item() -> None:
    def exit_on_2(item: int) -> int:
        if item == 2:
            raise SystemExit(3)
        return item

    with pytest.raises(StageError, match="on item 2") as raised:
        Pipeline(FunctionStage(exit_on_2)).run(range(5))
    assert isinstance(raised.value.__cause__, SystemExit)


# 9. After close() returns, nothing more is delivered.


def test_nothing_is_delivered_after_close_returns() -> None:
    pipeline = Pipeline(FunctionStage(identity))
    stream = pipeline.stream(range(100_000))
    assert next(stream) == 0
    pipeline.close()
    with pytest.raises(PipelineClosed):
        next(stream)


# 10. A process() written with yield.


def test_a_process_written_with_yield_is_refused_pointing_to_flatmapstage() -> None:
    class Yielding(PipelineStage[int, int]):
        def process(self, item: int) -> Iterator[int]:  # type: ignore[override]
            yield item

    with pytest.raises(TypeError, match="FlatMapStage"):
        Yielding()


def test_a_generator_function_stage_is_refused_pointing_to_the_flat_map_stage() -> None:
    def expand(item: int) -> Iterator[int]:
        yield item

    with pytest.raises(TypeError, match="FlatMapFunctionStage"):
        FunctionStage(expand)


def test_flat_map_and_filtering_stages_are_not_mistaken_for_yielding_ones() -> None:
    class Twice(FlatMapStage[int, int]):
        def expand(self, item: int) -> Iterator[int]:
            yield item
            yield item

    class Even(FilteringStage[int]):
        def keep(self, item: int) -> bool:
            return item % 2 == 0

    assert Pipeline(Twice() >> Even()).run(range(4)) == [0, 0, 2, 2]


# 11. Names are unique in a pipeline.


def test_unnamed_stages_get_distinct_names_and_statistics() -> None:
    pipeline = Pipeline([FunctionStage(lambda x: x), FunctionStage(lambda x: x + 1)])
    assert pipeline.names == ("<lambda>", "<lambda>-2")
    assert pipeline.run(range(3)) == [1, 2, 3]
    stats = pipeline.stats()
    assert stats is not None
    assert stats.stage("<lambda>-2").items_in == 3


def test_two_stages_given_the_same_name_are_refused() -> None:
    with pytest.raises(ValueError, match=r"two stages are named 'parse' \(positions 0 and 2\)"):
        Pipeline(
            [
                FunctionStage(identity, name="parse"),
                FunctionStage(identity),
                FunctionStage(identity, name="parse"),
            ]
        )


# 7. A negative timeout on a shut-down queue, as Python 3.13's queue.Queue.


def test_a_negative_timeout_on_a_shut_down_queue_raises_shutdown() -> None:
    q = SafeQueue[int](2)
    q.shutdown()
    with pytest.raises(ShutDown):
        q.put(1, timeout=-1)
    with pytest.raises(ShutDown):
        q.get(timeout=-1)


# 14. What a consumer sees before a failure.


@pytest.mark.parametrize("workers", [1, 4])
def test_an_ordered_stream_delivers_every_output_before_the_failing_item(workers: int) -> None:
    def fail_on_50(item: int) -> int:
        if item == 50:
            raise Boom("item 50")
        return item * 2

    received: list[int] = []
    pipeline = Pipeline(FunctionStage(fail_on_50, workers=workers))
    with pytest.raises(StageError, match="on item 50"):
        collect_until_failure(pipeline.stream(range(1000)), received)
    assert received == [item * 2 for item in range(50)]


def test_a_failure_in_a_later_stage_comes_after_the_outputs_before_it() -> None:
    def fail_on_30(item: int) -> int:
        if item == 30:
            raise Boom("item 30")
        return item

    stages = [FunctionStage(identity, workers=2), FunctionStage(fail_on_30, workers=3)]
    received: list[int] = []
    with pytest.raises(StageError, match="on item 30"):
        collect_until_failure(Pipeline(stages, batch_size=4).stream(range(10_000)), received)
    assert received == list(range(30))


def test_a_source_failure_comes_after_the_items_read_before_it() -> None:
    def source() -> Iterator[int]:
        yield from range(20)
        raise Boom("source broke")

    received: list[int] = []
    pipeline = Pipeline(FunctionStage(identity, workers=2))
    with pytest.raises(StageError, match="source broke"):
        collect_until_failure(pipeline.stream(source()), received)
    assert received == list(range(20))


def test_fail_fast_stops_at_once_without_waiting_for_earlier_items() -> None:
    release = threading.Event()

    def slow_first(item: int) -> int:
        if item == 0:
            release.wait(WAIT)
        if item == 1:
            release.set()
            raise Boom("item 1")
        return item

    pipeline = Pipeline(FunctionStage(slow_first, workers=2), batch_size=1, fail_fast=True)
    with pytest.raises(StageError, match="on item 1"):
        pipeline.run(range(10))


def test_fail_fast_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="fail_fast must be a bool, got int"):
        Pipeline(FunctionStage(identity), fail_fast=1)  # type: ignore[call-overload]


def test_gc_of_a_finished_stream_in_a_worker_thread_is_harmless() -> None:
    with contextlib.closing(Pipeline(FunctionStage(identity)).stream(range(3))) as stream:
        assert list(stream) == [0, 1, 2]
    gc.collect()


class BrokenLink(SafeQueue[Any]):
    """A link queue whose batch put fails with something other than ShutDown."""

    def put_many(
        self, items: Any, block: bool = True, timeout: float | None = None, *, copy: bool = True
    ) -> None:
        raise RuntimeError("the link is broken")


@pytest.mark.parametrize("broken", ["FunctionStage", "results"])
def test_a_link_that_fails_stops_the_run_with_a_stage_error(broken: str) -> None:
    def make_queue(name: str, maxsize: int) -> SafeQueue[Any]:
        return BrokenLink(maxsize) if name == broken else SafeQueue[Any](maxsize)

    pipeline = Pipeline(FunctionStage(identity, name="FunctionStage"), queue_factory=make_queue)
    with pytest.raises(StageError, match="the link is broken") as raised:
        pipeline.run(range(10))
    assert raised.value.phase == "worker"


def test_queue_factory_gets_each_links_reader_and_size() -> None:
    made: list[tuple[str, int]] = []

    def make_queue(name: str, maxsize: int) -> SafeQueue[Any]:
        made.append((name, maxsize))
        return SafeQueue[Any](maxsize)

    stages = [FunctionStage(identity, name="a"), FunctionStage(identity, name="b")]
    assert Pipeline(stages, queue_size=7, queue_factory=make_queue).run(range(3)) == [0, 1, 2]
    assert made == [("a", 7), ("b", 7), ("results", 7)]
