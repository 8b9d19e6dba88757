"""Tests for building graphs: what is refused (with the message pinned) and the pictures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline import Pipeline, StageError
from pipeline.graph import (
    Graph,
    GraphError,
    GraphPipeline,
    KeyJoin,
    OrderedMerge,
    Partition,
    SequenceJoin,
)
from pipeline.stages import FunctionStage, PredicateStage


def node(name: str) -> FunctionStage[Any, Any]:
    return FunctionStage(lambda item: item, name=name)


def diamond() -> Graph:
    return (
        Graph()
        .add(node("a"))
        .add(node("b"), after="a")
        .add(PredicateStage(lambda item: item % 7 != 0, name="c"), after="a")
        .add(SequenceJoin(name="d"), after=["b", "c"])
    )


def test_an_empty_graph_is_refused() -> None:
    with pytest.raises(GraphError, match=r"^the graph has no nodes$"):
        Graph().plan()


def test_an_unknown_input_is_refused_naming_both_nodes() -> None:
    graph = Graph().add(node("a")).add(node("b"), after="x")
    with pytest.raises(GraphError, match=r"^node 'b' comes after 'x', which is not in the graph$"):
        graph.plan()


def test_a_cycle_is_refused_showing_the_cycle() -> None:
    graph = Graph().add(node("a")).add(node("b"), after=["a", "d"]).add(node("c"), after="b")
    graph.add(node("d"), after="c")
    with pytest.raises(GraphError, match=r"^the graph has a cycle: b -> c -> d -> b$"):
        graph.plan()


def test_nodes_not_connected_to_the_rest_are_refused_by_name() -> None:
    graph = Graph().add(node("a")).add(node("b"), after="a").add(node("lone"))
    with pytest.raises(
        GraphError, match=r"^nodes \['lone'\] are not connected to nodes \['a', 'b'\]"
    ):
        graph.plan()


def test_a_node_name_given_twice_is_refused() -> None:
    graph = Graph().add(node("a"))
    with pytest.raises(GraphError, match=r"^a node named 'a' is already in the graph"):
        graph.add(node("a"))


def test_the_same_input_named_twice_is_refused() -> None:
    graph = Graph().add(node("a"))
    with pytest.raises(GraphError, match=r"names the same input twice: \['a', 'a'\]"):
        graph.add(node("b"), after=["a", "a"])


def test_bad_arguments_to_add_name_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"^stage must be a PipelineStage or a chain of them, got"):
        Graph().add(lambda item: item)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^fan_out must be 'broadcast', 'round_robin' or a"):
        Graph().add(node("a"), fan_out="random")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Partition needs exactly one of key= and route=$"):
        Partition()


def test_a_fan_out_on_a_node_without_successors_is_refused() -> None:
    graph = Graph().add(node("a"), fan_out="round_robin")
    with pytest.raises(GraphError, match=r"^node 'a' has fan_out='round_robin' but no node"):
        graph.plan()


def test_a_join_whose_inputs_come_from_different_splits_is_refused_naming_them() -> None:
    # b and c share the ancestor a, but reach the join from two different splits: pairing
    # them per edge is the classic deadlock (and mis-pairs items), so it is refused.
    graph = (
        Graph()
        .add(node("a"))
        .add(node("s1"), after="a")
        .add(node("s2"), after="a")
        .add(node("b"), after="s1")
        .add(node("x"), after="s1")
        .add(node("c"), after="s2")
        .add(node("y"), after="s2")
        .add(SequenceJoin(name="j"), after=["b", "c"])
    )
    with pytest.raises(GraphError) as caught:
        graph.plan()
    assert str(caught.value) == (
        "join 'j' pairs items by the number one split gave them, but its inputs come from "
        "different splits ('b' from split 's1', 'c' from split 's2'); their items share an "
        "ancestor but not a numbering, so pairing them per edge could deadlock or mis-pair"
    )


def test_a_join_whose_input_merges_several_streams_is_refused() -> None:
    graph = (
        Graph()
        .add(node("a"))
        .add(node("b"), after="a")
        .add(node("c"), after="a")
        .add(node("m"), after=["b", "c"])
        .add(node("e"), after="a")
        .add(SequenceJoin(name="j"), after=["m", "e"])
    )
    with pytest.raises(GraphError, match=r"input 'm' reaches it through 'm', which reads from"):
        graph.plan()


def test_a_split_that_also_feeds_nodes_outside_the_join_is_refused() -> None:
    graph = diamond().add(node("other"), after="a")
    with pytest.raises(GraphError, match=r"^split 'a' feeds join 'd' and also \['other'\]"):
        graph.plan()


def test_a_sequence_join_below_a_partition_is_refused() -> None:
    graph = (
        Graph()
        .add(node("a"), fan_out=Partition(key=lambda item: item))
        .add(node("b"), after="a")
        .add(node("c"), after="a")
        .add(SequenceJoin(name="d"), after=["b", "c"])
    )
    with pytest.raises(GraphError, match=r"use OrderedMerge below it$"):
        graph.plan()


def test_a_key_join_needs_two_inputs() -> None:
    graph = Graph().add(node("a")).add(KeyJoin(lambda item: item, name="k"), after="a")
    with pytest.raises(GraphError, match=r"^key join 'k' needs exactly two inputs, got \['a'\]$"):
        graph.plan()


def test_build_returns_a_pipeline_with_one_name_per_node_in_input_order() -> None:
    pipeline = diamond().build()
    assert isinstance(pipeline, GraphPipeline)
    assert pipeline.names == ("a", "b", "c", "d")
    assert [stage.name for stage in pipeline.stages] == list(pipeline.names)


def test_build_rejects_a_bad_deadlock_timeout() -> None:
    with pytest.raises(ValueError, match=r"^deadlock_timeout must be > 0 and finite, or None"):
        diamond().build(deadlock_timeout=0)


def test_to_dot_shows_nodes_joins_and_split_kinds() -> None:
    assert diamond().to_dot() == (
        "digraph pipeline {\n"
        "  rankdir=LR;\n"
        '  input [shape=oval, label="input"];\n'
        '  n0 [shape=box, label="a\\n1 worker"];\n'
        '  n1 [shape=box, label="b\\n1 worker"];\n'
        '  n2 [shape=box, label="c\\n1 worker"];\n'
        '  n3 [shape=diamond, label="d\\nsequence join"];\n'
        '  output [shape=oval, label="output"];\n'
        "  input -> n0;\n"
        '  n0 -> n1 [label="broadcast"];\n'
        '  n0 -> n2 [label="broadcast"];\n'
        "  n1 -> n3;\n"
        "  n2 -> n3;\n"
        "  n3 -> output;\n"
        "}\n"
    )


def test_to_mermaid_draws_the_same_graph() -> None:
    assert diamond().to_mermaid() == (
        "flowchart LR\n"
        "  input([input])\n"
        '  n0["a<br/>1 worker"]\n'
        '  n1["b<br/>1 worker"]\n'
        '  n2["c<br/>1 worker"]\n'
        '  n3{"d<br/>sequence join"}\n'
        "  output([output])\n"
        "  input --> n0\n"
        "  n0 -- broadcast --> n1\n"
        "  n0 -- broadcast --> n2\n"
        "  n1 --> n3\n"
        "  n2 --> n3\n"
        "  n3 --> output\n"
    )


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_to_png_draws_a_png_with_graphviz(tmp_path: Path) -> None:
    path = diamond().to_png(tmp_path / "graph.png")
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(shutil.which("dot") is not None, reason="Graphviz's dot is installed")
def test_to_png_without_graphviz_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"^to_png\(\) needs Graphviz's dot program on PATH"):
        diamond().to_png(tmp_path / "graph.png")


def test_an_ordered_merge_below_round_robin_is_accepted() -> None:
    graph = (
        Graph()
        .add(node("a"), fan_out="round_robin")
        .add(node("b"), after="a")
        .add(node("c"), after="a")
        .add(OrderedMerge(name="m"), after=["b", "c"])
    )
    plan = graph.plan()
    assert plan.splits == {"a": "m"}
    assert plan.branches == {"b": "a", "c": "a"}


def test_a_chain_adds_one_node_per_stage_each_after_the_one_before() -> None:
    graph = Graph().add(node("a")).add(node("b") >> node("c"), after="a", fan_out="round_robin")
    graph.add(node("x"), after="c").add(node("y"), after="c")
    plan = graph.plan()
    assert [(each.name, each.after) for each in plan.nodes] == [
        ("a", ()),
        ("b", ("a",)),
        ("c", ("b",)),
        ("x", ("c",)),
        ("y", ("c",)),
    ]
    assert graph.nodes[2].fan_out == "round_robin"
    assert graph.nodes[1].fan_out == "broadcast"


@pytest.mark.parametrize(
    ("chain_after", "fan_out", "error"),
    [
        ("a", "broadcast", GraphError),  # its last stage is named like a node already there
        ("a", "bogus", TypeError),  # its last stage gets a fan_out that is no fan-out
        (3, "broadcast", TypeError),  # its first stage's after is no name
    ],
)
def test_a_chain_that_cannot_be_added_adds_none_of_its_stages(
    chain_after: Any, fan_out: Any, error: type[Exception]
) -> None:
    graph = Graph().add(node("a"))
    last = node("a") if error is GraphError else node("c")
    with pytest.raises(error):
        graph.add(node("b") >> node("x") >> last, after=chain_after, fan_out=fan_out)
    assert [each.name for each in graph.nodes] == ["a"]


def test_a_graph_that_runs_itself_through_a_sub_graph_is_refused() -> None:
    outer = Graph().add(node("a"))
    inner = Graph().add(node("b"))
    inner.add(outer.as_stage("back_out"), after="b")
    outer.add(inner.as_stage("inner"), after="a")
    message = (
        r"^node 'inner' runs the graph it is in, through 'inner' -> 'back_out': "
        r"each batch would start a run of it again, without end$"
    )
    with pytest.raises(GraphError, match=message):
        outer.build()
    itself = Graph().add(node("c"))
    itself.add(itself.as_stage("again"), after="c")
    with pytest.raises(GraphError, match=r"^node 'again' runs the graph it is in, through 'again'"):
        itself.plan()


def test_a_join_given_more_workers_is_refused_naming_it() -> None:
    join: SequenceJoin[Any] = SequenceJoin(name="d")
    join.workers = 2
    graph = Graph().add(node("a")).add(node("b"), after="a").add(node("c"), after="a")
    graph.add(join, after=["b", "c"])
    with pytest.raises(GraphError, match=r"^join 'd' runs one worker \(its buffer is its "):
        graph.build()


def test_a_join_run_outside_a_graph_says_it_belongs_in_one() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline(KeyJoin(lambda item: item, name="pair")).run([1, 2])
    assert str(caught.value) == (
        "stage 'pair' failed in setup(): worker 0: RuntimeError: join 'pair' is not a node "
        "of a graph: its inputs are a graph's edges, so add it to a Graph and run "
        "graph.build()"
    )


@pytest.mark.parametrize(
    ("after", "shown"),
    [(node("a"), "FunctionStage 'a'; give its name, 'a'"), (None, "NoneType"), (3, "int")],
)
def test_an_after_that_is_no_name_is_refused_saying_what_it_got(after: Any, shown: str) -> None:
    graph = Graph().add(node("a"))
    message = f"^after must be a node name or a sequence of names, got {shown}$"
    with pytest.raises(TypeError, match=message):
        graph.add(node("b"), after=after)
