"""Graphs: fan-out, fan-in, joins, fork-merge and mixed pools; and task graphs.

A streaming `Graph` runs stages as nodes on the chain's engine, each node with one
bounded inbox shared by its incoming edges, so a split that rejoins cannot deadlock.
A `TaskGraph` runs tasks once each, after their dependencies, most critical first.
Standard library only (Graphviz's `dot` program for PNG pictures, if installed).
A task's criticality takes the priority queue's labels: `from pipeline.queues import
Priority`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from pipeline.graph.build import FanOut, Graph, Node, Partition
from pipeline.graph.compose import SubgraphStage
from pipeline.graph.errors import GraphError, PipelineDeadlock, TaskGraphFailed
from pipeline.graph.forkmerge import fork_merge, mix_pool
from pipeline.graph.join import MISSING, JoinStage, KeyJoin, OrderedMerge, SequenceJoin
from pipeline.graph.run import GraphPipeline, GraphStatistics, JoinStatistics
from pipeline.graph.tasks import TaskGraph, TaskGraphResult, TaskStatistics

# Hidden from type checkers, so that mypy names the moved name instead of typing it Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Resolve `Criticality`, the priority queue's `Priority` under another name."""
        if name != "Criticality":
            raise AttributeError(f"module 'pipeline.graph' has no attribute {name!r}")
        warnings.warn(
            "pipeline.graph.Criticality is deprecated and goes in the next release: "
            "use `from pipeline.queues import Priority`",
            DeprecationWarning,
            stacklevel=2,
        )
        from pipeline.queues import Priority

        return Priority


__all__ = [
    "MISSING",
    "FanOut",
    "Graph",
    "GraphError",
    "GraphPipeline",
    "GraphStatistics",
    "JoinStage",
    "JoinStatistics",
    "KeyJoin",
    "Node",
    "OrderedMerge",
    "Partition",
    "PipelineDeadlock",
    "SequenceJoin",
    "SubgraphStage",
    "TaskGraph",
    "TaskGraphFailed",
    "TaskGraphResult",
    "TaskStatistics",
    "fork_merge",
    "mix_pool",
]
