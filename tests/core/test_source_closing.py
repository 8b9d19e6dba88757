"""A run closes its source, in the thread that iterated it, before the call returns or raises."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
from support import WAIT, Boom, sigint_setting

from pipeline import Pipeline, PipelineClosed, StageError
from pipeline.graph import Graph
from pipeline.safequeue import SafeQueue
from pipeline.stages import FunctionStage


class Source:
    """A generator source that records where and how often its `finally` ran."""

    def __init__(self, count: int | None = None, *, fail_at: int | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.closed_in: list[str] = []
        self.iterated_in: set[str] = set()
        self.started = threading.Event()

    def __iter__(self) -> Generator[int]:
        return self.items()

    def items(self) -> Generator[int]:
        try:
            item = 0
            while self.count is None or item < self.count:
                self.iterated_in.add(threading.current_thread().name)
                if item == self.fail_at:
                    raise Boom("the source broke")
                self.started.set()
                yield item
                item += 1
        finally:
            self.closed_in.append(threading.current_thread().name)

    def closed_once_where_iterated(self) -> bool:
        return len(self.closed_in) == 1 and set(self.closed_in) == self.iterated_in


def doubling() -> Pipeline[int, int]:
    return Pipeline([FunctionStage(lambda x: x * 2, name="double")], batch_size=4)


def doubling_graph() -> Pipeline[int, int]:
    graph = Graph()
    graph.add(FunctionStage(lambda x: x * 2, name="double"))
    graph.add(FunctionStage(lambda x: x + 0, name="plus"), after="double")
    return graph.build(batch_size=4)


def raising_at(bad: int) -> Callable[[int], int]:
    def check(item: int) -> int:
        if item == bad:
            raise Boom(f"bad item {item}")
        return item

    return check


BUILDS = [pytest.param(doubling, id="chain"), pytest.param(doubling_graph, id="graph")]


@pytest.mark.parametrize("build", BUILDS)
def test_a_completed_run_has_closed_its_source(build: Callable[[], Pipeline[int, int]]) -> None:
    source = Source(10)
    assert sorted(build().run(source)) == [item * 2 for item in range(10)]
    assert source.closed_once_where_iterated()


@pytest.mark.parametrize("build", BUILDS)
def test_a_stream_broken_off_has_closed_its_source_when_the_break_returns(
    build: Callable[[], Pipeline[int, int]],
) -> None:
    source = Source()  # endless
    pipeline = build()
    for _ in pipeline.stream(source):
        break
    assert source.closed_once_where_iterated()
    assert pipeline.stats() is not None  # the pipeline, and its last run, are still alive


@pytest.mark.parametrize("build", BUILDS)
def test_a_stream_closed_by_close_has_closed_its_source(
    build: Callable[[], Pipeline[int, int]],
) -> None:
    source = Source()
    pipeline = build()
    stream = pipeline.stream(source)
    next(stream)
    pipeline.close()
    assert source.closed_once_where_iterated()
    with pytest.raises((PipelineClosed, StopIteration)):
        next(stream)


def test_a_run_whose_stage_fails_has_closed_its_source() -> None:
    source = Source()
    pipeline = Pipeline([FunctionStage(raising_at(5), name="check")], batch_size=4)
    with pytest.raises(StageError):
        pipeline.run(source)
    assert source.closed_once_where_iterated()


def test_a_stream_whose_stage_fails_has_closed_its_source_when_it_raises() -> None:
    source = Source()
    pipeline = Pipeline([FunctionStage(raising_at(5), name="check")], batch_size=4)
    with pytest.raises(StageError):
        list(pipeline.stream(source))
    assert source.closed_once_where_iterated()


def test_a_source_that_fails_is_not_closed_twice() -> None:
    source = Source(fail_at=3)
    with pytest.raises(StageError) as raised:
        doubling().run(source)
    assert isinstance(raised.value.__cause__, Boom)
    assert source.closed_once_where_iterated()


def test_a_run_stopped_by_ctrl_c_has_closed_its_source() -> None:
    source = Source()
    pressed = threading.Event()

    def press_once_started() -> None:
        if source.started.wait(WAIT):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    presser = threading.Thread(target=press_once_started, name="presser")
    with sigint_setting(pressed):
        presser.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                doubling().run(source)
        finally:
            presser.join(WAIT)
    assert pressed.is_set()
    assert source.closed_once_where_iterated()


class ClosingIterator(Iterator[int]):
    """An iterator that is not a generator but has a close(), like a cursor or a file."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.closes: list[str] = []

    def __next__(self) -> int:
        if self.left == 0:
            raise StopIteration
        self.left -= 1
        return self.left

    def close(self) -> None:
        self.closes.append(threading.current_thread().name)


def test_any_source_with_a_close_method_is_closed_once() -> None:
    source = ClosingIterator(5)
    assert sorted(doubling().run(source)) == [0, 2, 4, 6, 8]
    assert source.closes == ["pipeline-source"]


def test_a_source_whose_close_raises_fails_the_run_as_the_sources_failure() -> None:
    def source() -> Generator[int]:
        try:
            yield from range(3)
        finally:
            raise Boom("could not close the file")

    with pytest.raises(StageError) as raised:
        doubling().run(source())
    assert raised.value.stage == "source"
    assert isinstance(raised.value.__cause__, Boom)


def test_a_list_source_needs_no_closing() -> None:
    assert doubling().run([1, 2, 3]) == [2, 4, 6]


class CtrlCWhileWiring:
    """A queue factory pressed by Ctrl-C (or failing) while the run is being wired."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, name: str, size: int) -> SafeQueue[Any]:
        raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), Boom("no queue today")])
@pytest.mark.parametrize("kind", ["chain", "graph"])
def test_a_run_ended_before_its_source_thread_started_has_closed_its_source(
    kind: str, error: BaseException
) -> None:
    factory = CtrlCWhileWiring(error)
    pipeline: Pipeline[int, int]
    if kind == "chain":
        pipeline = Pipeline([FunctionStage(lambda x: x * 2, name="double")], queue_factory=factory)
    else:
        pipeline = (
            Graph().add(FunctionStage(lambda x: x * 2, name="double")).build(queue_factory=factory)
        )
    source = ClosingIterator(5)
    with pytest.raises(type(error)):
        pipeline.run(source)
    assert source.closes == [threading.current_thread().name]
    stream = ClosingIterator(5)
    with pytest.raises(type(error)):
        next(pipeline.stream(stream))
    assert stream.closes == [threading.current_thread().name]
