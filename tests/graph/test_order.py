"""Tests for the order of a graph's names: graphlib's sorter, its cycles as GraphErrors."""

from __future__ import annotations

from graphlib import CycleError

import pytest

from pipeline.graph import GraphError
from pipeline.graph.order import prepared_sorter, topological_order


def test_a_cycle_is_a_graph_error_caused_by_graphlibs_cycle_error() -> None:
    after = {"a": ("c",), "b": ("a",), "c": ("b",), "d": ()}
    with pytest.raises(GraphError, match=r"^the graph has a cycle: a -> b -> c -> a$") as caught:
        topological_order(after, "the graph")
    assert isinstance(caught.value.__cause__, CycleError)


def test_a_cycle_is_shown_from_its_name_added_first_whichever_graphlib_finds() -> None:
    # graphlib walks in from "start" and finds y -> z -> x -> y; the message starts from
    # the name of the cycle added first, whatever name the walk reached it by.
    after = {"start": (), "x": ("z",), "y": ("x", "start"), "z": ("y",)}
    with pytest.raises(GraphError, match=r"^the task graph has a cycle: x -> y -> z -> x$"):
        prepared_sorter(after, "the task graph")


def test_a_name_after_itself_is_a_cycle_of_one() -> None:
    with pytest.raises(GraphError, match=r"^the graph has a cycle: a -> a$"):
        topological_order({"a": ("a",)}, "the graph")


def test_names_free_to_go_either_way_go_in_the_order_they_were_added() -> None:
    # "late" is named before it is added: the order added decides, not the first mention.
    after = {"c": ("late",), "b": (), "a": ("b",), "late": ()}
    assert topological_order(after, "the graph") == ["b", "late", "a", "c"]


def test_a_prepared_sorter_gives_the_names_ready_first_and_then_those_done_frees() -> None:
    sorter = prepared_sorter({"root": (), "left": ("root",), "right": ("root",)}, "the graph")
    assert sorter.get_ready() == ("root",)
    sorter.done("root")
    assert sorter.get_ready() == ("left", "right")
