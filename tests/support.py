"""What several test modules share: the bound on waits, test stages, and Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from pipeline import PipelineStage

WAIT = 5.0  # the bound on every wait for another thread or process
ITEM_SECONDS = 0.002  # the work per item of `Slow`


class Slow(PipelineStage[int, int]):
    """Takes ITEM_SECONDS per item, waiting on an Event never set: its own work, like slow I/O."""

    def __init__(self, name: str | None = None, *, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.pause = threading.Event()

    def process(self, item: int) -> int:
        self.pause.wait(ITEM_SECONDS)
        return item


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
