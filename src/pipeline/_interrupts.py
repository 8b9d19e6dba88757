"""Ctrl-C and the main thread: what every blocking wait of the package owes it.

CPython runs a Python signal handler only in the main thread, between bytecodes. Two
things follow, and each has its helper here.

1. **A wait on the main thread wakes up in slices** (`MAIN_THREAD_WAIT_SLICE`). A
   SIGINT normally interrupts the main thread's lock wait at once. But one that
   arrives while the main thread is on its way into the wait (after the interpreter
   last looked for signals, before the thread sleeps), or that the kernel hands to
   another thread, wakes nothing: the handler runs only when the wait ends by itself.
   The window is wide enough to hit: a task graph interrupted just as it started
   missed the Ctrl-C until its last task returned in 5 runs of 200 on 3.13t
   (`benchmarks/ctrl_c_backoff.py --measure 200 --scenario taskgraph`), and a
   pipeline in a 30 s retry backoff missed it for the whole backoff. `wait_slice()`
   bounds that delay; the caller's loop looks again.
2. **Ctrl-C can be held** (`ctrl_c_held`). A `KeyboardInterrupt` raised at an
   arbitrary bytecode of the main thread can cut a `Thread.start()` short (leaving a
   thread nothing waits for), land between two statements of the code that joins the
   run's threads, or inside `threading.Condition.wait` after its lock was let go (the
   `with` then releases an unlocked lock: seen on 3.13t). Inside the block, the
   handler that was installed still runs at the press, but what it raises is kept and
   raised when the block ends, so the block can stop the run and join its threads
   first. `Pipeline` holds it while it starts its threads; `TaskGraph.run`, which runs
   no code of the caller's on the main thread, for the whole run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["MAIN_THREAD_WAIT_SLICE", "Presses", "ctrl_c_held", "wait_slice"]

MAIN_THREAD_WAIT_SLICE = 0.02
"""Seconds a wait on the main thread sleeps before it looks for a Ctrl-C again."""


def wait_slice() -> float | None:
    """Return how long the calling thread may sleep in one wait: a slice on the main thread.

    Only the main thread runs signal handlers, so other threads wait untimed.
    """
    if threading.current_thread() is threading.main_thread():
        return MAIN_THREAD_WAIT_SLICE
    return None


class Presses:
    """What `ctrl_c_held` saw: whether Ctrl-C was pressed, and what its handler raised."""

    def __init__(self) -> None:
        self.raised: list[BaseException] = []

    def __bool__(self) -> bool:
        """True once the handler raised: the block should stop what it runs."""
        return bool(self.raised)


@contextlib.contextmanager
def ctrl_c_held(on_press: Callable[[], object] | None = None) -> Iterator[Presses]:
    """Run the block with Ctrl-C held; raise what its handler raised when the block ends.

    The handler installed before the block (Python's, raising `KeyboardInterrupt`, or
    the program's own) is called at the press, inside a handler of ours that keeps what
    it raises and then calls `on_press`; the block winds down, looking at the `Presses`
    it is given between slices of its waits. `on_press` runs on the main thread between
    two bytecodes of whatever the block was doing, so it may take no lock the block
    could be holding, unless reentrant. Only the main thread receives Ctrl-C and may
    change the handler: elsewhere, or with a handler that is not a Python callable
    (ignored, or the system default), the block runs unchanged and `Presses` stays empty.
    """
    presses = Presses()
    if threading.current_thread() is not threading.main_thread():
        yield presses
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        yield presses
        return

    def hold(signum: int, frame: object) -> None:
        try:
            previous(signum, frame)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - kept, and raised when the block ends
            presses.raised.append(exc)
            if on_press is not None and len(presses.raised) == 1:  # not again from within
                on_press()

    signal.signal(signal.SIGINT, hold)
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, previous)
        if presses.raised:
            raise presses.raised[0]
