"""Review of the engine's worker loop and run: each test pins a problem a review found."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.safequeue import SafeQueue
from pipeline.worker import StageRun, ToQueue


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
