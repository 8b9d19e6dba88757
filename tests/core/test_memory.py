"""Tests for what a run holds in memory with the defaults: a byte budget and per-stage inboxes.

The figures asserted are bounds that hold whatever the timing; the waits only give the
source time to run ahead, so that a run without the bound would show it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import WAIT

from pipeline import Pipeline, PipelineStage, SafeQueue
from pipeline.batching import byte_capped
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_BYTES
from pipeline.stages import FunctionStage

PAGE = 100_000  # bytes per item: a page, an image


def identity(item: Any) -> Any:
    return item


class Double(PipelineStage[int, int]):
    def process(self, item: int) -> int:
        return item * 2


class HoldsFirst(PipelineStage[bytes, bytes]):
    """Holds its first item until the source has read everything (or WAIT passed)."""

    def __init__(self, everything_read: threading.Event) -> None:
        super().__init__()
        self.everything_read = everything_read
        self.held = False

    def process(self, item: bytes) -> bytes:
        if not self.held:
            self.held = True  # one worker: only its thread writes this
            self.everything_read.wait(WAIT / 5)
        return item


def test_with_the_defaults_large_items_in_flight_stay_under_the_byte_bound() -> None:
    """A slow middle stage holds back a fast source of 100 KB items: at most the budget."""
    items = 600
    pulled = 0
    everything_read = threading.Event()

    def source() -> Iterator[bytes]:
        nonlocal pulled
        for _ in range(items):
            pulled += 1
            yield b"x" * PAGE
        everything_read.set()

    pipeline = Pipeline(
        FunctionStage[bytes, bytes](identity)
        >> HoldsFirst(everything_read)
        >> FunctionStage[bytes, bytes](identity)
    )
    # Four links and three stages, each within the budget, plus the source's chunk and
    # the consumer's batch.
    assert pipeline.max_bytes_in_flight == 9 * DEFAULT_QUEUE_BYTES
    per_slot = DEFAULT_QUEUE_BYTES // sys.getsizeof(b"x" * PAGE)
    most_in_flight = 0
    for consumed, _ in enumerate(pipeline.stream(source()), start=1):
        most_in_flight = max(most_in_flight, pulled - consumed)
    assert pulled == items
    assert 0 < most_in_flight <= 9 * per_slot < items
    stats = pipeline.stats()
    assert stats is not None
    for stage in stats.stages:
        assert stage.queue_high_water_mark <= per_slot, stage


def test_small_items_keep_the_full_batches_under_the_byte_budget() -> None:
    """The budget leaves ints alone: with the defaults a fast stage moves big batches."""
    pipeline = Pipeline(Double())
    assert pipeline.run(range(200_000)) == [item * 2 for item in range(200_000)]
    stats = pipeline.stats()
    assert stats is not None
    (stage,) = stats.stages
    assert stage.items_in / stage.batches > 256


def test_a_byte_budget_of_zero_bounds_items_only() -> None:
    pipeline = Pipeline(Double(), queue_bytes=0)
    assert pipeline.max_bytes_in_flight == 0
    assert pipeline.run(range(5)) == [0, 2, 4, 6, 8]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "queue_bytes must be >= 0, got -1"),
        (1.5, TypeError, "queue_bytes must be an int, got float"),
    ],
)
def test_a_bad_byte_budget_is_refused(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Pipeline(Double(), queue_bytes=value)


def test_a_safe_queue_with_a_byte_budget_makes_a_put_wait_for_room() -> None:
    queue: SafeQueue[bytes] = SafeQueue(max_bytes=3 * sys.getsizeof(b"x" * PAGE))
    queue.put_many([b"x" * PAGE] * 3)
    with pytest.raises(queue_full()):
        queue.put(b"x" * PAGE, block=False)
    assert len(queue.get_many(2)) == 2
    queue.put(b"x" * PAGE, block=False)  # room for two again
    assert queue.qsize() == 2


def test_a_batch_larger_than_the_byte_budget_still_fits_an_empty_queue() -> None:
    queue: SafeQueue[bytes] = SafeQueue(max_bytes=10)
    queue.put_many([b"x" * PAGE] * 2, block=False)
    with pytest.raises(queue_full()):
        queue.put(b"x", block=False)
    assert len(queue.get_many(5)) == 2
    queue.put(b"x", block=False)


def queue_full() -> type[Exception]:
    from queue import Full

    return Full


# A stage's own inbox.


def test_a_stage_sets_its_own_inbox_size() -> None:
    slow = Double(queue_size=4)
    pipeline = Pipeline(Double() >> slow, queue_size=64, batch_size=16)
    assert pipeline.run(range(1000)) == [item * 4 for item in range(1000)]
    stats = pipeline.stats()
    assert stats is not None
    assert [stage.queue_maxsize for stage in stats.stages] == [64, 4]
    assert stats.stages[1].queue_high_water_mark <= 4
    # One inbox of 4 instead of 64: the bound counts it.
    assert pipeline.max_items_in_flight == Pipeline(
        Double() >> Double(), queue_size=64, batch_size=16
    ).max_items_in_flight - (64 - 4)


def test_a_stage_size_set_after_construction_is_used_too() -> None:
    stage = FunctionStage[int, int](identity)
    stage.queue_size = 2
    pipeline = Pipeline(stage)
    assert pipeline.run(range(100)) == list(range(100))
    stats = pipeline.stats()
    assert stats is not None
    assert stats.stages[0].queue_maxsize == 2


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "stage 'Double': queue_size must be >= 1, got 0"),
        ("8", TypeError, "stage 'Double': queue_size must be an int, got str"),
    ],
)
def test_a_bad_stage_queue_size_is_refused_naming_the_stage(
    value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Double(queue_size=value)
    stage = FunctionStage(identity, name="Double")
    stage.queue_size = value
    with pytest.raises(error, match=message):
        Pipeline(stage)


# Items of mixed sizes: the weights are estimates, and a run must never hang on them.


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([0, 10, 1_000, 50_000]), min_size=0, max_size=200),
    queue_bytes=st.integers(min_value=1, max_value=200_000),
    workers=st.integers(min_value=1, max_value=3),
    ordered=st.booleans(),
)
def test_items_of_mixed_sizes_all_arrive_under_any_byte_budget(
    sizes: list[int], queue_bytes: int, workers: int, ordered: bool
) -> None:
    items = [bytes(size) + bytes([index % 256]) for index, size in enumerate(sizes)]
    pipeline = Pipeline(
        FunctionStage[bytes, bytes](identity, workers=workers)
        >> FunctionStage[bytes, bytes](identity),
        queue_bytes=queue_bytes,
        ordered=ordered,
    )
    outputs = pipeline.run(items)
    assert outputs == items if ordered else sorted(outputs) == sorted(items)


def test_a_queue_whose_estimate_ran_high_forgets_it_once_empty() -> None:
    """A batch led by a large item weighs more than it holds; emptying resets the weight."""
    big = b"x" * PAGE
    queue: SafeQueue[bytes] = SafeQueue(max_bytes=2 * sys.getsizeof(big))
    queue.put_many([big, b"", b""])  # weighed as three large items: over the budget
    assert queue.get_many(1) == [big]
    assert queue.get_many(5) == [b"", b""]  # weighed out as small ones
    queue.put_many([big, big], block=False)  # empty again: the full budget is free


def test_ints_are_never_capped_below_the_default_batch() -> None:
    """What keeps cheap chains fast under the budget: 4,096 ints weigh far under its share."""
    ints = list(range(DEFAULT_BATCH_SIZE))
    share = DEFAULT_QUEUE_BYTES // 2  # one worker's batch: its inputs and outputs
    assert byte_capped(share, len(ints), ints, ints) > DEFAULT_BATCH_SIZE
