"""pipeline: the classic threaded pipeline, done right.

Stages run in their own threads, joined by bounded thread-safe queues; items move in
batches; the first failure stops every thread and reaches the caller with its cause.

The core (queues, stages, the engine, statistics) is imported here; the extras
(`resilience`, `observe`, `native`, `stages`, `graph`, `queues`, `executors`, `aio`,
`demos`) are loaded the first time one of their names is used, as `concurrent.futures`
loads its executors, so
`import pipeline` stays cheap and needs no third-party package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.batching import AdaptiveBatcher, BatcherStatistics
from pipeline.errors import PipelineClosed, PipelineError, ShutDown, StageError
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE, Pipeline
from pipeline.safequeue import Empty, Full, LinkQueue, QueueStatistics, SafeQueue
from pipeline.stage import FilteringStage, FlatMapStage, PipelineStage, StageChain
from pipeline.stats import BatchEvent, PipelineStatistics, StageStatistics

if TYPE_CHECKING:
    from pipeline.aio.stage import AsyncFunctionStage, AsyncStage, iterate_async
    from pipeline.demos.classic import AddStage, FilterStage, MultiplyStage
    from pipeline.executors.errors import NotPicklable, RemoteError, RemoteTraceback
    from pipeline.executors.executor import ExecutorStage
    from pipeline.executors.process import ProcessStage
    from pipeline.graph.build import Graph, Partition
    from pipeline.graph.compose import SubgraphStage
    from pipeline.graph.errors import GraphError, PipelineDeadlock, TaskGraphFailed
    from pipeline.graph.forkmerge import fork_merge, mix_pool
    from pipeline.graph.join import KeyJoin, OrderedMerge, SequenceJoin
    from pipeline.graph.run import GraphPipeline, GraphStatistics
    from pipeline.graph.tasks import Criticality, TaskGraph, TaskGraphResult
    from pipeline.observe.dashboard import Dashboard
    from pipeline.observe.metrics import (
        PipelineCollector,
        json_snapshot,
        register_metrics,
        statistics_to_dict,
    )
    from pipeline.observe.plot import TimelineRecorder, plot_timeline
    from pipeline.observe.progress import Progress
    from pipeline.observe.report import bottleneck, diagnose, format_report
    from pipeline.queues.codecs import Codec, JsonCodec, PickleCodec
    from pipeline.queues.durable import DeadItem, DurableQueue, Leased, QueueCounts
    from pipeline.queues.errors import (
        CodecError,
        CorruptItem,
        LeaseLost,
        NotAQueueFile,
        SchemaTooNew,
        TaskFailed,
    )
    from pipeline.queues.priority import LevelStatistics, Priority, PriorityQueue
    from pipeline.queues.resumable import ResumableRun, run_resumable
    from pipeline.queues.tasks import TaskQueue, TaskWorkers
    from pipeline.resilience.breaker import BreakerState, CircuitBreaker, StateChange
    from pipeline.resilience.errors import CircuitOpen, FailureBudgetExceeded, ItemTimeout
    from pipeline.resilience.policy import DeadLetter, DeadLetters, ErrorPolicy, FailureBudget
    from pipeline.resilience.resilient import ResilienceStatistics, ResilientStage
    from pipeline.resilience.retry import TRANSIENT_ERRORS, RetryPolicy
    from pipeline.stages.functions import FlatMapFunctionStage, FunctionStage, PredicateStage
    from pipeline.stages.quality import (
        Consistent,
        InRange,
        IsType,
        Matches,
        OneOf,
        QualityReport,
        QualityStage,
        QualitySummary,
        Rejected,
        Rejects,
        Required,
        Rule,
        RuleFailure,
        Unique,
    )
    from pipeline.stages.windows import (
        Anomaly,
        CountWindows,
        LateItem,
        RunningStats,
        TimeWindows,
        Watermark,
        Window,
        WindowAnomalies,
        WindowFull,
        WindowSummary,
        anomalies,
        summarize,
    )

__version__ = "0.2.0"

# Where each lazily loaded name lives. The classic trio comes from demos/ because
# `pipeline.MultiplyStage` was public before the demos had a folder of their own.
_LAZY: dict[str, str] = {
    "AddStage": "pipeline.demos.classic",
    "FilterStage": "pipeline.demos.classic",
    "MultiplyStage": "pipeline.demos.classic",
    "Graph": "pipeline.graph.build",
    "Partition": "pipeline.graph.build",
    "SubgraphStage": "pipeline.graph.compose",
    "GraphError": "pipeline.graph.errors",
    "PipelineDeadlock": "pipeline.graph.errors",
    "TaskGraphFailed": "pipeline.graph.errors",
    "fork_merge": "pipeline.graph.forkmerge",
    "mix_pool": "pipeline.graph.forkmerge",
    "KeyJoin": "pipeline.graph.join",
    "OrderedMerge": "pipeline.graph.join",
    "SequenceJoin": "pipeline.graph.join",
    "GraphPipeline": "pipeline.graph.run",
    "GraphStatistics": "pipeline.graph.run",
    "Criticality": "pipeline.graph.tasks",
    "TaskGraph": "pipeline.graph.tasks",
    "TaskGraphResult": "pipeline.graph.tasks",
    "Codec": "pipeline.queues.codecs",
    "JsonCodec": "pipeline.queues.codecs",
    "PickleCodec": "pipeline.queues.codecs",
    "DeadItem": "pipeline.queues.durable",
    "DurableQueue": "pipeline.queues.durable",
    "Leased": "pipeline.queues.durable",
    "QueueCounts": "pipeline.queues.durable",
    "CodecError": "pipeline.queues.errors",
    "CorruptItem": "pipeline.queues.errors",
    "LeaseLost": "pipeline.queues.errors",
    "NotAQueueFile": "pipeline.queues.errors",
    "SchemaTooNew": "pipeline.queues.errors",
    "TaskFailed": "pipeline.queues.errors",
    "LevelStatistics": "pipeline.queues.priority",
    "Priority": "pipeline.queues.priority",
    "PriorityQueue": "pipeline.queues.priority",
    "ResumableRun": "pipeline.queues.resumable",
    "run_resumable": "pipeline.queues.resumable",
    "TaskQueue": "pipeline.queues.tasks",
    "TaskWorkers": "pipeline.queues.tasks",
    "Dashboard": "pipeline.observe.dashboard",
    "PipelineCollector": "pipeline.observe.metrics",
    "json_snapshot": "pipeline.observe.metrics",
    "register_metrics": "pipeline.observe.metrics",
    "statistics_to_dict": "pipeline.observe.metrics",
    "TimelineRecorder": "pipeline.observe.plot",
    "plot_timeline": "pipeline.observe.plot",
    "Progress": "pipeline.observe.progress",
    "bottleneck": "pipeline.observe.report",
    "diagnose": "pipeline.observe.report",
    "format_report": "pipeline.observe.report",
    "BreakerState": "pipeline.resilience.breaker",
    "CircuitBreaker": "pipeline.resilience.breaker",
    "StateChange": "pipeline.resilience.breaker",
    "CircuitOpen": "pipeline.resilience.errors",
    "FailureBudgetExceeded": "pipeline.resilience.errors",
    "ItemTimeout": "pipeline.resilience.errors",
    "DeadLetter": "pipeline.resilience.policy",
    "DeadLetters": "pipeline.resilience.policy",
    "ErrorPolicy": "pipeline.resilience.policy",
    "FailureBudget": "pipeline.resilience.policy",
    "ResilienceStatistics": "pipeline.resilience.resilient",
    "ResilientStage": "pipeline.resilience.resilient",
    "RetryPolicy": "pipeline.resilience.retry",
    "TRANSIENT_ERRORS": "pipeline.resilience.retry",
    "FlatMapFunctionStage": "pipeline.stages.functions",
    "AsyncFunctionStage": "pipeline.aio",
    "AsyncStage": "pipeline.aio",
    "iterate_async": "pipeline.aio",
    "ExecutorStage": "pipeline.executors",
    "NotPicklable": "pipeline.executors",
    "ProcessStage": "pipeline.executors",
    "RemoteError": "pipeline.executors",
    "RemoteTraceback": "pipeline.executors",
    "FunctionStage": "pipeline.stages.functions",
    "PredicateStage": "pipeline.stages.functions",
    "Consistent": "pipeline.stages.quality",
    "InRange": "pipeline.stages.quality",
    "IsType": "pipeline.stages.quality",
    "Matches": "pipeline.stages.quality",
    "OneOf": "pipeline.stages.quality",
    "QualityReport": "pipeline.stages.quality",
    "QualityStage": "pipeline.stages.quality",
    "QualitySummary": "pipeline.stages.quality",
    "Rejected": "pipeline.stages.quality",
    "Rejects": "pipeline.stages.quality",
    "Required": "pipeline.stages.quality",
    "Rule": "pipeline.stages.quality",
    "RuleFailure": "pipeline.stages.quality",
    "Unique": "pipeline.stages.quality",
    "Anomaly": "pipeline.stages.windows",
    "CountWindows": "pipeline.stages.windows",
    "LateItem": "pipeline.stages.windows",
    "RunningStats": "pipeline.stages.windows",
    "TimeWindows": "pipeline.stages.windows",
    "Watermark": "pipeline.stages.windows",
    "Window": "pipeline.stages.windows",
    "WindowAnomalies": "pipeline.stages.windows",
    "WindowFull": "pipeline.stages.windows",
    "WindowSummary": "pipeline.stages.windows",
    "anomalies": "pipeline.stages.windows",
    "summarize": "pipeline.stages.windows",
}


def __getattr__(name: str) -> Any:
    """Load an extra's public name on first use, then keep it as a module attribute."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "TRANSIENT_ERRORS",
    "AdaptiveBatcher",
    "AddStage",
    "Anomaly",
    "AsyncFunctionStage",
    "AsyncStage",
    "BatchEvent",
    "BatcherStatistics",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "Codec",
    "CodecError",
    "Consistent",
    "CorruptItem",
    "CountWindows",
    "Criticality",
    "Dashboard",
    "DeadItem",
    "DeadLetter",
    "DeadLetters",
    "DurableQueue",
    "Empty",
    "ErrorPolicy",
    "ExecutorStage",
    "FailureBudget",
    "FailureBudgetExceeded",
    "FilterStage",
    "FilteringStage",
    "FlatMapFunctionStage",
    "FlatMapStage",
    "Full",
    "FunctionStage",
    "Graph",
    "GraphError",
    "GraphPipeline",
    "GraphStatistics",
    "InRange",
    "IsType",
    "ItemTimeout",
    "JsonCodec",
    "KeyJoin",
    "LateItem",
    "LeaseLost",
    "Leased",
    "LevelStatistics",
    "LinkQueue",
    "Matches",
    "MultiplyStage",
    "NotAQueueFile",
    "NotPicklable",
    "OneOf",
    "OrderedMerge",
    "Partition",
    "PickleCodec",
    "Pipeline",
    "PipelineClosed",
    "PipelineCollector",
    "PipelineDeadlock",
    "PipelineError",
    "PipelineStage",
    "PipelineStatistics",
    "PredicateStage",
    "Priority",
    "PriorityQueue",
    "ProcessStage",
    "Progress",
    "QualityReport",
    "QualityStage",
    "QualitySummary",
    "QueueCounts",
    "QueueStatistics",
    "Rejected",
    "Rejects",
    "RemoteError",
    "RemoteTraceback",
    "Required",
    "ResilienceStatistics",
    "ResilientStage",
    "ResumableRun",
    "RetryPolicy",
    "Rule",
    "RuleFailure",
    "RunningStats",
    "SafeQueue",
    "SchemaTooNew",
    "SequenceJoin",
    "ShutDown",
    "StageChain",
    "StageError",
    "StageStatistics",
    "StateChange",
    "SubgraphStage",
    "TaskFailed",
    "TaskGraph",
    "TaskGraphFailed",
    "TaskGraphResult",
    "TaskQueue",
    "TaskWorkers",
    "TimeWindows",
    "TimelineRecorder",
    "Unique",
    "Watermark",
    "Window",
    "WindowAnomalies",
    "WindowFull",
    "WindowSummary",
    "__version__",
    "anomalies",
    "bottleneck",
    "diagnose",
    "fork_merge",
    "format_report",
    "iterate_async",
    "json_snapshot",
    "mix_pool",
    "plot_timeline",
    "register_metrics",
    "run_resumable",
    "statistics_to_dict",
    "summarize",
]
