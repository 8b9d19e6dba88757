"""GraphPipeline: run a checked graph on the chain's engine, with the chain's guarantees.

A graph run is a `Pipeline` run wired differently: one bounded inbox per node (a
`SafeQueue` unless `queue_factory` says otherwise), shared by all the node's incoming
edges; one `StageRun` per node, counting one end of stream per producer; a router per
node that broadcasts, partitions or deals round-robin to its successors' inboxes; and
the sinks' outputs merged into the results queue, which ends after every sink has.
Everything else is the chain's: the source thread, the supervisor, `run()`,
`stream()`, `close()`, early stops, Ctrl-C and the exit hook. The first failure stops
every node at once (a graph has no single position to report a failure at) and the
caller gets the `StageError` naming the node and the item.

Memory: at most `max_items_in_flight` items, summed per node from its inbox and its
workers' batches (see the property), plus what the joins buffer: a sequence join or
ordered merge at most the items in flight on its branches (already counted in the
branches' inboxes and batches); a key join as much while every key completes, and at
most its `max_pending` keys if given (without it, keys that never complete stay until
the end of the input).

With `deadlock_timeout`, a watchdog thread fails the run with `PipelineDeadlock` when
nothing has been put into or taken from any queue for that long, naming what every
thread waits on. A consumer busy with its own work (not waiting for outputs) pauses
the run, however long: that does not count as a deadlock. The watchdog cannot tell a stuck stage
from one that takes longer than the timeout for one batch (nor a stuck source from a
slow one), so choose a timeout well above the slowest batch.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline._checks import number
from pipeline.errors import ShutDown, StageError, short_repr
from pipeline.graph.build import Graph, Node, Partition, Plan
from pipeline.graph.errors import PipelineDeadlock
from pipeline.graph.join import MISSING, JoinStage, KeyJoin, Numbered
from pipeline.pipeline import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_QUEUE_SIZE,
    Pipeline,
    QueueFactory,
    _Run,
    _safe_queue,
)
from pipeline.safequeue import LinkQueue, QueueStatistics
from pipeline.stage import FilteringStage, ItemFailed, PipelineStage
from pipeline.stats import BatchObserver, PipelineStatistics
from pipeline.worker import StageRun, put_all, reorder_window

if TYPE_CHECKING:
    from pipeline.worker import Router

__all__ = ["GraphPipeline", "GraphStatistics", "JoinStatistics"]

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True, slots=True)
class JoinStatistics:
    """A join node's buffer: items held now, the most it held, items dropped unpaired."""

    name: str
    buffered: int
    high_water_mark: int
    dropped: int


@dataclass(frozen=True, slots=True)
class GraphStatistics(PipelineStatistics):
    """A snapshot of a graph run: `PipelineStatistics` per node, the edges, and the joins."""

    edges: tuple[tuple[str, str], ...] = ()
    joins: tuple[JoinStatistics, ...] = ()


