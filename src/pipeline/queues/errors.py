"""The errors that only the queues extra raises, under the package's `PipelineError`."""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = [
    "CodecError",
    "CorruptItem",
    "LeaseLost",
    "NotAQueueFile",
    "QueueDamaged",
    "QueueFileError",
    "QueueLocked",
    "QueueReadOnly",
    "SchemaTooNew",
    "TaskFailed",
]


class QueueFileError(PipelineError):
    """Raised when a queue file cannot be used; the message names the file and what to do."""


class NotAQueueFile(QueueFileError):
    """Raised when a file opened as a durable queue is not one (not SQLite, or another app's)."""


class SchemaTooNew(QueueFileError):
    """Raised when a queue file was written by a newer version of this package."""


class QueueLocked(QueueFileError, TimeoutError):
    """Raised when another connection held the queue file's lock for longer than `timeout`."""


class QueueReadOnly(QueueFileError, PermissionError):
    """Raised when a queue file must be written but this process may only read it."""


class QueueDamaged(QueueFileError):
    """Raised when SQLite finds a queue file damaged; what is still readable stays served."""


class CodecError(PipelineError, ValueError):
    """Raised when a codec cannot encode an item; nothing of its batch was stored."""


class CorruptItem(PipelineError, ValueError):
    """Raised when a stored item cannot be decoded; the row was kept, in the dead-letter table."""


class LeaseLost(PipelineError):
    """Raised on an ack whose lease expired and passed to another consumer; nothing was written."""


class TaskFailed(PipelineError):
    """Raised by `TaskQueue.result` for a task that failed; the message holds the task's error."""
