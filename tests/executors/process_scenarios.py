"""Scripts for the process-stage scenarios that could hang: run one, print what happened.

Usage: python process_scenarios.py SCENARIO  (the tests folder on PYTHONPATH; worker
processes note their ids in $PROCESS_WORK_FOLDER). It prints "ready" when the test may
press Ctrl-C, then one line: "outputs ...", "raised TYPE: MESSAGE | CAUSE: MESSAGE",
"closed" or "interrupted".
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

FOLDER = os.environ.get("PROCESS_WORK_FOLDER", "")

if __name__ == "__mp_main__" and os.environ.get("DIE_WHILE_STARTING"):
    # A spawned worker imports this script as __mp_main__ while it starts: the second
    # to get here in each run dies, as a terminal's Ctrl-C can kill it then. Whether
    # the pool itself notices is a race it often loses, so the script runs three times.
    # Each worker takes the next start number by creating its file exclusively, so two
    # workers starting at once never take the same one.
    Path(FOLDER, f"process-{os.getpid()}").touch()
    start = 0
    while True:
        try:
            os.close(os.open(Path(FOLDER, f"start-{start}"), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            start += 1
    if start % 2 == 1:
        os._exit(3)

import process_work  # noqa: E402

from pipeline import Pipeline, StageError  # noqa: E402
from pipeline.executors import ProcessStage  # noqa: E402
from pipeline.stages import FunctionStage  # noqa: E402


def held_lock() -> None:
    """Another thread holds a lock while the processes start; the stage takes it there."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with process_work.HELD:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(60)
    try:
        stage = ProcessStage(FunctionStage(process_work.under_held_lock, workers=2))
        print("outputs", *Pipeline(stage).run(range(6)), flush=True)
    finally:
        release.set()
        holder.join(60)


def stuck_then_failure() -> None:
    """Item 0 never returns in its process; item 1 fails in the other (unordered: in order,
    the failure would wait for the outputs of item 0)."""
    function = FunctionStage(process_work.never_returns_on_zero, workers=2)
    stage = ProcessStage(function, stop_timeout=0.5, start_method=sys.argv[2])
    try:
        Pipeline(stage, batch_size=1, ordered=False).run(range(4))
    except StageError as error:
        print(f"raised {describe(error)} | {describe(error.__cause__)}", flush=True)


def stuck_then_break() -> None:
    """Item 0 never returns in its process; the consumer stops after one output."""
    function = FunctionStage(process_work.never_returns_on_zero, workers=2)
    stage = ProcessStage(function, stop_timeout=0.5)
    outputs = Pipeline(stage, batch_size=1, ordered=False).stream([0, 2, 3, 4, 5])
    for _ in outputs:
        break
    outputs.close()
    print("closed", flush=True)


def stuck_then_ctrl_c() -> None:
    """Item 0 never returns in its process; Ctrl-C comes once another item is out."""
    function = FunctionStage(process_work.never_returns_on_zero, workers=2)
    stage = ProcessStage(function, stop_timeout=0.5)
    try:
        for _ in Pipeline(stage, batch_size=1, ordered=False).stream([0, 2, 3, 4, 5]):
            print("ready", flush=True)
            process_work.NEVER.wait(60)
    except KeyboardInterrupt:
        print("interrupted", flush=True)


def ctrl_c_while_starting() -> None:
    """Setup never returns in the processes; Ctrl-C comes once both are in it."""
    waiting = threading.Event()

    def say_ready() -> None:
        while not waiting.wait(0.05):
            if len(list(Path(FOLDER).glob("process-*"))) == 2:
                print("ready", flush=True)
                return

    watcher = threading.Thread(target=say_ready)
    watcher.start()
    try:
        Pipeline(ProcessStage(process_work.SetupNeverReturns(workers=2))).run(range(4))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        waiting.set()
        watcher.join(60)


def dies_while_starting() -> None:
    """The second of two spawned workers dies while it starts (see the top of the file)."""
    stage = ProcessStage(FunctionStage(process_work.double, workers=2), start_method="spawn")
    for _ in range(3):
        try:
            Pipeline(stage).run(range(10))
        except StageError as error:
            print(f"raised {describe(error)} | {describe(error.__cause__)}", flush=True)


def describe(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}"


SCENARIOS = {
    "held-lock": held_lock,
    "stuck-then-failure": stuck_then_failure,
    "stuck-then-break": stuck_then_break,
    "stuck-then-ctrl-c": stuck_then_ctrl_c,
    "ctrl-c-while-starting": ctrl_c_while_starting,
    "dies-while-starting": dies_while_starting,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
