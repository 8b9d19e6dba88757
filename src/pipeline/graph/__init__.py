"""Graphs: fan-out, fan-in, joins, fork-merge and mixed pools; and task graphs.

A streaming `Graph` runs stages as nodes on the chain's engine, each node with one
bounded inbox shared by its incoming edges, so a split that rejoins cannot deadlock.
A `TaskGraph` runs tasks once each, after their dependencies, most critical first.
Standard library only (Graphviz's `dot` program for PNG pictures, if installed).
"""

from pipeline.graph.build import FanOut, Graph, Node, Partition
from pipeline.graph.compose import SubgraphStage
from pipeline.graph.errors import GraphError, PipelineDeadlock, TaskGraphFailed
from pipeline.graph.forkmerge import fork_merge, mix_pool
from pipeline.graph.join import MISSING, JoinStage, KeyJoin, OrderedMerge, SequenceJoin
from pipeline.graph.run import GraphPipeline, GraphStatistics, JoinStatistics
from pipeline.graph.tasks import Criticality, TaskGraph, TaskGraphResult, TaskStatistics

__all__ = [
    "MISSING",
    "Criticality",
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
