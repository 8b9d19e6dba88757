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

import _signal  # type: ignore[import-not-found]  # the C module behind `signal`; no stub
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["MAIN_THREAD_WAIT_SLICE", "CtrlCHeld", "Presses", "ctrl_c_held", "wait_slice"]

_getsignal: Callable[[int], object] = _signal.getsignal
_setsignal: Callable[[int, object], object] = _signal.signal

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


def ctrl_c_held(on_press: Callable[[], object] | None = None) -> CtrlCHeld:
    """Return a context manager that runs its block with Ctrl-C held; see `CtrlCHeld`."""
    return CtrlCHeld(on_press)


class CtrlCHeld:
    """Run a block with Ctrl-C held; raise what its handler raised when the block ends.

    The handler installed before the block (Python's, raising `KeyboardInterrupt`, or
    the program's own) is called at the press, inside a handler of ours that keeps what
    it raises and then calls `on_press` (first press only); the block winds down, looking
    at the `Presses` it is given between slices of its waits. `on_press` runs on the main
    thread between two bytecodes of whatever the block was doing, so it may take no lock
    the block could be holding, unless reentrant. Only the main thread receives Ctrl-C
    and may change the handler: elsewhere, or with a handler that is not a Python
    callable (ignored, or the system default), the block runs unchanged and `Presses`
    stays empty. If the program installs another handler during the block, that one
    stays.

    It goes through `_signal`, the C module behind `signal`: `signal.signal` converts
    handlers to enums on the way, 4.3 us a call against 0.27 us (docs/gil-free.md has the
    command), and a stream holds Ctrl-C
    once per batch it takes.
    """

    __slots__ = ("_handler", "_installed", "_on_press", "_previous", "presses")

    def __init__(self, on_press: Callable[[], object] | None = None) -> None:
        self.presses = Presses()
        self._on_press = on_press
        self._previous: Callable[[int, FrameType | None], object] | None = None
        self._installed = False
        self._handler = self._hold  # one bound method, so that it can be recognised

    def __enter__(self) -> Presses:
        if threading.current_thread() is not threading.main_thread():
            return self.presses
        previous = _getsignal(signal.SIGINT)
        if not callable(previous):
            return self.presses
        self._previous = previous
        _setsignal(signal.SIGINT, self._handler)
        self._installed = True
        return self.presses

    def __exit__(self, *exc_info: object) -> None:
        if not self._installed:
            return
        self._installed = False
        if _getsignal(signal.SIGINT) is self._handler:
            _setsignal(signal.SIGINT, self._previous)
        if self.presses.raised:
            raise self.presses.raised[0]

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        assert self._previous is not None
        try:
            self._previous(signum, frame)
        except BaseException as exc:  # noqa: BLE001 - kept, and raised when the block ends
            self.presses.raised.append(exc)
            if self._on_press is not None and len(self.presses.raised) == 1:
                self._on_press()  # not again from within
