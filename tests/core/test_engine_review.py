"""Review of the engine's worker loop and run: each test pins a problem a review found."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from support import OwningQueue

from pipeline import Pipeline, PipelineClosed, PipelineStage, StageError
from pipeline.safequeue import LinkQueue, Marker, SafeQueue
from pipeline.worker import StageRun, ToQueue, current_stop_event


class _Passing(PipelineStage[Any, Any]):
    def process(self, item: Any) -> Any:
        return item


class _GapDict(dict[int, Any]):
    """A reorder window that tells the test when the emitter found nothing in turn."""

    def __init__(self, key: int, missed: threading.Event) -> None:
        super().__init__()
        self.key = key
        self.missed = missed

    def pop(self, key: int, default: Any = None) -> Any:
        found = super().pop(key, default)
        if key == self.key and found is default:
            self.missed.set()
        return found


class _GapCondition(threading.Condition):
    """The reorder lock; after the miss, the missing thread re-enters only once `parked` is set."""

    def __init__(self, missed: threading.Event, parked: threading.Event) -> None:
        super().__init__()
        self.missed = missed
        self.parked = parked
        self.emitter: threading.Thread | None = None

    def __enter__(self) -> bool:
        if threading.current_thread() is self.emitter and self.missed.is_set():
            self.parked.wait(timeout=10)
        return super().__enter__()


def test_a_batch_parked_while_the_emitter_is_leaving_is_still_emitted() -> None:
    """The emitter found batch 1 not parked yet and was leaving `_emit`; batch 1 parked in
    between (seeing "someone is emitting") must not be stranded in the window."""
    outbox = SafeQueue[Any](0)
    stage_run = StageRun(
        _Passing(workers=2),
        SafeQueue[Any](0),
        ToQueue(outbox),
        max_batch=1,
        ordered=True,
        on_failure=print,
    )
    missed, parked = threading.Event(), threading.Event()
    lock = _GapCondition(missed, parked)
    stage_run._emit_lock = lock
    stage_run._parked = _GapDict(1, missed)
    emitter = threading.Thread(target=stage_run._emit, args=(0, ["a"], None))
    lock.emitter = emitter
    emitter.start()
    try:
        assert missed.wait(timeout=10)
        stage_run._emit(1, ["b"], None)
        parked.set()
    finally:
        parked.set()
        emitter.join()
    assert outbox.get_many(10, block=False) == ["a", "b"]
    assert not stage_run._parked


class _FailsAt(PipelineStage[int, int]):
    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad = bad

    def process(self, item: int) -> int:
        if item == self.bad:
            raise ValueError(item)
        return item


class _Counts(PipelineStage[int, int]):
    """Passes items on and, at the end of its input, emits how many it saw (a window's tail)."""

    def setup(self) -> None:
        self.local.seen = 0

    def process(self, item: int) -> int:
        self.local.seen += 1
        return item

    def flush(self) -> list[int]:
        return [-self.local.seen]


@pytest.mark.parametrize("workers", [1, 3])
def test_an_upstream_failure_at_its_position_is_not_followed_by_a_flush(workers: int) -> None:
    """A plain loop raises at the failing item; the stage after it never reaches the end
    of its input, so nothing it would flush there may come before the error."""
    delivered: list[int] = []
    outputs = Pipeline(_FailsAt(5) >> _Counts(workers=workers), batch_size=2).stream(range(10))
    with pytest.raises(StageError, match="ValueError: 5"):
        delivered.extend(outputs)
    assert delivered == [0, 1, 2, 3, 4]


class _TellsTheEnd(SafeQueue[Any]):
    """A results queue that sets `ended` once the end-of-stream marker is in it."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.ended = threading.Event()

    def put_many(
        self,
        items: Iterable[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        copy: bool = True,
    ) -> None:
        items = list(items)
        super().put_many(items, block, timeout, copy=False)
        if items and isinstance(items[-1], Marker):
            self.ended.set()


def test_a_close_that_cuts_the_last_batch_short_is_not_a_complete_run() -> None:
    """close() from another thread empties the batch being delivered; when that batch is
    the last one, the iterator must still say the run was closed, not end as if complete."""
    results: list[_TellsTheEnd] = []
    gate = threading.Event()

    def make_queue(name: str, size: int) -> LinkQueue[Any]:
        if name != "results":
            return SafeQueue[Any](size)
        results.append(_TellsTheEnd(size))
        return results[-1]

    def source() -> Iterator[int]:
        yield 0
        gate.wait()
        yield from range(1, 10)

    pipeline = Pipeline(_Passing(), queue_factory=make_queue)
    outputs = pipeline.stream(source())
    try:
        assert next(outputs) == 0
        gate.set()
        assert results[0].ended.wait(timeout=10)
        assert next(outputs) == 1  # the consumer now holds 2..9, the last batch
        closer = threading.Thread(target=pipeline.close)
        closer.start()
        closer.join()
        with pytest.raises(PipelineClosed):
            list(outputs)
    finally:
        gate.set()
        pipeline.close()


class _FailsAtFive(PipelineStage[int, int]):
    def __init__(self, first_taken: threading.Event, failed: threading.Event) -> None:
        super().__init__(workers=2)
        self.first_taken = first_taken
        self.failed = failed

    def process(self, item: int) -> int:
        if item == 5:
            self.first_taken.wait()
            self.failed.set()
            raise ValueError(item)
        return item


class _TeardownFailsAfter(PipelineStage[int, int]):
    def __init__(self, failed: threading.Event) -> None:
        super().__init__(workers=2)
        self.failed = failed

    def process(self, item: int) -> int:
        return item

    def teardown(self) -> None:
        if self.failed.is_set():
            raise RuntimeError("teardown")


@pytest.mark.parametrize("where", ["the failing stage", "a stage after it", "after the source"])
def test_a_teardown_failing_after_a_failure_at_its_position_keeps_the_outputs_before_it(
    where: str,
) -> None:
    """A worker tears down after the failure and its teardown raises too: the run's
    outcome is already that failure, and nothing is lost by letting the outputs before
    the failing item arrive first, so they must not be thrown away with a stop."""
    first_taken, failed = threading.Event(), threading.Event()

    class FailsThenBreaksTeardown(_FailsAtFive):
        def teardown(self) -> None:
            if self.failed.is_set():
                raise RuntimeError("teardown")

    def source() -> Iterator[int]:
        yield from range(5)
        first_taken.wait()
        failed.set()
        raise ValueError(5)

    stages: list[PipelineStage[int, int]]
    if where == "the failing stage":
        stages = [FailsThenBreaksTeardown(first_taken, failed)]
    elif where == "a stage after it":
        stages = [_FailsAtFive(first_taken, failed), _TeardownFailsAfter(failed)]
    else:
        stages = [_TeardownFailsAfter(failed)]
    pipeline = Pipeline(stages, batch_size=1)
    outputs = pipeline.stream(source() if where == "after the source" else iter(range(10)))
    try:
        delivered = [next(outputs)]
    finally:
        first_taken.set()
    run = pipeline._latest
    assert run is not None
    # Every worker has left (and torn down) before the consumer reads on.
    for thread in run.threads[2:]:
        assert run._finished[thread].wait(timeout=10)
    with pytest.raises(StageError, match="ValueError: 5"):
        delivered.extend(outputs)
    assert delivered == [0, 1, 2, 3, 4]


class SetupWaitingForTheStop(PipelineStage[int, int]):
    """A setup that waits until the run stops, then fails because it was cut short."""

    def __init__(self) -> None:
        super().__init__(name="slow-setup")
        self.in_setup = threading.Event()

    def setup(self) -> None:
        self.in_setup.set()
        stop = current_stop_event()
        assert stop is not None
        if stop.wait(5):
            raise ConnectionAbortedError("the run stopped while this stage was starting")

    def process(self, item: int) -> int:
        return item


def test_a_setup_cut_short_by_a_close_is_the_close_not_a_failure() -> None:
    stage = SetupWaitingForTheStop()
    pipeline = Pipeline([stage])
    stream = pipeline.stream(range(10))

    def close_once_in_setup() -> None:
        if stage.in_setup.wait(5):
            pipeline.close()

    closer = threading.Thread(target=close_once_in_setup)
    closer.start()
    try:
        with pytest.raises(PipelineClosed):
            list(stream)
    finally:
        closer.join(5)


class _HandsItsInputOn(PipelineStage[Any, Any]):
    def process_batch(self, items: list[Any]) -> list[Any]:
        return items


def test_a_stage_handing_its_input_list_on_is_counted_by_what_it_took() -> None:
    pipeline = Pipeline(_HandsItsInputOn(), queue_factory=lambda _, size: OwningQueue(size))
    assert pipeline.run(range(1000)) == list(range(1000))
    stats = pipeline.stats()
    assert stats is not None
    (stage,) = stats.stages
    assert (stage.items_in, stage.items_out) == (1000, 1000)
