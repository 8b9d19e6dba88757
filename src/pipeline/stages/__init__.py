"""Ready-made stages built on the core's `PipelineStage`.

- `functions`: map, filter and flat-map stages made from plain functions.
"""

from pipeline.stages.functions import FlatMapFunctionStage, FunctionStage, PredicateStage

__all__ = ["FlatMapFunctionStage", "FunctionStage", "PredicateStage"]
