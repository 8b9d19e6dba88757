"""The errors that only the executors extra raises, under the package's `PipelineError`."""

from __future__ import annotations

import pickle

from pipeline.errors import PipelineError

__all__ = ["NotPicklable", "RemoteError", "RemoteTraceback"]


class NotPicklable(PipelineError, pickle.PicklingError):
    """Raised when a stage, a function or an item cannot be sent to another process; names it."""


class RemoteError(PipelineError):
    """Stands in for an exception raised in a worker that could not be sent back as itself.

    Its message is the original's type and text; its `__cause__` holds the remote traceback.
    """


class RemoteTraceback(PipelineError):
    """The traceback of an exception raised in another process, as text.

    It is chained as the `__cause__` of the exception rebuilt here, so that the report of
    a failure shows where in the worker it happened.
    """

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0] if self.args else ""}"""'
