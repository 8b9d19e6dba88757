"""Work that tests send to other processes: importable by name, as spawn and Dask need.

Test modules are imported by pytest under names a fresh process cannot import, so
anything pickled by reference (functions, stage classes) lives here, in a module on
the tests' path.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from pipeline import PipelineStage


class RemoteBoom(Exception):
    """Raised in a worker; its identity is checked when it comes back."""


class NeedsTwoArguments(Exception):
    """An exception that cannot be rebuilt from its args: pickling it back breaks pools."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def square(item: int) -> int:
    return item * item


def fail_on_seven(item: int) -> int:
    if item == 7:
        raise RemoteBoom(f"no {item}")
    return item


def raise_unrebuildable(item: int) -> int:
    raise NeedsTwoArguments("odd", 3)


def kill_own_process_on_three(item: int) -> int:
    if item == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def pid_of(item: int) -> tuple[int, int]:
    return item, os.getpid()


def nap(item: int) -> int:
    threading.Event().wait(0.005 if item % 4 else 0.02)
    return item


def record_and_kill_first_attempt(folder: str) -> int:
    """Note an attempt in `folder`; the first attempt kills its own worker process."""
    attempts = sorted(Path(folder).glob("attempt-*"))
    Path(folder, f"attempt-{len(attempts)}-{os.getpid()}").touch()
    if not attempts:
        os.kill(os.getpid(), signal.SIGKILL)
    return len(attempts)


class PidStage(PipelineStage[int, tuple[int, int]]):
    """Tags each item with its process id; setup and teardown leave a file per process."""

    def __init__(self, folder: str, *, workers: int = 2) -> None:
        super().__init__(workers=workers)
        self.folder = folder

    def setup(self) -> None:
        Path(self.folder, f"setup-{os.getpid()}").touch()
        self.local.pid = os.getpid()

    def teardown(self) -> None:
        Path(self.folder, f"teardown-{os.getpid()}").touch()

    def process(self, item: int) -> tuple[int, int]:
        return item, self.local.pid


class FailingSetup(PipelineStage[int, int]):
    """Fails in setup, in every worker process."""

    def setup(self) -> None:
        raise RemoteBoom("no connection")

    def process(self, item: int) -> int:
        return item


class FailingTeardown(PipelineStage[int, int]):
    """Fails in teardown, in every worker process."""

    def teardown(self) -> None:
        raise RemoteBoom("could not close")

    def process(self, item: int) -> int:
        return item


class HoldsALock(PipelineStage[int, int]):
    """Keeps a lock as an attribute: it cannot go to another process."""

    def __init__(self) -> None:
        super().__init__()
        self.guard = threading.Lock()

    def process(self, item: int) -> int:
        return item


class ReturnsALock(PipelineStage[int, object]):
    """Returns an output that cannot come back from another process."""

    def process(self, item: int) -> object:
        return threading.Lock() if item == 2 else item


class SlowSquare(PipelineStage[int, tuple[int, int]]):
    """Takes `seconds` per item, tagging it with its process id."""

    def __init__(self, seconds: float, *, workers: int = 2) -> None:
        super().__init__(workers=workers)
        self.seconds = seconds

    def process(self, item: int) -> tuple[int, int]:
        time.sleep(self.seconds)
        return item * item, os.getpid()


class BatchSizes(PipelineStage[int, tuple[int, int, int]]):
    """Waits `seconds` per item; each output says its item, its batch's size and its process."""

    def __init__(self, seconds: float, *, workers: int = 2) -> None:
        super().__init__(workers=workers)
        self.seconds = seconds

    def process_batch(self, items: list[int]) -> list[tuple[int, int, int]]:
        pause = threading.Event()
        outputs = []
        for item in items:
            pause.wait(self.seconds)
            outputs.append((item, len(items), os.getpid()))
        return outputs


class SlottedScale(PipelineStage[int, int]):
    """Keeps its factor in a slot, and something of its own in another."""

    __slots__ = ("factor", "guard")

    def __init__(self, factor: int, *, guard: object = None, workers: int = 2) -> None:
        super().__init__(workers=workers)
        self.factor = factor
        self.guard = guard

    def process(self, item: int) -> int:
        return item * self.factor
