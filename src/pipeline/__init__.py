"""pipeline: the classic threaded pipeline, done right.

Stages run in their own threads, joined by bounded thread-safe queues; items move in
batches; the first failure stops every thread and reaches the caller with its cause.

This module holds the core: the queues, the stage base classes, the engine and its
statistics (`from pipeline import Pipeline, PipelineStage`). Each extra is a folder
whose names are imported from the folder itself: `from pipeline.stages import
FunctionStage`, `from pipeline.queues import DurableQueue`, `from pipeline.observe
import Progress`, and so on for `resilience`, `graph`, `executors`, `aio`, `native` and
`demos`. `import pipeline` loads no extra and needs no third-party package.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from pipeline.batching import AdaptiveBatcher, BatcherStatistics
from pipeline.errors import PipelineClosed, PipelineError, ShutDown, StageError
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE, Pipeline
from pipeline.safequeue import Empty, Full, LinkQueue, QueueStatistics, SafeQueue
from pipeline.stage import FilteringStage, FlatMapStage, PipelineStage, StageChain
from pipeline.stats import BatchEvent, PipelineStatistics, StageStatistics
from pipeline.worker import current_stop_event

__version__ = "0.2.0"

# The names an extra once exported from here, and the folder each is imported from now.
# They still resolve, with a DeprecationWarning naming that folder, until the next
# release removes them.
_MOVED: dict[str, str] = {
    "AsyncFunctionStage": "pipeline.aio",
    "AsyncStage": "pipeline.aio",
    "iterate_async": "pipeline.aio",
    "AddStage": "pipeline.demos",
    "FilterStage": "pipeline.demos",
    "MultiplyStage": "pipeline.demos",
    "ExecutorStage": "pipeline.executors",
    "NotPicklable": "pipeline.executors",
    "ProcessStage": "pipeline.executors",
    "RemoteError": "pipeline.executors",
    "RemoteTraceback": "pipeline.executors",
    "Criticality": "pipeline.queues",
    "Graph": "pipeline.graph",
    "GraphError": "pipeline.graph",
    "GraphPipeline": "pipeline.graph",
    "GraphStatistics": "pipeline.graph",
    "KeyJoin": "pipeline.graph",
    "OrderedMerge": "pipeline.graph",
    "Partition": "pipeline.graph",
    "PipelineDeadlock": "pipeline.graph",
    "SequenceJoin": "pipeline.graph",
    "SubgraphStage": "pipeline.graph",
    "TaskGraph": "pipeline.graph",
    "TaskGraphFailed": "pipeline.graph",
    "TaskGraphResult": "pipeline.graph",
    "fork_merge": "pipeline.graph",
    "mix_pool": "pipeline.graph",
    "Dashboard": "pipeline.observe",
    "PipelineCollector": "pipeline.observe",
    "Progress": "pipeline.observe",
    "TimelineRecorder": "pipeline.observe",
    "bottleneck": "pipeline.observe",
    "diagnose": "pipeline.observe",
    "format_report": "pipeline.observe",
    "json_snapshot": "pipeline.observe",
    "plot_timeline": "pipeline.observe",
    "register_metrics": "pipeline.observe",
    "statistics_to_dict": "pipeline.observe",
    "Codec": "pipeline.queues",
    "CodecError": "pipeline.queues",
    "CorruptItem": "pipeline.queues",
    "DeadItem": "pipeline.queues",
    "DurableQueue": "pipeline.queues",
    "JsonCodec": "pipeline.queues",
    "LeaseLost": "pipeline.queues",
    "Leased": "pipeline.queues",
    "LevelStatistics": "pipeline.queues",
    "NotAQueueFile": "pipeline.queues",
    "PickleCodec": "pipeline.queues",
    "Priority": "pipeline.queues",
    "PriorityQueue": "pipeline.queues",
    "QueueCounts": "pipeline.queues",
    "ResumableRun": "pipeline.queues",
    "SchemaTooNew": "pipeline.queues",
    "TaskFailed": "pipeline.queues",
    "TaskQueue": "pipeline.queues",
    "TaskWorkers": "pipeline.queues",
    "run_resumable": "pipeline.queues",
    "BreakerState": "pipeline.resilience",
    "CircuitBreaker": "pipeline.resilience",
    "CircuitOpen": "pipeline.resilience",
    "DeadLetter": "pipeline.resilience",
    "DeadLetters": "pipeline.resilience",
    "ErrorPolicy": "pipeline.resilience",
    "FailureBudget": "pipeline.resilience",
    "FailureBudgetExceeded": "pipeline.resilience",
    "ItemTimeout": "pipeline.resilience",
    "ResilienceStatistics": "pipeline.resilience",
    "ResilientStage": "pipeline.resilience",
    "RetryPolicy": "pipeline.resilience",
    "StateChange": "pipeline.resilience",
    "TRANSIENT_ERRORS": "pipeline.resilience",
    "Anomaly": "pipeline.stages",
    "Consistent": "pipeline.stages",
    "CountWindows": "pipeline.stages",
    "FlatMapFunctionStage": "pipeline.stages",
    "FunctionStage": "pipeline.stages",
    "InRange": "pipeline.stages",
    "IsType": "pipeline.stages",
    "LateItem": "pipeline.stages",
    "Matches": "pipeline.stages",
    "OneOf": "pipeline.stages",
    "PredicateStage": "pipeline.stages",
    "QualityReport": "pipeline.stages",
    "QualityStage": "pipeline.stages",
    "QualitySummary": "pipeline.stages",
    "Rejected": "pipeline.stages",
    "Rejects": "pipeline.stages",
    "Required": "pipeline.stages",
    "Rule": "pipeline.stages",
    "RuleFailure": "pipeline.stages",
    "RunningStats": "pipeline.stages",
    "TimeWindows": "pipeline.stages",
    "Unique": "pipeline.stages",
    "Watermark": "pipeline.stages",
    "Window": "pipeline.stages",
    "WindowAnomalies": "pipeline.stages",
    "WindowFull": "pipeline.stages",
    "WindowSummary": "pipeline.stages",
    "anomalies": "pipeline.stages",
    "summarize": "pipeline.stages",
}
# The one name that also changed: a task graph's criticality is the priority queue's label.
_RENAMED: dict[str, str] = {"Criticality": "Priority"}


# Hidden from type checkers, so that mypy names a misspelt or moved name instead of
# typing it Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Resolve a name that moved to an extra's folder, warning where it lives now."""
        home = _MOVED.get(name)
        if home is None:
            raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
        new_name = _RENAMED.get(name, name)
        warnings.warn(
            f"pipeline.{name} is deprecated and goes in the next release: "
            f"use `from {home} import {new_name}`",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), new_name)


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "AdaptiveBatcher",
    "BatchEvent",
    "BatcherStatistics",
    "Empty",
    "FilteringStage",
    "FlatMapStage",
    "Full",
    "LinkQueue",
    "Pipeline",
    "PipelineClosed",
    "PipelineError",
    "PipelineStage",
    "PipelineStatistics",
    "QueueStatistics",
    "SafeQueue",
    "ShutDown",
    "StageChain",
    "StageError",
    "StageStatistics",
    "__version__",
    "current_stop_event",
]
