"""Work that the Dask scenarios send to the cluster's workers: importable by name there.

A call of `record_call` leaves a file when it starts and another when it ends, so the
scenarios can count, from the client's process, the calls started and the calls ended.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

CALL_SECONDS = 0.05  # the work of one `record_call`


class Unprintable(Exception):
    """An exception whose message cannot be read: its `__str__` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no message")


def record_call(item: tuple[str, int]) -> int:
    """Leave `start-N` in the folder, work CALL_SECONDS, leave `end-N`; return N."""
    folder, number = item
    Path(folder, f"start-{number}").touch()
    threading.Event().wait(CALL_SECONDS)
    Path(folder, f"end-{number}").touch()
    return number


def record_call_failing_on_five(item: tuple[str, int]) -> int:
    """Like `record_call`, but the call of item 5 raises once it has recorded its end."""
    number = record_call(item)
    if number == 5:
        raise ValueError("no 5")
    return number


def calls(folder: str) -> tuple[int, int]:
    """Return how many calls of `record_call` in `folder` started, and how many ended."""
    names = [path.name for path in Path(folder).iterdir()]
    started = sum(1 for name in names if name.startswith("start-"))
    ended = sum(1 for name in names if name.startswith("end-"))
    return started, ended


def a_lock(item: int) -> object:
    """Return an output that cannot be sent back: a lock."""
    return threading.Lock()


def unprintable_on_three(item: int) -> int:
    if item == 3:
        raise Unprintable
    return item


class BrokenRepr(Exception):
    """An exception whose `__repr__` raises (Dask's worker prints what it sends back)."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


def broken_repr_on_two(item: int) -> int:
    if item == 2:
        raise BrokenRepr("no 2")
    return item


class HoldsALock(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def unpicklable_failure_on_two(item: int) -> int:
    if item == 2:
        raise HoldsALock("no 2")
    return item


def payload_size(item: bytes) -> int:
    return len(item)


def record_call_interrupting_on_three(item: tuple[str, int]) -> int:
    """Like `record_call`; the call of item 3 sends SIGINT to the client's process first.

    The workers of `local_cluster` are processes started by the client's process, so
    their parent is the process whose run is interrupted, as by a Ctrl-C.
    """
    if item[1] == 3:
        os.kill(os.getppid(), signal.SIGINT)
    return record_call(item)


HOLD_SECONDS = 1.0  # the call of `interrupt_and_hold`: longer than the stop waits for it


def interrupt_and_hold(item: int) -> int:
    """Send SIGINT to the client's process, then work HOLD_SECONDS: a call a stop outlasts."""
    os.kill(os.getppid(), signal.SIGINT)
    threading.Event().wait(HOLD_SECONDS)
    return item


def cancel_own_task(item: int) -> int:
    """Cancel, from the worker, the task this call runs in: as a client closing would."""
    from distributed import Future, get_client, get_worker

    client = get_client()
    task: Future[int] = Future(get_worker().get_current_task(), client)
    client.cancel([task], force=True)  # type: ignore[no-untyped-call]
    threading.Event().wait(CALL_SECONDS)
    return item