class GraphPipeline(Pipeline[In, Out]):
    """A graph of stages, run like a `Pipeline`: `run()`, `stream()`, `close()`, `stats()`.

    A graph's item types are not checked across its edges; annotate the pipeline
    (`pipeline: GraphPipeline[int, str] = graph.build()`) to type what goes in and out.

    `stages` and `names` list the nodes in an order where each comes after its inputs,
    so the observe extras (report, progress, metrics) show one line per node. The joins
    among them are this pipeline's own copies of the graph's (a join's buffer serves
    one run at a time), so pipelines built from one graph can run at the same time;
    the other stages are the graph's own objects, shared by every pipeline built.

    Args:
        graph: the graph; it is checked here (`Graph.plan`).
        queue_size: the most items each node's inbox holds (backpressure).
        batch_size: the most items a thread moves in one handoff.
        ordered: each node keeps its own outputs in its input order (items of different
            branches merge first come first served; use `OrderedMerge` for input order).
        observer: called in the worker thread after every batch with a `BatchEvent`.
        queue_factory: makes each node's inbox and the results queue.
        deadlock_timeout: seconds without any queue moving after which the run fails
            with `PipelineDeadlock`; None (the default) runs no watchdog.

    Raises:
        GraphError: the graph is not one a run can serve (see `Graph.plan`).
        TypeError, ValueError: an argument is of the wrong type or out of range.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        ordered: bool = True,
        observer: BatchObserver | None = None,
        queue_factory: QueueFactory | None = None,
        deadlock_timeout: float | None = None,
    ) -> None:
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be a Graph, got {type(graph).__name__}")
        plan = _with_own_joins(graph.plan())
        super().__init__(
            [node.stage for node in plan.nodes],
            queue_size=queue_size,
            batch_size=batch_size,
            ordered=ordered,
            fail_fast=True,
            observer=observer,
            queue_factory=queue_factory,
        )
        if (
            deadlock_timeout is not None
            and not 0 < number("deadlock_timeout", deadlock_timeout) < math.inf
        ):
            raise ValueError(
                f"deadlock_timeout must be > 0 and finite, or None, got {deadlock_timeout}"
            )
        self.graph = graph
        self.plan = plan
        self.deadlock_timeout = deadlock_timeout

    @property
    def max_items_in_flight(self) -> int:
        """The most items a run holds between reading them and delivering them.

        The source's chunk, every node's inbox, each node's workers' batches and reorder
        window, the results queue, the consumer's batch, and each key join's
        `max_pending` where given (for stages that emit at most one output per item, and
        key joins whose keys all complete or that have a `max_pending`).
        """
        held_by_nodes = sum(
            self.queue_size
            + (stage.workers + reorder_window(stage.workers, self.ordered)) * self.batch_size
            for stage in self.stages
        )
        held_by_joins = sum(
            stage.max_pending or 0 for stage in self.stages if isinstance(stage, KeyJoin)
        )
        return 2 * self.batch_size + held_by_nodes + self.queue_size + held_by_joins

    def stats(self) -> GraphStatistics:
        """Return a snapshot of the run in progress, or of the last run; zeros before any run.

        The `PipelineStatistics` of a chain, one entry per node, plus the graph's edges
        and each join's buffer (see `GraphStatistics`).
        """
        stats = super().stats()
        assert isinstance(stats, GraphStatistics)  # a graph's runs and zero snapshot make one
        return stats

    def _before_any_run(self) -> GraphStatistics:
        chain = super()._before_any_run()
        return GraphStatistics(
            **{field.name: getattr(chain, field.name) for field in fields(chain)},
            **_graph_figures(self.plan),
        )

    def _new_run(self, source: Iterator[Any]) -> _Run:
        return _GraphRun(self, source)

    def __repr__(self) -> str:
        return (
            f"GraphPipeline({', '.join(self.names)}, queue_size={self.queue_size}, "
            f"batch_size={self.batch_size})"
        )


def _graph_figures(plan: Plan) -> dict[str, Any]:
    """Return the `edges` and `joins` fields of a `GraphStatistics` of `plan`, as they are now."""
    joins = []
    for node in plan.nodes:
        if isinstance(node.stage, JoinStage):
            join = node.stage
            with join._figures:
                joins.append(
                    JoinStatistics(node.name, join.buffered, join.high_water_mark, join.dropped)
                )
    edges = tuple(
        (name, successor)
        for name, successors in plan.successors.items()
        for successor in successors
    )
    return {"edges": edges, "joins": tuple(joins)}


class _WaitBoard:
    """What each thread of a watched run is waiting on, and how many waits have ended."""

    def __init__(self) -> None:
        # Guards waits (thread -> what it waits on) and moves (completed puts and gets).
        self._lock = threading.Lock()
        self.waits: dict[threading.Thread, str] = {}
        self.moves = 0

    def begin(self, what: str) -> None:
        with self._lock:
            self.waits[threading.current_thread()] = what

    def end(self) -> None:
        with self._lock:
            self.waits.pop(threading.current_thread(), None)
            self.moves += 1

    def snapshot(self) -> tuple[int, dict[threading.Thread, str]]:
        with self._lock:
            return self.moves, dict(self.waits)


class _WatchedQueue:
    """A link that tells the wait board when a thread starts and stops waiting on it."""

    def __init__(self, queue: LinkQueue[Any], label: str, board: _WaitBoard) -> None:
        self.queue = queue
        self.label = label
        self.board = board

    @property
    def maxsize(self) -> int:
        return self.queue.maxsize

    def put_many(
        self,
        items: list[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        copy: bool = True,
    ) -> None:
        self.board.begin(f"waits to put into {self.label}")
        try:
            self.queue.put_many(items, block, timeout, copy=copy)
        finally:
            self.board.end()

    def get_many(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]:
        self.board.begin(f"waits for items from {self.label}")
        try:
            return self.queue.get_many(max_items, block, timeout)
        finally:
            self.board.end()

    def shutdown(self, immediate: bool = False) -> None:
        self.queue.shutdown(immediate)

    def statistics(self) -> QueueStatistics:
        return self.queue.statistics()


class _Inlet:
    """The run's input side: every entry node's inbox gets every item read (and the end)."""

    def __init__(self, queues: list[LinkQueue[Any]]) -> None:
        self.queues = queues

    @property
    def maxsize(self) -> int:
        return min(queue.maxsize for queue in self.queues)

    def put_many(
        self,
        items: list[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        copy: bool = True,
    ) -> None:
        for queue, share in zip(self.queues, _shares(items, len(self.queues)), strict=True):
            put_all(queue, share)

    def get_many(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]:
        raise TypeError("the run's inlet is only put into")

    def shutdown(self, immediate: bool = False) -> None:
        for queue in self.queues:
            queue.shutdown(immediate)

    def statistics(self) -> QueueStatistics:
        return self.queues[0].statistics()


class _Outlet:
    """The sinks' shared way into the results queue: it ends once every sink has."""

    def __init__(self, results: LinkQueue[Any], sinks: int) -> None:
        self.results = results
        # Guards _sinks_left: the sinks whose end of stream has not come yet.
        self._lock = threading.Lock()
        self._sinks_left = sinks

    def emit(self, outputs: list[Any]) -> None:
        put_all(self.results, outputs)

    def end(self, marker: Any) -> None:
        with self._lock:
            self._sinks_left -= 1
            last = self._sinks_left == 0
        if last:
            self.results.put_many([marker], copy=False)


