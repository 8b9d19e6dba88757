"""Work for the process-stage tests that must be importable by name in a fresh process.

Spawn and forkserver children import what they run by its module's name, so functions
and stage classes pickled by reference live here, on the tests' path, as in
`remote_work`. The scripts of the subprocess tests import it too.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from pipeline import PipelineStage

HELD = threading.Lock()
"""A lock another thread may hold while a process stage starts (as logging's lock can be)."""

NEVER = threading.Event()
"""Never set: a wait on it stands for user code that never returns."""


def under_held_lock(item: int) -> int:
    """Take `HELD`, as a stage's logging call would take its handler's lock."""
    with HELD:
        return item * 2


def note_process() -> None:
    """Leave a file named for this process id in $PROCESS_WORK_FOLDER, if it is set."""
    folder = os.environ.get("PROCESS_WORK_FOLDER")
    if folder:
        Path(folder, f"process-{os.getpid()}").touch()


def never_returns_on_zero(item: int) -> int:
    """Block for ever on item 0 (stuck user code); fail on item 1; pass the others."""
    note_process()
    if item == 0:
        NEVER.wait()
    if item == 1:
        raise ValueError("item 1 is bad")
    return item


def never_returns(item: int) -> int:
    """Block for ever, whatever the item."""
    note_process()
    NEVER.wait()
    return item


def pid_of(item: int) -> tuple[int, int]:
    return item, os.getpid()


def double(item: int) -> int:
    return item * 2


def triple(item: int) -> int:
    return item * 3


def negate(item: int) -> int:
    return -item


def is_even(item: int) -> bool:
    return item % 2 == 0


def twice(item: int) -> list[int]:
    return [item, item]


def add_all(*results: int) -> int:
    return sum(results)


def window_sum(window: object) -> int:
    return sum(getattr(window, "items", ()))


def tagged_double(item: int) -> tuple[str, int, int]:
    """Take a moment (so that a sibling process gets the next batch), tag with the pid."""
    NEVER.wait(0.01)
    return "double", item * 2, os.getpid()


def tagged_triple(item: int) -> tuple[str, int, int]:
    NEVER.wait(0.01)
    return "triple", item * 3, os.getpid()


class SetupNeverReturns(PipelineStage[int, int]):
    """Notes its process in setup, then never returns there: a Ctrl-C must cut the start short."""

    def setup(self) -> None:
        note_process()
        NEVER.wait()

    def process(self, item: int) -> int:
        return item


def event_time(item: int) -> float:
    return float(item)


def fails_on_odd_once(item: int) -> int:
    """Fail on odd items: what a resilient stage with on_error="skip" passes over."""
    if item % 2:
        raise ValueError(f"odd {item}")
    return item


async def async_double(item: int) -> int:
    return item * 2


def key_of(item: object) -> object:
    return item


def refuse_to_load() -> object:
    """Called when an output of `breaks_on_load` is unpickled: here, in the parent."""
    raise ValueError("this output cannot be rebuilt")


class BreaksOnLoad:
    """Pickles in the worker; unpickling it in the parent fails."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return refuse_to_load, ()


def breaks_on_load(item: int) -> object:
    return BreaksOnLoad() if item == 2 else item


class KillsItsProcessOnThree(PipelineStage[int, int]):
    """Notes its process in `folder` in setup; SIGKILLs its own process on item 3."""

    def __init__(self, folder: str, *, workers: int = 2) -> None:
        super().__init__(workers=workers)
        self.folder = folder

    def setup(self) -> None:
        Path(self.folder, f"process-{os.getpid()}").touch()

    def process(self, item: int) -> int:
        if item == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return item
