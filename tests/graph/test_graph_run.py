"""Tests for running graphs: splits and merges, the diamond, failures, stops, statistics.

Every run must end with no thread left behind (the conftest fails a test that leaks
one). Random latencies are a branch's own work (waits on an Event never set), not
coordination.
"""

from __future__ import annotations

import collections
import itertools
import queue
import random
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import WAIT, Boom, OwningQueue, interrupt_when_ready

from pipeline import Pipeline, PipelineClosed, PipelineError, PipelineStage, StageError
from pipeline.graph import (
    Graph,
    GraphStatistics,
    KeyJoin,
    OrderedMerge,
    Partition,
    PipelineDeadlock,
    SequenceJoin,
)
from pipeline.observe.report import format_report
from pipeline.safequeue import SafeQueue
from pipeline.stages import FunctionStage, PredicateStage
from pipeline.worker import current_stop_event


def identity(name: str, workers: int = 1) -> FunctionStage[Any, Any]:
    return FunctionStage(lambda item: item, name=name, workers=workers)


def labelled(name: str) -> FunctionStage[Any, Any]:
    return FunctionStage(lambda item: (name, item), name=name)


class Jitter(PipelineStage[Any, Any]):
    """Passes items on after a random pause of up to `most` seconds (its own work)."""

    def __init__(self, name: str, most: float, seed: int, *, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.most = most
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.pause = threading.Event()

    def process(self, item: Any) -> Any:
        with self.lock:
            pause = self.random.uniform(0, self.most)
        self.pause.wait(pause)
        return item


def diamond(*, drop_every: int = 7) -> Graph:
    return (
        Graph()
        .add(identity("a"))
        .add(FunctionStage(lambda item: item * 2, name="b"), after="a")
        .add(PredicateStage(lambda item: item % drop_every != 0, name="c"), after="a")
        .add(SequenceJoin(name="d"), after=["b", "c"])
    )


def test_a_diamond_with_a_dropping_branch_on_queues_of_one_gives_every_output() -> None:
    # The naive per-branch zip join hangs here (measured: after 54 of 17,142 outputs).
    pipeline = diamond().build(queue_size=1, batch_size=1, deadlock_timeout=WAIT)
    outputs = pipeline.run(range(3000))
    expected = [(2 * item, item) for item in range(3000) if item % 7 != 0]
    assert sorted(outputs) == expected
    stats = pipeline.stats()
    assert isinstance(stats, GraphStatistics)
    (join,) = stats.joins
    assert join.name == "d"
    assert join.dropped == 3000 - len(expected)
    assert join.buffered == 0
    assert 1 <= join.high_water_mark <= 8


def test_a_graphs_statistics_before_its_first_run_have_its_nodes_edges_and_joins() -> None:
    pipeline = diamond().build(queue_size=3)
    stats = pipeline.stats()
    assert isinstance(stats, GraphStatistics)
    assert [stage.name for stage in stats.stages] == list(pipeline.names)
    assert all(stage.items_in == 0 and stage.queue_maxsize == 3 for stage in stats.stages)
    assert stats.edges == pipeline.stats().edges != ()
    assert [(join.name, join.buffered, join.high_water_mark) for join in stats.joins] == [
        ("d", 0, 0)
    ]
    assert not stats.running


def test_a_diamond_with_several_workers_per_branch_gives_every_output() -> None:
    graph = (
        Graph()
        .add(identity("a", workers=2))
        .add(Jitter("b", 0.0005, seed=1, workers=3), after="a")
        .add(PredicateStage(lambda item: item % 3 != 0, name="c", workers=2), after="a")
        .add(SequenceJoin(lambda left, right: left + right, name="d"), after=["b", "c"])
    )
    outputs = graph.build(queue_size=4, batch_size=8).run(range(600))
    # Every branch keeps its input order (ordered=True), so items complete in split order.
    assert outputs == [2 * item for item in range(600) if item % 3 != 0]


def test_keep_partial_emits_missing_for_a_branch_that_dropped_the_item() -> None:
    from pipeline.graph import MISSING

    graph = (
        Graph()
        .add(identity("a"))
        .add(identity("b"), after="a")
        .add(PredicateStage(lambda item: item % 2 == 0, name="c"), after="a")
        .add(SequenceJoin(name="d", keep_partial=True), after=["b", "c"])
    )
    outputs = graph.build(batch_size=4).run(range(6))
    assert sorted(outputs, key=lambda pair: pair[0]) == [
        (item, item if item % 2 == 0 else MISSING) for item in range(6)
    ]


@settings(max_examples=25, deadline=None)
@given(
    items=st.lists(st.integers(), max_size=60),
    branches=st.integers(1, 4),
    queue_size=st.integers(1, 5),
    batch_size=st.integers(1, 6),
)
def test_broadcast_gives_every_item_to_every_branch(
    items: list[int], branches: int, queue_size: int, batch_size: int
) -> None:
    graph = Graph().add(identity("split"))
    names = [f"branch{index}" for index in range(branches)]
    for name in names:
        graph.add(labelled(name), after="split")
    outputs = graph.build(queue_size=queue_size, batch_size=batch_size).run(items)
    expected = collections.Counter((name, item) for name in names for item in items)
    assert collections.Counter(outputs) == expected


@settings(max_examples=25, deadline=None)
@given(
    items=st.lists(st.integers(), max_size=60),
    branches=st.integers(1, 4),
    queue_size=st.integers(1, 5),
    batch_size=st.integers(1, 6),
)
def test_partition_gives_each_item_to_exactly_the_branch_its_key_names(
    items: list[int], branches: int, queue_size: int, batch_size: int
) -> None:
    graph = Graph().add(identity("split"), fan_out=Partition(key=lambda item: item % 10))
    names = [f"branch{index}" for index in range(branches)]
    for name in names:
        graph.add(labelled(name), after="split")
    outputs = graph.build(queue_size=queue_size, batch_size=batch_size).run(items)
    expected = collections.Counter((names[hash(item % 10) % branches], item) for item in items)
    assert collections.Counter(outputs) == expected


@settings(max_examples=25, deadline=None)
@given(items=st.lists(st.integers(), max_size=60), branches=st.integers(1, 4))
def test_round_robin_deals_each_item_to_one_branch_evenly(items: list[int], branches: int) -> None:
    graph = Graph().add(identity("split"), fan_out="round_robin")
    names = [f"branch{index}" for index in range(branches)]
    for name in names:
        graph.add(labelled(name), after="split")
    outputs = graph.build(queue_size=2, batch_size=3).run(items)
    assert sorted(item for _, item in outputs) == sorted(items)
    counts = collections.Counter(name for name, _ in outputs)
    assert max(counts.values(), default=0) - min(counts.values(), default=0) <= (
        1 if len(counts) == branches else len(items)
    )


def test_a_routing_function_picks_the_successor_by_name() -> None:
    route = Partition(route=lambda item: "even" if item % 2 == 0 else "odd")
    graph = (
        Graph()
        .add(identity("split"), fan_out=route)
        .add(labelled("even"), after="split")
        .add(labelled("odd"), after="split")
    )
    outputs = graph.build(batch_size=4).run(range(10))
    assert sorted(outputs) == sorted(
        ("even" if item % 2 == 0 else "odd", item) for item in range(10)
    )


@pytest.mark.parametrize("fan_out", ["round_robin", "partition", "broadcast"])
def test_an_ordered_merge_restores_split_order_on_random_branch_latencies(fan_out: str) -> None:
    split: Any = Partition(key=lambda item: item) if fan_out == "partition" else fan_out
    graph = (
        Graph()
        .add(identity("split"), fan_out=split)
        .add(Jitter("fast", 0.0002, seed=2), after="split")
        .add(Jitter("slow", 0.001, seed=3, workers=3), after="split")
        .add(PredicateStage(lambda item: item % 5 != 0, name="drops"), after="split")
        .add(OrderedMerge(name="merge"), after=["fast", "slow", "drops"])
    )
    outputs = graph.build(queue_size=3, batch_size=5).run(range(300))
    if fan_out == "broadcast":
        expected = [
            copy for item in range(300) for copy in [item, item] + ([item] if item % 5 else [])
        ]
    else:
        # Item i went to branch i % 3 (by its hash, or dealt in turn); the third branch
        # dropped the multiples of 5 it got.
        expected = [item for item in range(300) if not (item % 3 == 2 and item % 5 == 0)]
    assert outputs == expected


def test_several_entries_each_get_the_input_and_several_sinks_are_merged() -> None:
    graph = (
        Graph()
        .add(labelled("left"))
        .add(labelled("right"))
        .add(identity("both"), after=["left", "right"])
        .add(identity("sink1"), after="both")
        .add(identity("sink2"), after="both")
    )
    outputs = graph.build(queue_size=2, batch_size=3).run(range(50))
    expected = collections.Counter(
        (side, item) for side in ("left", "right") for item in range(50) for _ in range(2)
    )
    assert collections.Counter(outputs) == expected


def test_a_graph_runs_again_with_its_joins_reset() -> None:
    pipeline = diamond().build(batch_size=16)
    first = sorted(pipeline.run(range(100)))
    assert sorted(pipeline.run(range(100))) == first


def test_a_failing_node_stops_everything_and_names_the_node_and_the_item() -> None:
    def fail_on_13(item: int) -> int:
        if item == 13:
            raise Boom("thirteen")
        return item

    graph = (
        Graph()
        .add(identity("a"))
        .add(FunctionStage(fail_on_13, name="b"), after="a")
        .add(identity("c"), after="a")
        .add(SequenceJoin(name="d"), after=["b", "c"])
    )
    with pytest.raises(StageError) as caught:
        graph.build(queue_size=1, batch_size=1).run(itertools.count())
    assert str(caught.value) == "stage 'b' failed on item 13: Boom: thirteen"
    assert isinstance(caught.value.__cause__, Boom)


def test_a_failing_partition_key_names_the_splitting_node_and_the_item() -> None:
    def key(item: int) -> int:
        if item == 4:
            raise Boom("no key")
        return item

    graph = (
        Graph()
        .add(identity("split"), fan_out=Partition(key=key))
        .add(identity("x"), after="split")
        .add(identity("y"), after="split")
    )
    with pytest.raises(StageError, match=r"^stage 'split' failed on item 4: Boom: no key$"):
        graph.build(batch_size=2).run(range(10))


def test_a_route_to_an_unknown_successor_is_an_error_naming_it() -> None:
    graph = (
        Graph()
        .add(identity("split"), fan_out=Partition(route=lambda item: "nowhere"))
        .add(identity("x"), after="split")
        .add(identity("y"), after="split")
    )
    with pytest.raises(StageError, match=r"route returned 'nowhere', which is not a successor"):
        graph.build().run(range(3))


class Unprintable:
    """A value whose repr() raises, as a half-built object's may."""

    def __repr__(self) -> str:
        raise RuntimeError("repr() of an unprintable value")


def test_a_route_returning_an_unprintable_non_successor_still_says_so() -> None:
    def route(item: int) -> Any:
        return Unprintable()  # not a name: a routing function's mistake

    graph = (
        Graph()
        .add(identity("split"), fan_out=Partition(route=route))
        .add(identity("x"), after="split")
        .add(identity("y"), after="split")
    )
    with pytest.raises(StageError) as caught:
        graph.build().run(range(3))
    assert isinstance(caught.value.__cause__, ValueError)
    assert "route returned <Unprintable " in str(caught.value)
    assert "which is not a successor of 'split' (successors: ['x', 'y'])" in str(caught.value)


class Mute(Exception):
    """An exception whose str() raises."""

    def __str__(self) -> str:
        raise RuntimeError("str() of a mute exception")


def raise_mute(*_: Any) -> Any:
    raise Mute


def split_into(fan_out: Any, join: Any = None) -> Graph:
    graph = Graph().add(identity("split"), fan_out=fan_out)
    graph.add(identity("x"), after="split").add(identity("y"), after="split")
    return graph if join is None else graph.add(join, after=["x", "y"])


@pytest.mark.parametrize(
    ("graph", "node"),
    [
        (split_into(Partition(key=raise_mute)), "split"),
        (split_into(Partition(route=raise_mute)), "split"),
        (split_into("broadcast", KeyJoin(raise_mute, name="join")), "join"),
        (split_into("broadcast", SequenceJoin(raise_mute, name="join")), "join"),
    ],
    ids=["partition key", "route", "key join key", "sequence join combine"],
)
def test_a_function_raising_an_exception_whose_str_fails_still_names_node_and_item(
    graph: Graph, node: str
) -> None:
    with pytest.raises(StageError) as caught:
        graph.build().run(range(3))
    assert caught.value.stage == node
    assert caught.value.has_item
    assert str(caught.value).endswith("Mute: <str() failed>")
    assert isinstance(caught.value.__cause__, Mute)


def test_a_failing_join_combine_names_the_join_and_the_item() -> None:
    def combine(left: int, right: int) -> int:
        if left == 3:
            raise Boom("cannot combine")
        return left + right

    graph = (
        Graph()
        .add(identity("a"))
        .add(identity("b"), after="a")
        .add(identity("c"), after="a")
        .add(SequenceJoin(combine, name="d"), after=["b", "c"])
    )
    with pytest.raises(StageError) as caught:
        graph.build(batch_size=1).run(range(10))
    assert caught.value.stage == "d"
    assert "Boom: cannot combine" in str(caught.value)


def test_a_branch_giving_two_outputs_for_one_item_is_an_error() -> None:
    from pipeline.stages import FlatMapFunctionStage

    graph = (
        Graph()
        .add(identity("a"))
        .add(FlatMapFunctionStage(lambda item: [item, item], name="twice"), after="a")
        .add(identity("c"), after="a")
        .add(SequenceJoin(name="d"), after=["twice", "c"])
    )
    with pytest.raises(StageError, match=r"^stage 'twice' failed on item 0: TypeError: a branch"):
        graph.build().run(range(3))


def test_breaking_out_of_a_stream_stops_every_thread() -> None:
    pipeline = diamond().build(queue_size=2, batch_size=2)
    for count, _ in enumerate(pipeline.stream(itertools.count())):
        if count == 100:
            break
    # The conftest fails this test if a thread of the run is still alive.


def test_close_from_another_thread_stops_a_stream_that_is_kept() -> None:
    pipeline = diamond().build(queue_size=2, batch_size=2)
    stream = pipeline.stream(itertools.count())
    next(stream)
    closer = threading.Thread(target=pipeline.close)
    closer.start()
    closer.join(WAIT)
    assert not closer.is_alive()
    with pytest.raises(PipelineClosed):
        for _ in stream:
            pass


def test_items_in_flight_stay_under_the_stated_bound() -> None:
    pipeline = diamond().build(queue_size=4, batch_size=4)
    read = 0

    def source() -> Iterator[int]:
        nonlocal read
        for item in range(2000):
            read += 1
            yield item

    most = 0
    gate = threading.Event()
    for _, item in pipeline.stream(source()):
        gate.wait(0.0001)  # a slow consumer, so the graph fills up
        # Single workers keep input order, so every item before this one has left the
        # graph (delivered, or dropped by branch c).
        most = max(most, read - (item + 1))
    assert 0 < most <= pipeline.max_items_in_flight


def test_statistics_have_one_entry_per_node_and_the_edges() -> None:
    pipeline = diamond().build(batch_size=8)
    pipeline.run(range(70))
    stats = pipeline.stats()
    assert isinstance(stats, GraphStatistics)
    assert [stage.name for stage in stats.stages] == ["a", "b", "c", "d"]
    assert stats.stage("c").items_in == 70
    assert stats.stage("c").items_out == 70  # a branch passes a tombstone for each drop
    (join,) = stats.joins
    assert join.dropped == 10
    assert set(stats.edges) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert stats.items_delivered == 60
    assert "d" in format_report(stats)


def test_the_watchdog_turns_a_blocked_stage_into_a_deadlock_error_naming_it() -> None:
    entered = threading.Event()

    def stuck(item: int) -> int:
        entered.set()
        stopping = current_stop_event()
        assert stopping is not None
        while not stopping.wait(WAIT):  # blocked until the run stops
            pass
        return item

    graph = (
        Graph()
        .add(identity("a"))
        .add(FunctionStage(stuck, name="stuck"), after="a")
        .add(identity("c"), after="a")
        .add(SequenceJoin(name="d"), after=["stuck", "c"])
    )
    pipeline = graph.build(queue_size=1, batch_size=1, deadlock_timeout=0.3)
    with pytest.raises(PipelineDeadlock) as caught:
        pipeline.run(range(100))
    assert entered.is_set()
    waits = caught.value.waits
    assert waits["node 'stuck' (worker 0)"] == "is inside its stage's code"
    assert waits["node 'a' (worker 0)"] == "waits to put into the inbox of 'stuck'"
    assert waits["node 'd' (worker 0)"] == "waits for items from the inbox of 'd'"
    assert str(caught.value).startswith("nothing moved for ")
    assert "node 'stuck' (worker 0) is inside its stage's code" in str(caught.value)


def test_the_watchdog_says_a_source_waiting_in_its_own_next_is_reading_the_source() -> None:
    stopped = threading.Event()

    class Stopping(SafeQueue[Any]):
        """An inbox that tells the source when the run shuts it down."""

        def shutdown(self, immediate: bool = False) -> None:
            stopped.set()
            super().shutdown(immediate)

    def source() -> Iterator[int]:
        yield 1
        stopped.wait(WAIT)  # a source waiting for its next item, until the run stops
        yield 2

    pipeline = (
        Graph().add(identity("a")).build(deadlock_timeout=0.2, queue_factory=lambda *_: Stopping(8))
    )
    with pytest.raises(PipelineDeadlock) as caught:
        pipeline.run(source())
    assert caught.value.waits["the source"] == "is inside the source's next()"
    assert caught.value.waits["node 'a' (worker 0)"] == "waits for items from the inbox of 'a'"


def test_a_sub_graph_is_a_stage_in_a_chain() -> None:
    inner = diamond(drop_every=2).as_stage("inner")
    pipeline: Pipeline[int, str] = Pipeline(
        FunctionStage(lambda item: item + 1, name="plus") >> inner >> FunctionStage(str, name="s")
    )
    outputs = pipeline.run(range(20))
    expected = sorted(str((2 * (item + 1), item + 1)) for item in range(20) if (item + 1) % 2)
    assert sorted(outputs) == expected


def test_a_failure_inside_a_sub_graph_names_the_inner_node() -> None:
    graph = Graph().add(FunctionStage(lambda item: 1 // item, name="divide"))
    pipeline: Pipeline[int, int] = Pipeline(graph.as_stage("inner"), batch_size=4)
    with pytest.raises(StageError) as caught:
        pipeline.run([3, 2, 0, 1])
    assert caught.value.stage == "inner"
    assert "stage 'divide' failed on item 0: ZeroDivisionError" in str(caught.value)


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import itertools, sys, threading, time
    from pipeline import FunctionStage, PredicateStage
    from pipeline.graph import Graph, SequenceJoin

    def slowish(item):
        time.sleep(0.001)  # the stage's own work
        return item

    graph = (
        Graph()
        .add(FunctionStage(slowish, name="a"))
        .add(FunctionStage(slowish, name="b", workers=2), after="a")
        .add(PredicateStage(lambda item: item % 3, name="c"), after="a")
        .add(SequenceJoin(name="d"), after=["b", "c"])
    )
    try:
        for count, _ in enumerate(graph.build(queue_size=2).stream(itertools.count())):
            if count == 10:
                print("running", flush=True)
    except KeyboardInterrupt:
        print("threads left:", threading.active_count() - 1, flush=True)
        sys.exit(0)
    sys.exit(3)
    """
)


def test_ctrl_c_stops_a_graph_and_leaves_no_thread() -> None:
    returncode, stdout, stderr = interrupt_when_ready(["-c", CTRL_C_SCRIPT], ready="running")
    assert returncode == 0, stderr
    assert stdout.strip() == "threads left: 0"


def test_two_builds_of_one_graph_run_at_the_same_time_each_with_its_own_joins() -> None:
    # A server that builds the graph once and calls build() per request.
    graph = (
        diamond()
        .add(FunctionStage(lambda pair: pair, name="key_a"), after="d")
        .add(FunctionStage(lambda pair: pair, name="key_b"), after="d")
        .add(KeyJoin(lambda pair: pair[1], name="by_key"), after=["key_a", "key_b"])
    )
    both_running = threading.Barrier(2, timeout=WAIT)
    outputs: dict[int, list[Any]] = {}
    errors: list[BaseException] = []

    def request(number: int) -> None:
        pipeline = graph.build(queue_size=1, batch_size=1)
        try:
            with pipeline:
                stream = pipeline.stream(range(number * 1000, number * 1000 + 100))
                got = [next(stream)]
                both_running.wait()  # both runs are under way, each at its first output
                got.extend(stream)
            outputs[number] = got
        except BaseException as exc:
            errors.append(exc)
            both_running.abort()

    threads = [threading.Thread(target=request, args=(number,)) for number in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    assert not errors, errors
    for number in (1, 2):
        items = range(number * 1000, number * 1000 + 100)
        pairs = [(2 * item, item) for item in items if item % 7]
        assert sorted(outputs[number]) == sorted((pair, pair) for pair in pairs)


def test_each_build_has_its_own_join_figures() -> None:
    graph = diamond()
    first, second = graph.build(), graph.build()
    first.run(range(14))
    second.run(range(7))
    first_stats, second_stats = first.stats(), second.stats()
    assert isinstance(first_stats, GraphStatistics)
    assert isinstance(second_stats, GraphStatistics)
    assert (first_stats.joins[0].dropped, second_stats.joins[0].dropped) == (2, 1)


def test_one_join_in_two_graphs_names_each_graphs_inputs() -> None:
    # Building a graph binds the input names on the pipeline's copy of the join, never
    # on the join itself, which two graphs being built at the same time may share.
    join: KeyJoin[Any] = KeyJoin(lambda item: 1, name="pair")

    def keeping_one_input(left: str, right: str) -> Graph:
        graph = Graph().add(identity("a")).add(identity(left), after="a")
        graph.add(PredicateStage(lambda item: False, name=right), after="a")
        return graph.add(join, after=[left, right])

    first_pipeline = keeping_one_input("b", "c").build(batch_size=4)
    second_pipeline = keeping_one_input("x", "y").build(batch_size=4)
    assert join.inputs == ()
    with pytest.raises(StageError, match=r"came twice from input 'b'"):
        first_pipeline.run(range(4))
    with pytest.raises(StageError, match=r"came twice from input 'x'"):
        second_pipeline.run(range(4))


def test_one_pipeline_run_twice_at_once_says_it_is_already_running() -> None:
    pipeline = diamond().build(queue_size=1, batch_size=1)
    stream = pipeline.stream(itertools.count())
    next(stream)
    try:
        with pytest.raises(PipelineError, match=r"^this pipeline is already running; wait for"):
            pipeline.run(range(10))
    finally:
        stream.close()
    assert len(pipeline.run(range(14))) == 12  # free again once the run ended


def test_a_join_stage_run_by_two_pipelines_at_once_says_so_in_setup() -> None:
    join: KeyJoin[Any] = KeyJoin(lambda item: item, name="pair")
    join.bind(("left", "right"))
    paired = threading.Event()
    release = threading.Event()

    def source() -> Iterator[tuple[int, int]]:
        yield from [(0, 1), (1, 1)]
        release.wait(WAIT)  # the join's input goes on: it stays set up

    def note(pair: Any) -> Any:
        paired.set()
        return pair

    first: Pipeline[Any, Any] = Pipeline([join, FunctionStage(note, name="note")], batch_size=1)
    thread = threading.Thread(target=first.run, args=(source(),))
    thread.start()
    try:
        assert paired.wait(WAIT)
        with pytest.raises(StageError) as caught:
            Pipeline([join]).run([(0, 2), (1, 2)])
    finally:
        release.set()
        thread.join(WAIT)
    assert str(caught.value).startswith(
        "stage 'pair' failed in setup(): worker 0: RuntimeError: join 'pair' is already "
        "running in another pipeline; a join's buffer serves one run at a time "
        "(Graph.build() gives each pipeline its own copy of the graph's joins)"
    )


def test_a_sub_graph_with_a_join_runs_on_several_workers() -> None:
    stage = diamond().as_stage("inner", workers=3)
    outputs = Pipeline(stage, batch_size=8).run(range(200))
    assert sorted(outputs) == [(2 * item, item) for item in range(200) if item % 7]


def test_a_resilient_stage_on_a_branch_keeps_its_policy_per_item() -> None:
    from pipeline.resilience import ResilientStage

    def fail_on_odd(item: int) -> int:
        if item % 2:
            raise Boom("odd")
        return item

    skipping = ResilientStage(FunctionStage(fail_on_odd, name="even_only"), on_error="skip")
    graph = (
        Graph()
        .add(identity("a"))
        .add(skipping, after="a")
        .add(identity("c"), after="a")
        .add(SequenceJoin(name="d", keep_partial=True), after=["even_only", "c"])
    )
    outputs = graph.build(batch_size=4).run(range(6))
    from pipeline.graph import MISSING

    assert sorted(outputs, key=lambda pair: pair[1]) == [
        (item if item % 2 == 0 else MISSING, item) for item in range(6)
    ]


def test_an_unordered_graph_with_a_watchdog_gives_every_output_and_stops_on_break() -> None:
    pipeline = diamond().build(queue_size=2, batch_size=2, ordered=False, deadlock_timeout=WAIT)
    assert len(pipeline.run(range(700))) == 600
    for count, _ in enumerate(pipeline.stream(itertools.count())):
        if count == 50:
            break


def test_a_graph_run_sets_every_attribute_a_chain_run_has() -> None:
    # _GraphRun overrides only the wiring step of _Run; this catches an attribute a
    # chain's wiring sets that the graph's would lack.
    from pipeline.pipeline import _Run

    chain_run = _Run(Pipeline(identity("a")), iter(()))
    graph_run = diamond().build()._new_run(iter(()))
    assert set(vars(chain_run)) <= set(vars(graph_run))


class FailAt(PipelineStage[int, int]):
    """Passes items on, failing on `bad`; its name says where it sits."""

    def __init__(self, name: str, bad: int | None, *, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.bad = bad

    def process(self, item: int) -> int:
        if item == self.bad:
            raise Boom(f"{self.name} fails on {item}")
        return item


@settings(max_examples=30, deadline=None)
@given(
    failing=st.sampled_from(["a", "b", "c", "m", "none"]),
    bad=st.integers(0, 40),
    workers=st.integers(1, 3),
    queue_size=st.integers(1, 3),
    batch_size=st.integers(1, 4),
    stop_after=st.one_of(st.none(), st.integers(0, 30)),
)
def test_any_failure_or_early_stop_in_a_graph_ends_the_run_and_names_the_node(
    failing: str,
    bad: int,
    workers: int,
    queue_size: int,
    batch_size: int,
    stop_after: int | None,
) -> None:
    def stage(name: str) -> FailAt:
        return FailAt(name, bad if name == failing else None, workers=workers)

    graph = (
        Graph()
        .add(stage("a"), fan_out="round_robin")
        .add(stage("b"), after="a")
        .add(stage("c"), after="a")
        .add(OrderedMerge(name="merge"), after=["b", "c"])
        .add(stage("m"), after="merge")
    )
    pipeline = graph.build(queue_size=queue_size, batch_size=batch_size, deadlock_timeout=WAIT)
    seen: list[int] = []
    raised: StageError | None = None
    try:
        for output in pipeline.stream(range(41)):
            seen.append(output)
            if stop_after is not None and len(seen) > stop_after:
                break
    except StageError as error:
        raised = error
    if raised is not None:
        assert failing != "none"
        assert (raised.stage, raised.item) == (failing, bad), raised
        assert seen == list(range(len(seen)))
        return
    # Round robin deals even items to b and odd ones to c.
    reached = failing in ("a", "m") or (failing == "b") == (bad % 2 == 0)
    expected = list(range(41)) if stop_after is None else list(range(stop_after + 1))
    if failing == "none" or not reached or stop_after is not None:
        assert seen == expected[: len(seen)]
        assert stop_after is not None or len(seen) == 41
    else:
        raise AssertionError(f"the failure in {failing!r} on {bad} was not raised")


def test_the_watchdog_waits_for_a_consumer_busy_with_its_own_work() -> None:
    pipeline = diamond().build(queue_size=1, batch_size=1, deadlock_timeout=0.1)
    pause = threading.Event()
    outputs: list[tuple[int, int]] = []
    for output in pipeline.stream(range(10)):
        if len(outputs) < 2:
            pause.wait(0.3)  # the consumer's own work, longer than the timeout
        outputs.append(output)
    assert len(outputs) == 8


def test_the_watchdog_waits_for_a_consumer_busy_while_the_source_waits_for_it() -> None:
    # A request/response source: its next item is the answer to the consumer's last
    # output, so while the consumer works nothing is queued anywhere, yet nothing is stuck.
    answers: queue.SimpleQueue[int] = queue.SimpleQueue()

    def source() -> Iterator[int]:
        yield 0
        for _ in range(3):
            yield answers.get(timeout=WAIT) + 1

    pipeline = (
        Graph()
        .add(identity("a"))
        .add(identity("b"), after="a")
        .build(batch_size=1, deadlock_timeout=0.1)
    )
    pause = threading.Event()
    outputs = []
    for output in pipeline.stream(source()):
        pause.wait(0.3)  # the consumer's own work, longer than the timeout
        outputs.append(output)
        answers.put(output)
    assert outputs == [0, 1, 2, 3]


def test_a_branch_of_several_nodes_keeps_each_items_number_to_the_join() -> None:
    graph = (
        Graph()
        .add(identity("a"))
        .add(
            FunctionStage(lambda item: item + 1, name="plus", workers=2)
            >> PredicateStage(lambda item: item % 4 != 0, name="drop")
            >> FunctionStage(lambda item: item * 10, name="times"),
            after="a",
        )
        .add(identity("same"), after="a")
        .add(SequenceJoin(name="j"), after=["times", "same"])
    )
    outputs = graph.build(queue_size=2, batch_size=3).run(range(40))
    assert outputs == [((item + 1) * 10, item) for item in range(40) if (item + 1) % 4 != 0]


def test_a_join_may_read_from_its_split_directly_and_split_again_for_a_second_join() -> None:
    graph = (
        Graph()
        .add(identity("a"))
        .add(FunctionStage(lambda item: -item, name="negate"), after="a")
        .add(SequenceJoin(lambda item, negated: item + negated, name="j1"), after=["a", "negate"])
        .add(FunctionStage(lambda item: item + 1, name="plus"), after="j1")
        .add(PredicateStage(lambda item: item % 2 == 0, name="never"), after="j1")
        .add(OrderedMerge(name="j2"), after=["plus", "never"])
    )
    outputs = graph.build(queue_size=1, batch_size=2).run(range(5))
    # j1 gives 0 for every item; j2 gets 1 from "plus" and 0 from "never", in that order.
    assert outputs == [1, 0] * 5


def test_a_key_join_pairs_two_entry_nodes() -> None:
    graph = (
        Graph()
        .add(FunctionStage(lambda item: (item, "left"), name="left"))
        .add(FunctionStage(lambda item: (item, "right"), name="right"))
        .add(KeyJoin(lambda pair: pair[0], name="k"), after=["left", "right"])
    )
    outputs = graph.build(queue_size=2, batch_size=2).run(range(20))
    assert sorted(outputs) == [((item, "left"), (item, "right")) for item in range(20)]


@settings(max_examples=25, deadline=None)
@given(
    fan_out=st.sampled_from(["broadcast", "round_robin", "partition"]),
    workers=st.integers(1, 3),
    queue_size=st.integers(1, 4),
    batch_size=st.integers(1, 5),
    drop_every=st.integers(2, 5),
)
def test_an_ordered_merge_restores_order_in_an_unordered_run(
    fan_out: str, workers: int, queue_size: int, batch_size: int, drop_every: int
) -> None:
    split: Any = Partition(key=lambda item: item // 3) if fan_out == "partition" else fan_out
    graph = (
        Graph()
        .add(identity("split"), fan_out=split)
        .add(identity("left", workers=workers), after="split")
        .add(PredicateStage(lambda item: item % drop_every != 0, name="right"), after="split")
        .add(OrderedMerge(name="merge"), after=["left", "right"])
    )
    # The merge restores the order the split numbered the items in: with one worker at
    # the split, input order, whatever order the branches' workers finish in.
    pipeline = graph.build(queue_size=queue_size, batch_size=batch_size, ordered=False)
    outputs = pipeline.run(range(60))
    if fan_out == "broadcast":
        expected = [copy for item in range(60) for copy in [item] * (2 if item % drop_every else 1)]
        assert outputs == expected
    else:
        # Each item went to one branch; only "right" drops, so what remains is in order.
        assert outputs == sorted(outputs)
        assert {item for item in range(60) if item % drop_every} <= set(outputs)


@pytest.mark.parametrize("entries", [1, 2])
def test_a_broadcast_hands_each_queue_a_list_nobody_else_reads(entries: int) -> None:
    graph = Graph()
    if entries == 1:
        graph.add(identity("split"), fan_out="broadcast")
        graph.add(labelled("left"), after="split").add(labelled("right"), after="split")
    else:
        graph.add(labelled("left")).add(labelled("right"))
    graph.add(identity("both"), after=["left", "right"])
    outputs = graph.build(queue_factory=lambda _, size: OwningQueue(size)).run(range(50))
    expected = collections.Counter((side, item) for side in ("left", "right") for item in range(50))
    assert collections.Counter(outputs) == expected
