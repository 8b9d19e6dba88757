"""Graph: stages as nodes, edges between them, checked when the graph is built.

A node is a stage, named by the stage's name. `add(stage, after=...)` connects it below
the nodes it reads from. The nodes that come after no other node read the run's
input (each gets every item); the nodes no other node reads from are the sinks, whose
outputs are merged into the run's output. A node with several successors splits its
outputs by its `fan_out`: "broadcast" (every successor gets every item: the same
objects, shared, not copied), "round_robin", or a `Partition` (each item to exactly
one successor, by the hash of a key or by a routing function). A node with several
predecessors merges them, first come first served, through its one inbox.

The graph is checked by `plan()`, which `build()` calls: unknown names, cycles, nodes
not connected to the rest, and joins that cannot pair their inputs are refused with a
`GraphError` naming the nodes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline._checks import seconds
from pipeline.graph.errors import GraphError
from pipeline.graph.join import JoinStage, KeyJoin, SequenceJoin
from pipeline.graph.order import names_after, successors_of, topological_order
from pipeline.graph.picture import Picture
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE
from pipeline.stage import PipelineStage, StageChain

if TYPE_CHECKING:
    from pipeline.graph.compose import SubgraphStage
    from pipeline.graph.run import GraphPipeline
    from pipeline.pipeline import QueueFactory
    from pipeline.stats import BatchObserver

__all__ = ["FanOut", "Graph", "Node", "Partition", "Plan"]


@dataclass(frozen=True)
class Partition:
    """Send each item to exactly one successor: by `hash(key(item))`, or by `route(item)`.

    Give one of the two. `route` returns the name of the successor; `key` spreads
    items with equal keys to the same successor (in the order successors were added).
    Both run in the splitting node's worker threads.
    """

    key: Callable[[Any], Hashable] | None = None
    route: Callable[[Any], str] | None = None

    def __post_init__(self) -> None:
        if (self.key is None) == (self.route is None):
            raise TypeError("Partition needs exactly one of key= and route=")
        given = self.key if self.key is not None else self.route
        if not callable(given):
            raise TypeError(f"Partition's key/route must be callable, got {type(given).__name__}")


FanOut = Literal["broadcast", "round_robin"] | Partition


@dataclass(frozen=True)
class Node:
    """One node of a graph: its stage, the nodes it reads from, and how it splits."""

    stage: PipelineStage[Any, Any]
    after: tuple[str, ...]
    fan_out: FanOut

    @property
    def name(self) -> str:
        return self.stage.name


@dataclass(frozen=True)
class Plan:
    """A checked graph: nodes in an order where each comes after its inputs, and the wiring.

    `splits` maps each split whose items a join pairs to that join; `branches` maps each
    node on the way from such a split to its join to the split.
    """

    nodes: tuple[Node, ...]
    successors: dict[str, tuple[str, ...]]
    entries: tuple[str, ...]
    sinks: tuple[str, ...]
    splits: dict[str, str] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


class Graph:
    """A directed acyclic graph of stages; build it with `add`, run it with `build().run()`.

    Every node has one bounded inbox shared by all its incoming edges and ends after
    the end of stream of every producer, so no consumer waits on one particular
    producer: a split that rejoins cannot deadlock on full queues.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}

    def add(
        self,
        stage: PipelineStage[Any, Any] | StageChain[Any, Any],
        *,
        after: str | Sequence[str] = (),
        fan_out: FanOut = "broadcast",
    ) -> Graph:
        """Add `stage` as a node reading from the nodes named in `after`; return the graph.

        A chain made with `>>` adds one node per stage, each reading from the one before
        it; the first reads from `after`, and the last splits by `fan_out`. A chain is
        added whole or not at all: when one of its stages is refused, none is added.

        Raises:
            TypeError: `stage` is not a stage or chain, or `after`/`fan_out` has the wrong type.
            GraphError: a node of that name is already in the graph, or the stage is.
        """
        if isinstance(stage, StageChain):
            trial = Graph()
            trial._nodes = dict(self._nodes)
            *leading, last = stage.stages
            for link in leading:
                trial.add(link, after=after)
                after = link.name
            trial.add(last, after=after, fan_out=fan_out)
            self._nodes = trial._nodes
            return self
        if not isinstance(stage, PipelineStage):
            raise TypeError(
                f"stage must be a PipelineStage or a chain of them, got {type(stage).__name__}"
            )
        if stage.name in self._nodes:
            raise GraphError(
                f"a node named {stage.name!r} is already in the graph; "
                "give each stage a distinct name"
            )
        if any(node.stage is stage for node in self._nodes.values()):
            raise GraphError(f"stage {stage!r} is already a node of the graph")
        names = names_after(after, "node")
        if len(set(names)) != len(names):
            raise GraphError(f"node {stage.name!r} names the same input twice: {list(names)}")
        if fan_out not in ("broadcast", "round_robin") and not isinstance(fan_out, Partition):
            raise TypeError(
                f"fan_out must be 'broadcast', 'round_robin' or a Partition, got {fan_out!r}"
            )
        self._nodes[stage.name] = Node(stage, names, fan_out)
        return self

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes in the order they were added."""
        return tuple(self._nodes.values())

    def plan(self) -> Plan:
        """Check the graph and return its wiring.

        Raises:
            GraphError: the graph is empty, names an unknown node, has a cycle, has a
                node not connected to the others, has a join its inputs cannot serve,
                or runs itself through a sub-graph node (`as_stage`).
        """
        nodes = self._nodes
        if not nodes:
            raise GraphError("the graph has no nodes")
        for node in nodes.values():
            for name in node.after:
                if name not in nodes:
                    raise GraphError(
                        f"node {node.name!r} comes after {name!r}, which is not in the graph"
                    )
        after = {name: node.after for name, node in nodes.items()}
        successors = successors_of(after)
        order = topological_order(after, "the graph")
        _check_connected(nodes, successors)
        _check_not_inside_itself(self)
        for node in nodes.values():
            if not successors[node.name] and node.fan_out != "broadcast":
                raise GraphError(
                    f"node {node.name!r} has fan_out={node.fan_out!r} but no node comes after it"
                )
        plan = Plan(
            nodes=tuple(nodes[name] for name in order),
            successors={name: tuple(names) for name, names in successors.items()},
            entries=tuple(name for name in order if not nodes[name].after),
            sinks=tuple(name for name in order if not successors[name]),
        )
        for node in plan.nodes:
            if isinstance(node.stage, JoinStage):
                _check_join(node, plan)
        return plan

    def build(
        self,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        ordered: bool = True,
        observer: BatchObserver | None = None,
        queue_factory: QueueFactory | None = None,
        deadlock_timeout: float | None = None,
    ) -> GraphPipeline[Any, Any]:
        """Check the graph and return a `GraphPipeline` that runs it (see its arguments)."""
        from pipeline.graph.run import GraphPipeline

        return GraphPipeline(
            self,
            queue_size=queue_size,
            batch_size=batch_size,
            ordered=ordered,
            observer=observer,
            queue_factory=queue_factory,
            deadlock_timeout=deadlock_timeout,
        )

    def as_stage(
        self, name: str | None = None, *, workers: int = 1, **options: Any
    ) -> SubgraphStage:
        """Return a stage that runs each batch it gets through this graph (see `SubgraphStage`)."""
        from pipeline.graph.compose import SubgraphStage

        return SubgraphStage(self, name=name, workers=workers, **options)

    def to_dot(self) -> str:
        """Return the graph in Graphviz's DOT language: nodes, edges, splits and joins.

        Each node is drawn with its name and its workers (or its kind of join); the
        names are escaped, so any name gives valid DOT (see `pipeline.graph.picture`).
        """
        return self._picture().to_dot()

    def to_mermaid(self) -> str:
        """Return the graph as a Mermaid flowchart (GitHub and many wikis draw these)."""
        return self._picture().to_mermaid()

    def to_png(self, path: str | Path, *, timeout: float = 60.0) -> Path:
        """Draw the graph into a PNG file with Graphviz's `dot` program; return the path.

        Blocks until `dot` has finished, at most `timeout` seconds (then it is killed).
        The DOT text goes to `dot` in UTF-8, its own default, whatever the locale.

        Raises:
            RuntimeError: Graphviz's `dot` is not installed (not on PATH), it failed, or
                it did not finish within `timeout` seconds.
        """
        limit = seconds("timeout", timeout)
        dot = shutil.which("dot")
        if dot is None:
            raise RuntimeError("to_png() needs Graphviz's dot program on PATH; install graphviz")
        target = Path(path)
        try:
            finished = subprocess.run(
                [dot, "-Tpng", "-o", str(target)],
                input=self.to_dot().encode("utf-8"),
                capture_output=True,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"dot did not finish within {limit:g} s; draw a smaller graph or give "
                "to_png() a longer timeout"
            ) from exc
        if finished.returncode:
            problem = finished.stderr.decode("utf-8", errors="replace").strip()
            raise RuntimeError(f"dot failed ({finished.returncode}): {problem}")
        return target

    def __repr__(self) -> str:
        return f"Graph({', '.join(self._nodes)})"

    def _picture(self) -> Picture:
        """Check the graph and draw it: the run's input, the nodes, the run's output."""
        plan = self.plan()
        picture = Picture("pipeline")
        start = picture.end("input")
        ids = {
            node.name: picture.box(
                _label(node), "diamond" if isinstance(node.stage, JoinStage) else "box"
            )
            for node in plan.nodes
        }
        finish = picture.end("output")
        for name in plan.entries:
            picture.arrow(start, ids[name])
        for node in plan.nodes:
            kind = _fan_out_label(node, plan)
            for successor in plan.successors[node.name]:
                picture.arrow(ids[node.name], ids[successor], kind)
        for name in plan.sinks:
            picture.arrow(ids[name], finish)
        return picture


def _label(node: Node) -> tuple[str, str]:
    stage = node.stage
    if isinstance(stage, JoinStage):
        return (node.name, stage.kind)
    return (node.name, "1 worker" if stage.workers == 1 else f"{stage.workers} workers")


def _fan_out_label(node: Node, plan: Plan) -> str:
    if len(plan.successors[node.name]) < 2:
        return ""
    if isinstance(node.fan_out, Partition):
        return "partition"
    return "round robin" if node.fan_out == "round_robin" else "broadcast"


def _check_connected(nodes: dict[str, Node], successors: dict[str, list[str]]) -> None:
    """Refuse a graph that falls apart into pieces not connected to one another."""
    first = next(iter(nodes))
    reached = {first}
    frontier = [first]
    while frontier:
        name = frontier.pop()
        for other in (*nodes[name].after, *successors[name]):
            if other not in reached:
                reached.add(other)
                frontier.append(other)
    apart = [name for name in nodes if name not in reached]
    if apart:
        raise GraphError(
            f"nodes {apart} are not connected to nodes {sorted(reached)}; a graph must be "
            "one connected piece (run separate graphs separately)"
        )


def _check_not_inside_itself(graph: Graph) -> None:
    """Refuse a graph that runs itself through its sub-graph nodes, which would never end."""
    from pipeline.graph.compose import SubgraphStage

    seen: set[int] = set()

    def walk(current: Graph, path: list[str]) -> None:
        seen.add(id(current))
        for node in current.nodes:
            if not isinstance(node.stage, SubgraphStage):
                continue
            through = [*path, node.name]
            if node.stage.graph is graph:
                shown = " -> ".join(repr(name) for name in through)
                raise GraphError(
                    f"node {through[0]!r} runs the graph it is in, through {shown}: each "
                    "batch would start a run of it again, without end"
                )
            if id(node.stage.graph) not in seen:
                walk(node.stage.graph, through)

    walk(graph, [])


def _check_join(join: Node, plan: Plan) -> None:
    """Check that a join's inputs can be paired; record the split and its branches.

    A key join needs exactly two inputs. A sequence join or ordered merge pairs items by
    the number a split gave them, so every input must lead back, through nodes with
    one input and one successor each, to one split, all of whose successors lead to
    this join; a sequence join also needs that split to broadcast.
    """
    stage = join.stage
    assert isinstance(stage, JoinStage)
    if stage.workers != 1:
        raise GraphError(
            f"join {join.name!r} runs one worker (its buffer is its state), got "
            f"workers={stage.workers}"
        )
    if not stage.numbered:
        if isinstance(stage, KeyJoin) and len(join.after) != 2:
            raise GraphError(
                f"key join {join.name!r} needs exactly two inputs, got {list(join.after)}"
            )
        return
    if len(join.after) < 2:
        raise GraphError(f"join {join.name!r} needs at least two inputs, got {list(join.after)}")
    by_name = {node.name: node for node in plan.nodes}
    found: dict[str, tuple[str, list[str]]] = {}
    for name in join.after:
        path: list[str] = []
        current = name
        while len(plan.successors[current]) == 1:
            node = by_name[current]
            if len(node.after) != 1 or isinstance(node.stage, JoinStage):
                raise GraphError(
                    f"join {join.name!r} pairs items by the number a split gave them, but its "
                    f"input {name!r} reaches it through {current!r}, which "
                    + (
                        "is a join itself"
                        if isinstance(node.stage, JoinStage)
                        else f"reads from {list(node.after) or 'the run input'}"
                    )
                    + "; put the join right below one split and its branches"
                )
            path.append(current)
            current = node.after[0]
        found[name] = (current, path)
    splits = {split for split, _ in found.values()}
    if len(splits) != 1:
        shown = ", ".join(
            f"{name!r} from split {split!r}" for name, (split, _) in sorted(found.items())
        )
        raise GraphError(
            f"join {join.name!r} pairs items by the number one split gave them, but its "
            f"inputs come from different splits ({shown}); their items share an ancestor "
            "but not a numbering, so pairing them per edge could deadlock or mis-pair"
        )
    split = splits.pop()
    heads = {(path[-1] if path else join.name) for _, path in found.values()}
    if set(plan.successors[split]) != heads:
        others = sorted(set(plan.successors[split]) - heads)
        raise GraphError(
            f"split {split!r} feeds join {join.name!r} and also {others}; a split whose "
            "items a join pairs must send everything to that join's branches"
        )
    if isinstance(stage, SequenceJoin) and by_name[split].fan_out != "broadcast":
        raise GraphError(
            f"sequence join {join.name!r} needs every branch's answer for each item, but "
            f"split {split!r} sends each item to one branch; use OrderedMerge below it"
        )
    if split in plan.splits:
        raise GraphError(
            f"split {split!r} feeds two joins: {plan.splits[split]!r} and {join.name!r}"
        )
    if split in plan.branches:
        raise GraphError(
            f"split {split!r} is itself on a branch of split {plan.branches[split]!r}; "
            "nested numbered splits are not supported"
        )
    plan.splits[split] = join.name
    for _, path in found.values():
        for name in path:
            plan.branches[name] = split