class _Edge:
    """One outgoing edge: the successor's inbox, and how items are marked for a join.

    `join_input` is the position of this edge among a join's inputs; `numbered` says
    the items are numbered ones, which become `(edge, sequence, copies, value)`.
    """

    __slots__ = ("join_input", "numbered", "queue")

    def __init__(self, queue: LinkQueue[Any], join_input: int | None, numbered: bool) -> None:
        self.queue = queue
        self.join_input = join_input
        self.numbered = numbered

    def put(self, items: list[Any]) -> None:
        edge = self.join_input
        if edge is not None:
            if self.numbered:
                items = [(edge, sequence, copies, value) for sequence, copies, value in items]
            else:
                items = [(edge, item) for item in items]
        put_all(self.queue, items)


class _FanOut:
    """A node's router: numbers its outputs if a join pairs them, then splits them."""

    def __init__(
        self,
        node: Node,
        edges: list[_Edge],
        successors: tuple[str, ...],
        numbered: bool,
        on_failure: Callable[[StageError], None],
    ) -> None:
        self.node = node
        self.edges = edges
        self.successors = successors
        self.numbered = numbered
        self.on_failure = on_failure
        fan_out = node.fan_out
        self.broadcast = fan_out == "broadcast" or len(edges) == 1
        self.partition = fan_out if isinstance(fan_out, Partition) else None
        # Guards the next sequence number and the round-robin turn.
        self._lock = threading.Lock()
        self._next_number = 0
        self._turn = 0

    def emit(self, outputs: list[Any]) -> None:
        if self.numbered:
            copies = len(self.edges) if self.broadcast else 1
            with self._lock:
                first = self._next_number
                self._next_number += len(outputs)
            outputs = [(sequence, copies, value) for sequence, value in enumerate(outputs, first)]
        if self.broadcast:
            for edge, share in zip(self.edges, _shares(outputs, len(self.edges)), strict=True):
                edge.put(share)
            return
        if self.partition is not None:
            shares = self._partition(outputs, self.partition)
        else:
            count = len(self.edges)
            with self._lock:
                turn = self._turn
                self._turn = (turn + len(outputs)) % count
            shares = [outputs[(index - turn) % count :: count] for index in range(count)]
        for edge, share in zip(self.edges, shares, strict=True):
            if share:
                edge.put(share)

    def end(self, marker: Any) -> None:
        for edge in self.edges:
            edge.queue.put_many([marker], copy=False)

    def _partition(self, outputs: list[Any], partition: Partition) -> list[list[Any]]:
        """Split outputs by key or route; a failing key or route fails the run, naming the item."""
        shares: list[list[Any]] = [[] for _ in self.edges]
        count = len(self.edges)
        for output in outputs:
            item = output[2] if self.numbered else output
            try:
                if partition.key is not None:
                    index = hash(partition.key(item)) % count
                else:
                    assert partition.route is not None
                    target = partition.route(item)
                    if target not in self.successors:
                        raise ValueError(
                            f"route returned {short_repr(target)}, which is not a successor of "
                            f"{self.node.name!r} (successors: {list(self.successors)})"
                        )
                    index = self.successors.index(target)
            except BaseException as exc:
                self.on_failure(StageError.caused_by(exc, self.node.name, "route", item))
                raise ShutDown from None
            shares[index].append(output)
        return shares


