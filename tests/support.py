"""What several test modules share: the bound on waits, test stages, and Ctrl-C."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

from pipeline import PipelineStage
from pipeline.safequeue import SafeQueue
from pipeline.stats import StageStatistics

WAIT = 5.0  # the bound on every wait for another thread or process

# A run of the tests against an install made without the C stage on purpose.
PURE_RUN = (
    os.environ.get("PIPELINE_NATIVE") == "skip"
    and importlib.util.find_spec("pipeline.native._native") is None
)
# DataPipeline's implementations, the C one marked as needing the C stage.
IMPLEMENTATIONS = [pytest.param("native", marks=pytest.mark.c_stage), "reference"]
ITEM_SECONDS = 0.002  # the work per item of `Slow`


class Slow(PipelineStage[int, int]):
    """Takes ITEM_SECONDS per item, waiting on an Event never set: its own work, like slow I/O."""

    def __init__(self, name: str | None = None, *, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.pause = threading.Event()

    def process(self, item: int) -> int:
        self.pause.wait(ITEM_SECONDS)
        return item


HOLD_SECONDS = 0.4  # the work of `Held` on its first item, once the queues before it are full


class Held(PipelineStage[int, int]):
    """Works HOLD_SECONDS on each of its first items, one per worker, once `full` is set.

    The other items pass at once. Each worker holds one of items 0..workers-1 (a
    holding worker takes nothing else), so every worker is busy for HOLD_SECONDS.

    With `full` set by `filling` when every queue before this stage is full, the stages
    before it are provably blocked and those after it starved for HOLD_SECONDS, however
    loaded the machine: shares of time that hold without timing luck. The wait for `full`
    is bounded by WAIT; `saw_full` tells whether it came.
    """

    def __init__(self, name: str | None = None, *, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.full = threading.Event()
        self.pause = threading.Event()
        self.saw_full = False

    def process(self, item: int) -> int:
        if item < self.workers:
            self.saw_full = self.full.wait(WAIT)
            self.pause.wait(HOLD_SECONDS)
        return item


def share_of_own_time(stage: StageStatistics, seconds: float) -> float:
    """Return `seconds` as a share of the time `stage` recorded as busy, starved or blocked.

    Unlike a share of the run's elapsed time, it does not shrink when a loaded machine
    stretches the run's start-up and shutdown, which belong to no stage's state.
    """
    recorded = stage.busy_seconds + stage.starved_seconds + stage.blocked_seconds
    return seconds / recorded if recorded > 0 else 0.0


def filling(
    count: int, full: threading.Event, *, before: int, queue_size: int, workers: int = 1
) -> Iterator[int]:
    """Yield range(count), setting `full` once the pipeline up to a `Held` stage is full.

    With batch_size=1 and a `Held` stage of `workers` workers after `before` one-worker
    stages, the pipeline holds before * (queue_size + 1) + queue_size + workers items
    when full: one in each worker, `queue_size` in each stage's input queue. The source
    is asked for the item after those only once they have all been put, so `full` is
    set then (the last stage before the held one may still be handing over its item: a
    matter of microseconds, not of load).
    """
    full_at = before * (queue_size + 1) + queue_size + workers
    if full_at >= count:
        raise ValueError(f"count must be > {full_at} to fill the pipeline, got {count}")
    return _filling(count, full, full_at)


def _filling(count: int, full: threading.Event, full_at: int) -> Iterator[int]:
    for item in range(count):
        if item == full_at:
            full.set()
        yield item


class Boom(Exception):
    """The exception the failure tests raise, so its identity can be checked."""


class Lifecycle(PipelineStage[int, int]):
    """Passes items through, counting setups and teardowns; fails in `fail_in`, if named."""

    def __init__(self, fail_in: str = "", *, workers: int = 1) -> None:
        super().__init__(workers=workers)
        self.fail_in = fail_in
        self.lock = threading.Lock()
        self.set_up = 0
        self.torn_down = 0

    def setup(self) -> None:
        with self.lock:
            self.set_up += 1
        if self.fail_in == "setup":
            raise Boom("no connection")

    def teardown(self) -> None:
        with self.lock:
            self.torn_down += 1
        if self.fail_in == "teardown":
            raise Boom("could not close")

    def process(self, item: int) -> int:
        return item


def interrupt_when_ready(arguments: list[str], ready: str) -> tuple[int, str, str]:
    """Run `python *arguments`, send it a real SIGINT once it prints `ready`, and return
    its exit code, the rest of its standard output, and its standard error."""
    process = subprocess.Popen(
        [sys.executable, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == ready
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=WAIT)
    finally:
        process.kill()
        process.wait(WAIT)
    return process.returncode, stdout, stderr


@contextmanager
def sigint_setting(pressed: threading.Event) -> Iterator[None]:
    """Install a SIGINT handler that sets `pressed`, then raises KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        pressed.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def press_from_another_thread(when: threading.Event) -> threading.Thread:
    """Start a thread that, once `when` is set, sends SIGINT to itself, not to the main thread.

    The deterministic form of a lost wake-up: the handler is due on the main thread, but
    nothing interrupts the main thread's wait (`pipeline._interrupts`).
    """

    def press() -> None:
        if when.wait(WAIT):
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    presser = threading.Thread(target=press, name="presser")
    presser.start()
    return presser


class OwningQueue(SafeQueue[Any]):
    """A link that uses its right to a list handed over uncopied: it stores a copy and
    writes into the one it was given, as a consumer extending a chunk it took does."""

    written = "written after the hand-over"

    def put_many(
        self,
        items: Iterable[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        copy: bool = True,
    ) -> None:
        super().put_many(list(items), block, timeout, copy=False)
        if not copy and isinstance(items, list):
            items.append(self.written)
