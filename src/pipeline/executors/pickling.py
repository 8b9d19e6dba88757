"""Say which part of a value cannot be pickled, and why, instead of pickle's bare complaint.

Sending work to another process pickles the function or stage and every item. When that
fails, pickle names a type ("cannot pickle '_thread.lock' object") but not where it sits.
`find_unpicklable` walks into containers and object attributes to the innermost part that
fails on its own, and adds a hint for the usual culprits: locks and events, open files,
cffi objects, lambdas and functions defined inside other functions.

The walk runs only after a failure, so the fast path pickles once.
"""

from __future__ import annotations

import io
import pickle
import types
from typing import Final

from pipeline.errors import describe, short_repr

__all__ = ["check_picklable", "find_unpicklable"]

_MOST_PARTS: Final = 200  # the most children looked at per value: enough, and bounded
_DEEPEST: Final = 6


def check_picklable(value: object) -> None:
    """Raise `NotPicklable` naming the part of `value` that cannot be pickled, if any."""
    from pipeline.executors.errors import NotPicklable

    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise NotPicklable(find_unpicklable(value, "the value") or describe(exc)) from exc


def find_unpicklable(value: object, name: str) -> str | None:
    """Return where and why `value` (called `name`) fails to pickle; None if it pickles.

    The answer names the innermost failing part, as `name.attribute[index]...`, with its
    type, pickle's error and a hint.
    """
    error = _pickle_error(value)
    if error is None:
        return None
    path, culprit, error = _innermost(value, name, error, 0)
    hint = _hint(culprit)
    where = f"{path} ({type(culprit).__qualname__})"
    return f"{where} cannot be pickled: {describe(error)}" + (f"; {hint}" if hint else "")


def _pickle_error(value: object) -> Exception | None:
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return exc
    return None


def _innermost(
    value: object, path: str, error: Exception, depth: int
) -> tuple[str, object, Exception]:
    if depth < _DEEPEST and not _hint(value):
        for child_path, child in _children(value, path):
            child_error = _pickle_error(child)
            if child_error is not None:
                return _innermost(child, child_path, child_error, depth + 1)
    return path, value, error


def _children(value: object, path: str) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [(f"{path}[{short_repr(key)}]", child) for key, child in value.items()][:_MOST_PARTS]
    if isinstance(value, list | tuple | set | frozenset):
        return [(f"{path}[{index}]", child) for index, child in enumerate(value)][:_MOST_PARTS]
    if isinstance(value, types.FunctionType | types.ModuleType | type):
        return []
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):
        return [(f"{path}.{key}", child) for key, child in state.items()][:_MOST_PARTS]
    return []


def _hint(culprit: object) -> str:
    kind = type(culprit)
    if isinstance(culprit, types.FunctionType | type) and "<" in culprit.__qualname__:
        what = "classes" if isinstance(culprit, type) else "functions"
        return f"{what} pickle by their importable name: define it at the top level of a module"
    if kind.__module__ in {"_thread", "threading", "multiprocessing.synchronize"}:
        return "a lock or event belongs to one process: create it in setup(), in the worker"
    if isinstance(culprit, io.IOBase):
        return "an open file belongs to one process: open it in setup(), in the worker"
    if kind.__module__.startswith("_cffi_backend") or "cffi" in kind.__module__:
        return (
            "cffi objects do not pickle: import the compiled module inside the function and "
            "pass plain buffers (array('d'), bytes)"
        )
    if isinstance(culprit, types.GeneratorType):
        return "a generator's state stays in its process: pass the items themselves"
    return ""
