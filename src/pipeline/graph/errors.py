"""The errors that only the graph extra raises, under the package's `PipelineError`."""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = ["GraphError", "PipelineDeadlock", "TaskGraphFailed"]


class GraphError(PipelineError, ValueError):
    """Raised when a graph is built wrong (a cycle, a lone node, a join it cannot serve)."""


class PipelineDeadlock(PipelineError):
    """Raised when nothing moved in a graph run for `deadlock_timeout` seconds.

    Attributes:
        waits: for each thread of the run, what it was waiting on (a node's inbox, the
            results queue, or its own stage code).
    """

    def __init__(self, message: str, waits: dict[str, str]) -> None:
        super().__init__(message)
        self.waits = waits

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.waits))


class TaskGraphFailed(PipelineError):
    """Raised by `TaskGraph.run()` when a task failed; the first failure is `__cause__`.

    Attributes:
        result: the run's `TaskGraphResult` (what succeeded, failed, was skipped).
    """

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.result))