class _Branch(PipelineStage[Any, Any]):
    """A stage on a branch between a numbering split and its join, run item by item.

    Each numbered item goes through the user's stage alone, so that its answer keeps
    the item's number: one output, or a tombstone (`MISSING`) when the stage dropped it.
    A tombstone from a node earlier on the branch passes on without reaching the stage.
    A stage that keeps the default `process_batch` is asked `keep(item)` or
    `process(item)` directly; any other (a vectorised stage, a `ResilientStage`) gets
    `process_batch([item])`, so whatever its batch does per item still happens.
    """

    def __init__(self, stage: PipelineStage[Any, Any], join_input: int | None) -> None:
        super().__init__(stage.name, workers=stage.workers, latency_target=stage.latency_target)
        self.stage = stage
        self.join_input = join_input
        self._answer: Callable[[Any], Any] = self._one_batch
        kind = type(stage)
        if isinstance(stage, FilteringStage):
            if kind.process_batch is FilteringStage.process_batch:
                keep = stage.keep
                self._answer = lambda value: value if keep(value) else MISSING
        elif kind.process_batch is PipelineStage.process_batch:
            self._answer = stage.process

    def setup(self) -> None:
        self.stage.setup()

    def teardown(self) -> None:
        self.stage.teardown()

    def flush(self) -> list[Any]:
        held = self.stage.flush()
        if held:
            raise TypeError(
                f"a branch of a join cannot emit outputs from flush() (they have no item "
                f"to be joined with), got {len(held)}"
            )
        return []

    def process_batch(self, items: list[Numbered]) -> list[Any]:
        # The last node of a branch marks its outputs for the join: (edge, number, ...).
        answer = self._answer
        edge = self.join_input
        outputs: list[Any] = []
        for index, (sequence, copies, value) in enumerate(items):
            if value is MISSING:  # dropped earlier on this branch: the tombstone goes on
                answered = MISSING
            else:
                try:
                    answered = answer(value)
                except ItemFailed as failed:
                    raise ItemFailed(value, index, outputs) from (failed.__cause__ or failed)
                except BaseException as exc:
                    raise ItemFailed(value, index, outputs) from exc
            if edge is None:
                outputs.append((sequence, copies, answered))
            else:
                outputs.append((edge, sequence, copies, answered))
        return outputs

    def _one_batch(self, value: Any) -> Any:
        answers = self.stage.process_batch([value])
        if not isinstance(answers, list) or len(answers) > 1:
            raise TypeError(
                f"a branch of a join must give at most one output per item (a list), "
                f"got {answers!r}"
            )
        return answers[0] if answers else MISSING


