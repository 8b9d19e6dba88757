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
    "PipelineClosed",
    "PipelineError",
    "ShutDown",
    "StageError",
    "describe",
    "short_repr",
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


def short_repr(value: object) -> str:
    """Return a repr of `value` cut to about 60 characters, for messages and logs.

    It never raises: the code that reports a failure must not fail itself, so a value
    whose `__repr__` raises is shown by its type and identity instead.
    """
    try:
        return _short_repr.repr(value)
    except BaseException:
        return _unprintable(value)


def describe(exc: BaseException) -> str:
    """Return "Type: message" for an exception, as StageError messages and logs show it.

    It never raises: an exception whose `__str__` raises is shown by its type alone,
    with a note that its message could not be read.
    """
    name = _type_name(exc)
    try:
        text = str(exc)
    except BaseException:
        return f"{name}: <str() failed>"
    return f"{name}: {text}" if text else name


def _type_name(value: object) -> str:
    try:
        return type(value).__qualname__
    except BaseException:
        return "object"


def _unprintable(value: object) -> str:
    return f"<{_type_name(value)} object at {id(value):#x} (repr() failed)>"


class PipelineClosed(PipelineError):
    """Raised to a consumer whose run was stopped by `Pipeline.close()` before its input ended."""


class StageError(PipelineError):
    """Raised to the caller when a stage (or the source) fails; the original is `__cause__`.

    Attributes:
        stage: the name of the stage that failed ("source" for the input iterable).
        item: the item being processed when it failed, if one is known.
        has_item: whether `item` is meaningful (setup, teardown and source failures,
            and failures inside a user-written `process_batch`, have no single item).
        phase: what the stage was doing: "process", "setup", "teardown", "source",
            "observer" (the pipeline's observer failed after one of its batches) or
            "worker" (the engine's own loop failed, which a user's code can cause only
            through objects that misbehave in ways the loop cannot foresee).
    """

    def __init__(self, stage: str, phase: str, item: object = _NO_ITEM, detail: str = "") -> None:
        self.stage = stage
        self.phase = phase
        self.detail = detail
        self.has_item = item is not _NO_ITEM
        self.item = item if self.has_item else None
        if self.has_item:
            where = f"on item {short_repr(item)}"
        elif phase == "process":
            where = "in process_batch()"
        elif phase == "source":
            where = "while reading the source iterable"
        elif phase == "flush":
            where = "in flush() at the end of its input"
        elif phase == "observer":
            where = "in the pipeline's observer, called after a batch"
        elif phase == "worker":
            where = "in its worker loop"
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
        # Not the private no-item marker itself: a copy of it is another object.
        fields = (self.stage, self.phase, self.has_item, self.item, self.detail)
        return (_rebuild_stage_error, (type(self), *fields))


def _rebuild_stage_error(
    cls: type[StageError], stage: str, phase: str, has_item: bool, item: object, detail: str
) -> StageError:
    """Rebuild a pickled StageError (its `__reduce__`), with or without an item."""
    return cls(stage, phase, item if has_item else _NO_ITEM, detail)
