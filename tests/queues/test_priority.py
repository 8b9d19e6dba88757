"""Tests for PriorityQueue: order, FIFO among equals, the end-of-stream marker, aging, limits."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import WAIT, press_from_another_thread, sigint_setting

from pipeline import Full, LinkQueue, Pipeline, ShutDown, StageError
from pipeline.queues import priority as priority_module
from pipeline.queues.priority import LevelStatistics, Priority, PriorityQueue
from pipeline.stages.functions import FunctionStage
from pipeline.worker import END_OF_STREAM, UpstreamFailed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drain(queue: PriorityQueue[Any]) -> list[Any]:
    out: list[Any] = []
    while queue.qsize():
        out.extend(queue.get_many(3))
    return out


def test_most_urgent_first_fifo_among_equals() -> None:
    queue: PriorityQueue[str] = PriorityQueue()
    queue.put("low-1", priority=Priority.LOW)
    queue.put("blocker-1", priority=Priority.BLOCKER)
    queue.put_many(["deferred-1", "deferred-2"], priority=Priority.DEFERRED)
    queue.put("low-2", priority=Priority.LOW)
    queue.put("blocker-2", priority=Priority.BLOCKER)
    queue.put("medium-by-default")
    queue.put("urgent-int", priority=-7)
    assert drain(queue) == [
        "urgent-int",
        "blocker-1",
        "blocker-2",
        "medium-by-default",
        "low-1",
        "low-2",
        "deferred-1",
        "deferred-2",
    ]


def test_the_payload_is_never_compared() -> None:
    class Uncomparable:
        def __eq__(self, other: object) -> bool:
            raise AssertionError("compared")

        def __lt__(self, other: object) -> bool:
            raise AssertionError("compared")

        __hash__ = object.__hash__

    queue: PriorityQueue[Uncomparable] = PriorityQueue()
    items = [Uncomparable() for _ in range(5)]
    queue.put_many(items, priority=1)
    queue.put(items[0], priority=1)
    got = drain(queue)
    assert len(got) == 6
    assert all(a is b for a, b in zip(got, [*items, items[0]], strict=True))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 8), st.integers(1, 4)), max_size=40))
def test_order_is_a_stable_sort_by_priority(puts: list[tuple[int, int]]) -> None:
    queue: PriorityQueue[tuple[int, int]] = PriorityQueue()
    expected: list[tuple[int, int]] = []
    for number, (priority, count) in enumerate(puts):
        batch = [(priority, number * 10 + k) for k in range(count)]
        queue.put_many(batch, priority=priority)
        expected.extend(batch)
    assert drain(queue) == sorted(expected, key=lambda entry: entry[0])


def test_priority_of_decides_for_items_put_without_a_priority() -> None:
    queue: PriorityQueue[dict[str, Any]] = PriorityQueue(priority_of=lambda job: job["rank"])
    jobs = [{"rank": rank, "n": n} for n, rank in enumerate([3, 1, 3, 0, 1])]
    queue.put_many(jobs)
    queue.put({"rank": 9, "n": 99}, priority=-1)  # an explicit priority wins
    assert [job["n"] for job in drain(queue)] == [99, 3, 1, 4, 0, 2]


def test_the_end_of_stream_marker_sorts_after_every_priority() -> None:
    queue: PriorityQueue[Any] = PriorityQueue(default_priority=Priority.DEFERRED)
    queue.put_many(["a", END_OF_STREAM])  # as the engine puts it: a plain put_many
    queue.put("late", priority=10**9)
    queue.put_many(["urgent", END_OF_STREAM, "also urgent"], priority=0)
    assert drain(queue) == ["urgent", "also urgent", "a", "late", END_OF_STREAM, END_OF_STREAM]


def test_maxsize_counts_every_priority() -> None:
    queue: PriorityQueue[int] = PriorityQueue(maxsize=3)
    queue.put(1, priority=0)
    queue.put_many([2, 3], priority=5)
    with pytest.raises(Full):
        queue.put(4, priority=-100, block=False)
    with pytest.raises(ValueError, match="more than maxsize=3"):
        queue.put_many([1, 2, 3, 4], priority=1)


def test_a_blocked_putter_is_released_by_a_get() -> None:
    queue: PriorityQueue[int] = PriorityQueue(maxsize=1)
    queue.put(1)
    done = threading.Event()

    def putter() -> None:
        queue.put(2, priority=0)
        done.set()

    thread = threading.Thread(target=putter)
    thread.start()
    assert not done.wait(0.1)
    assert queue.get(timeout=5) == 1
    assert done.wait(5)
    thread.join(5)
    assert queue.get_nowait() == 2


def test_shutdown_immediate_discards_every_level_and_wakes_getters() -> None:
    queue: PriorityQueue[Any] = PriorityQueue()
    queue.put_many([1, 2], priority=1)
    queue.put_many([END_OF_STREAM], priority=1)
    queue.shutdown(immediate=True)
    assert queue.qsize() == 0
    assert queue.levels() == []
    with pytest.raises(ShutDown):
        queue.get(timeout=5)


def test_aging_serves_deferred_work_after_a_bounded_wait() -> None:
    clock = FakeClock()
    queue: PriorityQueue[str] = PriorityQueue(aging_seconds=10.0, clock=clock)
    queue.put("deferred", priority=Priority.DEFERRED)  # key 100 + 5 * 10 = 150
    served: list[str] = []
    # Sustained load: a blocker arrives every second and one item is served per second.
    for second in range(80):
        clock.now = 100.0 + second
        queue.put(f"blocker@{second}", priority=Priority.BLOCKER)
        served.append(queue.get_nowait())
        if served[-1] == "deferred":
            break
    # Blockers put up to t=150 (keys <= 150) come first; the deferred item beats later ones.
    assert served[-1] == "deferred"
    assert len(served) == 52  # blockers @0..@50 (51 items), then the deferred one
    without_aging: PriorityQueue[str] = PriorityQueue()
    without_aging.put("deferred", priority=Priority.DEFERRED)
    for second in range(80):
        without_aging.put(f"blocker@{second}", priority=Priority.BLOCKER)
        assert without_aging.get_nowait() != "deferred"  # starves for as long as load lasts


def test_aging_keeps_fifo_within_a_level_and_across_batches() -> None:
    clock = FakeClock()
    queue: PriorityQueue[int] = PriorityQueue(aging_seconds=1.0, clock=clock)
    queue.put_many([1, 2, 3], priority=2)  # key 102
    clock.now = 101.5
    queue.put_many([4, 5], priority=0)  # key 101.5
    clock.now = 103.0
    queue.put_many([6], priority=0)  # key 103
    queue.put_many([7], priority=2)  # key 105
    assert queue.get_many(10) == [4, 5, 1, 2, 3, 6, 7]


def test_levels_report_depth_and_oldest_age_per_priority() -> None:
    clock = FakeClock()
    queue: PriorityQueue[int] = PriorityQueue(clock=clock)
    queue.put_many([1, 2], priority=Priority.CRITICAL)
    clock.now = 104.0
    queue.put(3, priority=Priority.CRITICAL)
    queue.put(4, priority=Priority.LOW)
    clock.now = 110.0
    assert queue.levels() == [
        LevelStatistics(Priority.CRITICAL, 3, 10.0),
        LevelStatistics(Priority.LOW, 1, 6.0),
    ]
    queue.get_many(2)
    assert queue.levels()[0] == LevelStatistics(Priority.CRITICAL, 1, 6.0)
    assert queue.statistics().depth == 2


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="default_priority must be an int, got str"):
        PriorityQueue(default_priority="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"aging_seconds must be > 0 \(or None for no aging\)"):
        PriorityQueue(aging_seconds=0)
    with pytest.raises(TypeError, match="priority_of must be callable, got int"):
        PriorityQueue(priority_of=3)  # type: ignore[arg-type]
    queue: PriorityQueue[Any] = PriorityQueue(priority_of=lambda item: item)
    with pytest.raises(TypeError, match=r"priority must be an int \(or a Priority\), got float"):
        queue.put("x", priority=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"priority_of\(item\) must be an int .*, got str"):
        queue.put_many([1, "two"])
    assert queue.qsize() == 0  # the failed batch stored nothing


def test_it_is_a_link_queue_the_engine_can_use() -> None:
    link: LinkQueue[int] = PriorityQueue[int](maxsize=4)
    link.put_many([3, 1], copy=False)
    link.put_many([END_OF_STREAM])
    assert link.get_many(10, True, 5) == [3, 1, END_OF_STREAM]
    link.shutdown(immediate=True)
    with pytest.raises(ShutDown):
        link.put_many([1])
    assert link.statistics().high_water_mark == 2  # the end marker is not an item


def test_producers_and_consumers_lose_and_duplicate_nothing() -> None:
    queue: PriorityQueue[tuple[int, int]] = PriorityQueue(maxsize=16)
    producers, per_producer = 3, 2000
    start = threading.Barrier(producers + 2)
    received: list[list[tuple[int, int]]] = [[], []]

    def produce(index: int) -> None:
        start.wait(5)
        for n in range(0, per_producer, 4):
            queue.put_many([(index, n + k) for k in range(4)], priority=n % 6, timeout=10)

    def consume(index: int) -> None:
        start.wait(5)
        while True:
            try:
                received[index].extend(queue.get_many(5, timeout=10))
            except ShutDown:
                return

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    threads += [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads[:producers]:
        thread.join(30)
    queue.shutdown()
    for thread in threads[producers:]:
        thread.join(30)
    got = received[0] + received[1]
    assert sorted(got) == sorted((i, n) for i in range(producers) for n in range(per_producer))
    for index in range(2):  # each consumer saw each producer's equal-priority items in order
        for producer in range(producers):
            for level in range(6):
                seq = [n for p, n in received[index] if p == producer and (n - n % 4) % 6 == level]
                assert seq == sorted(seq)


def test_a_marker_that_carries_a_failure_sorts_last_too() -> None:
    failed = UpstreamFailed(StageError("upstream", "process"))
    queue: PriorityQueue[Any] = PriorityQueue()
    queue.put_many([1, failed, 2], priority=Priority.DEFERRED)
    queue.put(0, priority=Priority.BLOCKER)
    assert queue.get_many(10) == [0, 1, 2, failed]


def test_a_pipeline_runs_on_priority_links() -> None:
    made: dict[str, PriorityQueue[int]] = {}

    def priority_links(link: str, maxsize: int) -> PriorityQueue[int]:
        made[link] = PriorityQueue(maxsize, priority_of=lambda n: n % 3)
        return made[link]

    chain = FunctionStage[int, int](lambda n: n * 2, name="double", workers=2) >> FunctionStage[
        int, int
    ](lambda n: n + 1, name="inc")
    pipeline = Pipeline(chain, queue_size=8, queue_factory=priority_links)
    assert sorted(pipeline.run(range(2000))) == [2 * n + 1 for n in range(2000)]
    assert set(made) == {"double", "inc", "results"}
    assert all(queue.qsize() == 0 for queue in made.values())


def test_priorities_decide_what_a_waiting_stage_takes_first() -> None:
    release = threading.Event()
    taken: list[int] = []

    def gate(n: int) -> int:
        if n == -1:
            release.wait(10)  # holds the stage while the rest queue up behind it
        taken.append(n)
        return n

    def source() -> Iterator[int]:
        # With batch_size=1 the feeder puts each item before it asks for the next, so
        # every item is queued before the gate opens.
        yield -1
        yield from [5, 4, 3, 2, 1, 0]
        release.set()

    pipeline = Pipeline(
        FunctionStage[int, int](gate, name="gate"),
        queue_size=16,
        batch_size=1,
        queue_factory=lambda link, size: PriorityQueue(size, priority_of=lambda n: n),
    )
    pipeline.run(source())
    assert taken[0] == -1
    assert taken[1:] == sorted(taken[1:])


def test_one_item_at_a_time_takes_the_inlined_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(name: str, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return method(*args, **kwargs)

        return counted

    for name in ("_batch", "_put_chunk", "_put_many", "_get", "_get_many", "_wait_for_items"):
        monkeypatch.setattr(PriorityQueue, name, counting(name, getattr(PriorityQueue, name)))
    queue: PriorityQueue[int] = PriorityQueue(maxsize=8)
    for name in ("not_empty", "not_full"):
        condition = getattr(queue, name)
        monkeypatch.setattr(condition, "notify", counting(f"{name}.notify", condition.notify))
        monkeypatch.setattr(
            condition, "notify_all", counting(f"{name}.notify_all", condition.notify_all)
        )
    for n, priority in enumerate([3, 1, Priority.HIGH, 1]):
        queue.put(n, priority=priority)
    queue.put_nowait(4)
    assert [queue.get(), queue.get(timeout=5), queue.get_nowait()] == [1, 3, 2]
    assert [queue.get(), queue.get()] == [0, 4]
    # No batch object, no hook call, no wake-up call while nobody waits.
    assert calls == []
    assert queue.statistics().high_water_mark == 5
    assert queue.unfinished_tasks == 5


def test_a_waiting_getter_is_woken_by_a_single_put() -> None:
    queue: PriorityQueue[int] = PriorityQueue()
    waiting = threading.Event()
    got: list[int] = []
    wait_for_items = queue._wait_for_items

    def announced_wait(block: bool, timeout: float | None) -> None:
        waiting.set()  # the mutex is held: the put below comes once the getter waits
        wait_for_items(block, timeout)

    queue._wait_for_items = announced_wait  # type: ignore[method-assign]

    def getter() -> None:
        got.append(queue.get(timeout=10))

    thread = threading.Thread(target=getter)
    thread.start()
    assert waiting.wait(5)
    queue.put(7, priority=Priority.LOW)
    thread.join(10)
    assert got == [7]
    assert queue._waiting_getters == 0
    assert queue.statistics().get_waited_seconds > 0


def test_single_puts_and_gets_keep_every_rule_of_safequeue() -> None:
    queue: PriorityQueue[Any] = PriorityQueue(maxsize=3)
    queue.put("low", priority=Priority.LOW)
    queue.put(END_OF_STREAM)  # a marker sorts after every priority
    queue.put("high", priority=Priority.HIGH)
    with pytest.raises(Full):
        queue.put_nowait("no room")
    with pytest.raises(Full):
        queue.put("no room", timeout=0)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        queue.get(timeout=-1)
    assert [queue.get(), queue.get(), queue.get()] == ["high", "low", END_OF_STREAM]
    assert queue.statistics().high_water_mark == 3  # as SafeQueue counts: the marker held room
    for _ in range(3):
        queue.task_done()
    queue.join()  # every put counted once, every task_done matched
    queue.put("left", priority=0)
    queue.shutdown()
    with pytest.raises(ShutDown):
        queue.put("late", priority=0)
    assert queue.get() == "left"
    with pytest.raises(ShutDown):
        queue.get(timeout=5)


def test_a_subclass_with_its_own_storage_hook_is_served_through_it() -> None:
    class Counting(PriorityQueue[int]):
        def _get(self) -> int:
            self.gets = getattr(self, "gets", 0) + 1
            return super()._get()

    queue = Counting(priority_of=lambda n: n)
    queue.put(2)
    queue.put(1)
    assert [queue.get(), queue.get()] == [1, 2]
    assert queue.gets == 2
    assert PriorityQueue._storage_is_ours
    assert not Counting._storage_is_ours


@pytest.mark.parametrize("take", ["get", "get_many"])
def test_single_puts_with_aging_are_served_by_the_smallest_key(take: str) -> None:
    clock = FakeClock()
    queue: PriorityQueue[str] = PriorityQueue(aging_seconds=1.0, clock=clock)
    queue.put("deferred at 100", priority=Priority.DEFERRED)  # key 105
    clock.now = 104.5
    queue.put("blocker at 104.5", priority=Priority.BLOCKER)  # key 104.5
    clock.now = 106.0
    queue.put("blocker at 106", priority=Priority.BLOCKER)  # key 106
    got = [queue.get() for _ in range(3)] if take == "get" else queue.get_many(3)
    assert got == ["blocker at 104.5", "deferred at 100", "blocker at 106"]


@pytest.mark.parametrize("operation", ["put", "get"])
def test_a_ctrl_c_that_wakes_no_wait_still_ends_a_single_put_or_get(operation: str) -> None:
    queue: PriorityQueue[int] = PriorityQueue(maxsize=1)
    if operation == "put":
        queue.put(1, priority=0)
    waiting, pressed = threading.Event(), threading.Event()

    def blocking() -> None:
        if operation == "put":
            queue.put(2, priority=0, timeout=WAIT)
        else:
            queue.get(timeout=WAIT)

    for name in ("_wait_for_room", "_wait_for_items"):
        wait = getattr(queue, name)

        def announced(*args: Any, wait: Any = wait) -> None:
            waiting.set()
            wait(*args)

        setattr(queue, name, announced)
    with sigint_setting(pressed):
        presser = press_from_another_thread(waiting)  # the deterministic lost wake-up
        try:
            with pytest.raises(KeyboardInterrupt):
                blocking()
        finally:
            presser.join(WAIT)
    assert pressed.is_set()
    assert not queue.mutex.locked()
    assert queue._waiting_getters == 0
    assert not queue._waiting_putters


def test_a_backlog_of_single_puts_leaves_the_garbage_collector_nothing_to_walk() -> None:
    queue: PriorityQueue[int] = PriorityQueue()
    gc.collect()
    before = len(gc.get_objects())
    for n in range(2000):
        queue.put(n, priority=n % 6)
    gc.collect()  # an entry holding no container leaves the collector's lists
    assert len(gc.get_objects()) - before < 100  # not a list (nor a tuple) per item
    assert [queue.get() for _ in range(4)] == [0, 6, 12, 18]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.integers(0, 3), st.integers(1, 4)),
            st.tuples(st.just("get"), st.integers(1, 5), st.just(0)),
        ),
        max_size=40,
    )
)
def test_single_and_batch_puts_and_gets_mix_in_priority_order(
    steps: list[tuple[str, int, int]],
) -> None:
    queue: PriorityQueue[int] = PriorityQueue()
    model: list[tuple[int, int]] = []  # (priority, number), kept as a stable sort
    got: list[int] = []
    expected: list[int] = []
    number = 0
    for kind, first, second in steps:
        if kind == "put":
            batch = list(range(number, number + second))
            number += second
            if second == 1:
                queue.put(batch[0], priority=first)
            else:
                queue.put_many(batch, priority=first)
            model = sorted([*model, *((first, n) for n in batch)], key=lambda entry: entry[0])
        elif model:
            got.extend([queue.get()] if first == 1 else queue.get_many(first))
            expected.extend(n for _, n in model[:first])
            model = model[first:]
    assert got == expected
    assert drain(queue) == [n for _, n in model]


def test_one_put_one_get_reuses_the_emptied_level(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    class CountedLevel(priority_module._Level):
        __slots__ = ()

        def __init__(self) -> None:
            made.append(self)
            super().__init__()

    monkeypatch.setattr(priority_module, "_Level", CountedLevel)
    queue: PriorityQueue[int] = PriorityQueue()
    for n in range(100):  # a link at steady state: each item is taken before the next comes
        queue.put(n, priority=n % 6)
        assert queue.get() == n
    assert len(made) == 1
    assert queue.levels() == []
