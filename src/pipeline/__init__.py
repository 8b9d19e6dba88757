"""pipeline: the classic threaded pipeline, done right.

Stages run in their own threads, joined by bounded thread-safe queues; items move in
batches; the first failure stops every thread and reaches the caller with its cause.
"""

from pipeline.breaker import BreakerState, CircuitBreaker, StateChange
from pipeline.errors import (
    CircuitOpen,
    FailureBudgetExceeded,
    ItemTimeout,
    PipelineClosed,
    PipelineError,
    ShutDown,
    StageError,
)
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE, Pipeline
from pipeline.policy import DeadLetter, DeadLetters, ErrorPolicy, FailureBudget
from pipeline.resilient import ResilienceStatistics, ResilientStage
from pipeline.retry import RetryPolicy
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
from pipeline.stats import BatchEvent, PipelineStatistics, StageStatistics

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "AddStage",
    "BatchEvent",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "DeadLetter",
    "DeadLetters",
    "Empty",
    "ErrorPolicy",
    "FailureBudget",
    "FailureBudgetExceeded",
    "FilterStage",
    "FilteringStage",
    "FlatMapFunctionStage",
    "FlatMapStage",
    "Full",
    "FunctionStage",
    "ItemTimeout",
    "MultiplyStage",
    "Pipeline",
    "PipelineClosed",
    "PipelineError",
    "PipelineStage",
    "PipelineStatistics",
    "PredicateStage",
    "QueueStatistics",
    "ResilienceStatistics",
    "ResilientStage",
    "RetryPolicy",
    "SafeQueue",
    "ShutDown",
    "StageChain",
    "StageError",
    "StageStatistics",
    "StateChange",
]
