"""The exceptions `pipeline` raises, in one place.

Every error the package defines derives from `PipelineError`, except `ShutDown`,
which is the standard library's `queue.ShutDown` on Python 3.13+ so that code
written for `queue.Queue` catches it unchanged; on older Pythons it is a plain
`Exception` subclass of the same name and meaning.
"""

from __future__ import annotations

import queue
import reprlib

__all__ = [
    "CircuitOpen",
    "FailureBudgetExceeded",
    "ItemTimeout",
    "PipelineClosed",
    "PipelineError",
    "ShutDown",
    "StageError",
    "describe",
]


class PipelineError(Exception):
    """Base class of the errors raised by `pipeline`."""


if hasattr(queue, "ShutDown"):  # Python 3.13+
    ShutDown = queue.ShutDown
else:

    class ShutDown(Exception):  # type: ignore[no-redef]
        """Raised by put on a shut-down queue, and by get once it is also drained."""


_NO_ITEM = object()

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60


def describe(exc: BaseException) -> str:
    """Return "Type: message" for an exception, as StageError messages and logs show it."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PipelineClosed(PipelineError):
    """Raised to a consumer whose run was stopped by `Pipeline.close()` before its input ended."""


class StageError(PipelineError):
    """Raised to the caller when a stage (or the source) fails; the original is `__cause__`.

    Attributes:
        stage: the name of the stage that failed ("source" for the input iterable).
        item: the item being processed when it failed, if one is known.
        has_item: whether `item` is meaningful (setup, teardown and source failures,
            and failures inside a user-written `process_batch`, have no single item).
        phase: what the stage was doing: "process", "setup", "teardown" or "source".
    """

    def __init__(self, stage: str, phase: str, item: object = _NO_ITEM, detail: str = "") -> None:
        self.stage = stage
        self.phase = phase
        self.detail = detail
        self.has_item = item is not _NO_ITEM
        self.item = item if self.has_item else None
        if self.has_item:
            where = f"on item {_short_repr.repr(item)}"
        elif phase == "process":
            where = "in process_batch()"
        elif phase == "source":
            where = "while reading the source iterable"
        else:
            where = f"in {phase}()"
        message = f"stage {stage!r} failed {where}"
        super().__init__(f"{message}: {detail}" if detail else message)

    @classmethod
    def caused_by(
        cls,
        cause: BaseException,
        stage: str,
        phase: str,
        item: object = _NO_ITEM,
        *,
        worker: int | None = None,
    ) -> StageError:
        """Return the StageError for `cause`, with `cause` as its `__cause__`.

        The message ends with the cause's type and text, after the worker's number
        when one is given (setup and teardown failures).
        """
        detail = describe(cause) if worker is None else f"worker {worker}: {describe(cause)}"
        error = cls(stage, phase, item, detail)
        error.__cause__ = cause
        return error

    def __reduce__(self) -> tuple[object, ...]:
        item = self.item if self.has_item else _NO_ITEM
        return (type(self), (self.stage, self.phase, item, self.detail))


class CircuitOpen(PipelineError):
    """Raised instead of a call while a circuit breaker is open (or half-open and busy)."""


class ItemTimeout(PipelineError, TimeoutError):
    """Raised when a stage with a per-item timeout gives no result for an item in time."""


class FailureBudgetExceeded(PipelineError):
    """Raised when skipped or dead-lettered items exceed a failure budget; names the budget."""