class _GraphRun(_Run):
    """One run of a graph: the chain's run with a node's inbox per node and routers between.

    Only the wiring differs from a chain's run (`_wire`); the threads, the stops, the
    failures and the statistics are the same engine's.
    """

    def __init__(self, pipeline: GraphPipeline[Any, Any], source: Iterator[Any]) -> None:
        self.plan = pipeline.plan
        self.deadlock_timeout = pipeline.deadlock_timeout
        self.board = _WaitBoard() if self.deadlock_timeout is not None else None
        self._watch_stopping = threading.Event()
        super().__init__(pipeline, source)
        # For the watchdog's message: each thread's role, and what it does when it is
        # not waiting on a queue.
        self.roles: dict[threading.Thread, tuple[str, str]] = {
            self.source_thread: ("the source", "is inside the source's next()")
        }
        workers = iter(self.threads[2:])
        for stage_run in self.stage_runs:
            for worker in range(stage_run.stage.workers):
                role = f"node {stage_run.name!r} (worker {worker})"
                self.roles[next(workers)] = (role, "is inside its stage's code")
        if self.board is not None:
            self.threads.append(self._thread(self._watch, "pipeline-watchdog"))

    def _wire(self, pipeline: Pipeline[Any, Any]) -> tuple[list[LinkQueue[Any]], list[StageRun]]:
        """Return an inlet, one inbox per node and the results; a stage run per node."""
        plan = self.plan
        make_queue = pipeline.queue_factory or _safe_queue
        inboxes = {
            node.name: self._watched(make_queue(node.name, pipeline.queue_size), node.name)
            for node in plan.nodes
        }
        results = self._watched(make_queue("results", pipeline.queue_size), None)
        inlet: LinkQueue[Any]
        if len(plan.entries) == 1:
            inlet = inboxes[plan.entries[0]]
        else:
            inlet = _Inlet([inboxes[name] for name in plan.entries])
        outlet = _Outlet(results, len(plan.sinks))
        by_name = {node.name: node for node in plan.nodes}
        stage_runs = []
        for node in plan.nodes:
            router: Router
            if node.name in plan.sinks:
                router = outlet
            else:
                edges = [
                    self._edge(inboxes, by_name[successor], node)
                    for successor in plan.successors[node.name]
                ]
                router = _FanOut(
                    node, edges, plan.successors[node.name], node.name in plan.splits, self.fail
                )
            run_stage: PipelineStage[Any, Any] = node.stage
            if node.name in plan.branches:
                (successor,) = plan.successors[node.name]
                run_stage = _Branch(node.stage, _join_input(by_name[successor], node.name))
            stage_runs.append(
                StageRun(
                    run_stage,
                    inboxes[node.name],
                    router,
                    name=node.name,
                    producers=max(1, len(node.after)),
                    max_batch=pipeline.batch_size,
                    ordered=pipeline.ordered,
                    on_failure=self.fail,
                    stop_upstream=None,
                    observer=pipeline.observer,
                    owner=self,
                )
            )
        return [inlet, *inboxes.values(), results], stage_runs

    def _edge(self, inboxes: dict[str, LinkQueue[Any]], successor: Node, node: Node) -> _Edge:
        """Return the edge from `node` to `successor`; a branch marks its own outputs."""
        inbox = inboxes[successor.name]
        join_input = _join_input(successor, node.name)
        if join_input is None or node.name in self.plan.branches:
            return _Edge(inbox, None, False)
        return _Edge(inbox, join_input, node.name in self.plan.splits)

    def _watched(self, queue: LinkQueue[Any], node: str | None) -> LinkQueue[Any]:
        if self.board is None:
            return queue
        label = _RESULTS if node is None else f"the inbox of {node!r}"
        return _WatchedQueue(queue, label, self.board)

    def stop(self) -> None:
        self._watch_stopping.set()
        super().stop()

    def statistics(self) -> GraphStatistics:
        return self.snapshot(GraphStatistics, **_graph_figures(self.plan))

    def _watch(self) -> None:
        """Fail the run with PipelineDeadlock once no queue moves for a while; a thread target."""
        assert self.board is not None
        assert self.deadlock_timeout is not None
        timeout = self.deadlock_timeout
        last_moves, last_change = -1, time.monotonic()
        while not self._watch_stopping.wait(timeout / 4):
            moves, waits = self.board.snapshot()
            now = time.monotonic()
            if moves != last_moves or self._consumer_away(waits):
                last_moves, last_change = moves, now
                continue
            if now - last_change < timeout:
                continue
            error = self._deadlock(now - last_change, waits)
            with self._lock:
                if self.failure is None:
                    self.failure = error
            self.stop()
            return

    def _consumer_away(self, waits: dict[threading.Thread, str]) -> bool:
        """Whether the consumer is busy with its own work, not waiting for outputs: a pause.

        Whatever the run's threads wait on then (room in the results queue, or a source
        whose next item answers the consumer's last output), they wait for the consumer;
        a stuck stage is still found once the consumer waits for outputs again.
        """
        taking = f"waits for items from {_RESULTS}"
        return not any(what == taking for what in waits.values())

    def _deadlock(self, still: float, waits: dict[threading.Thread, str]) -> PipelineDeadlock:
        described: dict[str, str] = {}
        for thread, (role, busy) in self.roles.items():
            if thread.is_alive():
                described[role] = waits.get(thread, busy)
        for thread, what in waits.items():
            if thread not in self.roles:
                described[f"the consumer ({thread.name})"] = what
        lines = "; ".join(f"{role} {what}" for role, what in described.items())
        return PipelineDeadlock(f"nothing moved for {still:.1f} s: {lines}", described)


_RESULTS = "the results queue"


def _shares(items: list[Any], count: int) -> list[list[Any]]:
    """Return `items` and `count - 1` copies of it, all made before any is handed over.

    A queue owns the list it is given (`SafeQueue` hands chunks on uncopied, and the
    consumer that takes one may extend it with the next), so a copy taken after the
    first hand-over could copy that consumer's next items too.
    """
    return [items, *(list(items) for _ in range(count - 1))]


def _with_own_joins(plan: Plan) -> Plan:
    """Return `plan` with a copy of each join for one pipeline alone, bound to its inputs.

    The graph's own join is never bound: two graphs built at the same time may share it.
    """
    nodes = []
    for node in plan.nodes:
        if not isinstance(node.stage, JoinStage):
            nodes.append(node)
            continue
        join = node.stage.copy_for_pipeline()
        join.bind(node.after)
        nodes.append(replace(node, stage=join))
    return replace(plan, nodes=tuple(nodes))


def _join_input(successor: Node, name: str) -> int | None:
    """Return the position of `name` among a join's inputs; None if `successor` is no join."""
    if isinstance(successor.stage, JoinStage):
        return successor.after.index(name)
    return None
