"""Kill a run with SIGKILL halfway, resume it, and find nothing lost and nothing twice.

The inputs wait in a `DurableQueue` ("in") in one SQLite file; `run_resumable` leases
them a batch at a time, runs each batch through the pipeline, and stores the batch's
outputs in a second queue of the same file ("out") in the transaction that acks its
inputs. A child process starts the run and kills itself (`kill -9`: no cleanup, no
`finally`) in the middle of a batch. The batches committed before the kill are done;
the batch it was working on is handed out again when the file is next opened, since
the process that leased it is gone. Resuming in this process finishes the rest, and
every input's output is in "out" exactly once.

Run: .venv/bin/python examples/resumable.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from pipeline import Pipeline
from pipeline.queues import DurableQueue, ResumableRun, run_resumable
from pipeline.stages import FunctionStage

ITEMS = 1000
BATCH = 100
KILL_AT = 450  # the child kills itself on this item, in the middle of its fifth batch


def square(number: int) -> int:
    return number * number


def square_or_die(number: int) -> int:
    if number == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return square(number)


def report(run: ResumableRun) -> None:
    print(f"  committed batch {run.batches}: {run.items_in} inputs acked so far", flush=True)


def resume(path: Path, function: FunctionStage[int, int]) -> ResumableRun:
    with DurableQueue[int](path, "in") as source, DurableQueue[int](path, "out") as sink:
        return run_resumable(Pipeline(function), source, sink, batch_size=BATCH, on_commit=report)


def child(path: Path) -> int:
    resume(path, FunctionStage(square_or_die, name="square"))
    return 1  # not reached: the run kills this process first


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.db"
        with DurableQueue[int](path, "in") as source:
            source.put_many(list(range(ITEMS)))
        print(f"{ITEMS} inputs stored in {path.name}; a child process starts the run")
        killed = subprocess.run(
            [sys.executable, __file__, "--child", str(path)],
            stdout=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
        print(killed.stdout, end="")
        assert killed.returncode == -signal.SIGKILL, killed.returncode
        with DurableQueue[int](path, "in") as source, DurableQueue[int](path, "out") as sink:
            left, stored = source.qsize(), sink.qsize()
        print(f"the child was killed (SIGKILL) on item {KILL_AT}: {stored} outputs stored,")
        print(f"{left} inputs still in the queue (the batch it was on among them)")

        print("resuming in this process:")
        done = resume(path, FunctionStage(square, name="square"))
        print(f"resumed: {done}")
        with DurableQueue[int](path, "out") as sink:
            outputs = Counter(sink.consume(batch_size=BATCH))
        expected = Counter(square(number) for number in range(ITEMS))
        lost = sum((expected - outputs).values())
        twice = sum((outputs - expected).values())
        print(f"{sum(outputs.values())} outputs for {ITEMS} inputs: {lost} lost, {twice} twice")
        assert lost == twice == 0
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        raise SystemExit(child(Path(sys.argv[2])))
    raise SystemExit(main())
