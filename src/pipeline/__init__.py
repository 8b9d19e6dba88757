"""pipeline: the classic threaded pipeline, done right.

Stages run in their own threads, joined by bounded thread-safe queues; items move in
batches; the first failure stops every thread and reaches the caller with its cause.
"""

from pipeline.errors import PipelineError, ShutDown, StageError
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE, Pipeline, PipelineClosed
from pipeline.safequeue import Empty, Full, QueueStatistics, SafeQueue
from pipeline.stage import FilteringStage, FlatMapStage, PipelineStage, StageChain
from pipeline.stages import (
    AddStage,
    FilterStage,
    FlatMapFunctionStage,
    FunctionStage,
    MultiplyStage,
    PredicateStage,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "AddStage",
    "Empty",
    "FilterStage",
    "FilteringStage",
    "FlatMapFunctionStage",
    "FlatMapStage",
    "Full",
    "FunctionStage",
    "MultiplyStage",
    "Pipeline",
    "PipelineClosed",
    "PipelineError",
    "PipelineStage",
    "PredicateStage",
    "QueueStatistics",
    "SafeQueue",
    "ShutDown",
    "StageChain",
    "StageError",
]
