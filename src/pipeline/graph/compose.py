"""SubgraphStage: a graph used where a stage is used, as one step of a chain.

Each batch the stage gets runs through the graph as a run of its own, and the graph's
outputs are the stage's outputs for that batch; so `a >> graph.as_stage() >> c`
chains with `>>` as any stage does. Each worker of the stage builds its own
`GraphPipeline` in `setup` (a pipeline runs one run at a time), so a batch costs the
start and join of the graph's threads: give the enclosing pipeline a large
`batch_size`, or build the whole flow as one graph when that cost matters. Each
worker's pipeline has its own copy of the graph's joins, so a graph with a join runs
on several workers too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.stage import PipelineStage

if TYPE_CHECKING:
    from pipeline.graph.build import Graph
    from pipeline.graph.run import GraphPipeline

__all__ = ["SubgraphStage"]


class SubgraphStage(PipelineStage[Any, Any]):
    """Run every batch through `graph`; a failure inside names the inner node and item.

    Args:
        graph: the graph; checked here.
        name: the stage's name; defaults to "Subgraph".
        workers: threads running this stage, each with its own run of the graph.
        options: passed to `Graph.build` (queue_size, batch_size, ordered, ...).

    Raises:
        GraphError: the graph cannot be run (see `Graph.plan`).
    """

    def __init__(
        self, graph: Graph, *, name: str | None = None, workers: int = 1, **options: Any
    ) -> None:
        super().__init__(name or "Subgraph", workers=workers)
        self.graph = graph
        self.options = options
        graph.build(**options)  # check the graph and the options now, not in a worker

    def setup(self) -> None:
        self.local.pipeline = self.graph.build(**self.options)

    def teardown(self) -> None:
        pipeline: GraphPipeline[Any, Any] | None = getattr(self.local, "pipeline", None)
        if pipeline is not None:
            pipeline.close()

    def process_batch(self, items: list[Any]) -> list[Any]:
        pipeline: GraphPipeline[Any, Any] = self.local.pipeline
        return pipeline.run(items)
