"""Queues beyond FIFO: a priority queue for links, a durable SQLite queue for sources and sinks.

Import them from here: `from pipeline.queues import DurableQueue, PriorityQueue`.

- `PriorityQueue`: a `SafeQueue` serving the most urgent item first (`Priority` labels);
- `DurableQueue`: items in one SQLite file, leased and acknowledged;
- `run_resumable`: a pipeline run that survives being killed;
- `TaskQueue` and `TaskWorkers`: callables by import path, run by threads;
- `JsonCodec`, `PickleCodec` (or any `Codec`): how a durable queue stores its items;
- the errors a queue file raises, each a `QueueFileError` or a `PipelineError`.

The module `command` is the `python -m pipeline queue FILE ...` subcommand.
"""

from pipeline.queues.codecs import JSON, PICKLE, Codec, JsonCodec, PickleCodec
from pipeline.queues.durable import DeadItem, DurableQueue, Leased, QueueCounts
from pipeline.queues.errors import (
    CodecError,
    CorruptItem,
    LeaseLost,
    NotAQueueFile,
    QueueDamaged,
    QueueFileError,
    QueueLocked,
    QueueReadOnly,
    SchemaTooNew,
    TaskFailed,
)
from pipeline.queues.priority import LevelStatistics, Priority, PriorityQueue
from pipeline.queues.resumable import ResumableRun, run_resumable
from pipeline.queues.tasks import TaskQueue, TaskWorkers, default_retry, import_path

__all__ = [
    "JSON",
    "PICKLE",
    "Codec",
    "CodecError",
    "CorruptItem",
    "DeadItem",
    "DurableQueue",
    "JsonCodec",
    "LeaseLost",
    "Leased",
    "LevelStatistics",
    "NotAQueueFile",
    "PickleCodec",
    "Priority",
    "PriorityQueue",
    "QueueCounts",
    "QueueDamaged",
    "QueueFileError",
    "QueueLocked",
    "QueueReadOnly",
    "ResumableRun",
    "SchemaTooNew",
    "TaskFailed",
    "TaskQueue",
    "TaskWorkers",
    "default_retry",
    "import_path",
    "run_resumable",
]
