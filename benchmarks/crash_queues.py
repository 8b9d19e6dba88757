"""SIGKILL a resumable run again and again, resume it, count lost and duplicated outputs.

A child process runs `run_resumable` from queue "in" to a sink, printing a line per
committed batch. The parent reads a random number of those lines, waits a random
moment (so the kill lands anywhere in the next batch: leasing, the pipeline run, the
commit), and sends SIGKILL; then starts the child again, until it has killed it
`--kills` times; then lets the last child finish. Every input n must have produced
its two outputs [n, 0] and [n, 1] exactly once.

Two sinks, same run:
- together: the sink is queue "out" in the same file; outputs and ack commit in one
  transaction (exactly once is the claim);
- separate: the sink is a function that puts the outputs into "out" in their own
  transaction before the ack (at least once: a kill between the two duplicates a batch).

Run: .venv/bin/python benchmarks/crash_queues.py --kills 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.queues.durable import DurableQueue

SRC = str(Path(__file__).resolve().parent.parent / "src")

CHILD = """
import sys
sys.path.insert(0, {src!r})
from pipeline import Pipeline
from pipeline.queues.durable import DurableQueue
from pipeline.queues.resumable import run_resumable
from pipeline.stages.functions import FlatMapFunctionStage
source = DurableQueue({path!r}, "in", max_attempts=None)
out = DurableQueue({path!r}, "out")
sink = out if {together!r} else out.put_many
pipeline = Pipeline(FlatMapFunctionStage(lambda n: [[n, 0], [n, 1]], workers=2), batch_size=32)
run_resumable(pipeline, source, sink, batch_size={batch},
              on_commit=lambda run: print(run.items_in, flush=True))
print("finished", flush=True)
"""


def run_child(script: str, rng: random.Random | None) -> bool:
    """Run one child; with `rng`, SIGKILL it at a random moment. Return True if it was killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stderr is not None
    wanted = None if rng is None else rng.randint(1, 5)
    try:
        for lines, line in enumerate(child.stdout, start=1):
            if line == "finished\n":
                break
            if wanted is not None and rng is not None and lines >= wanted:
                threading.Event().wait(rng.uniform(0, 0.02))
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=120)
    finally:
        if child.poll() is None:  # a hang, or this process interrupted: leave no child
            child.kill()
            child.wait(timeout=10)
        errors = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
    if child.returncode == -signal.SIGKILL:
        return True
    if child.returncode != 0:
        raise SystemExit(f"the child failed ({child.returncode}):\n{errors}")
    return False


def crash_run(together: bool, items: int, kills: int, batch: int, seed: int) -> dict[str, int]:
    """Run the kill-and-resume cycle with one sink; print and return lost and duplicated."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "crash.db"
        with DurableQueue[int](path, "in") as source:
            for start in range(0, items, 10_000):
                source.put_many(list(range(start, min(items, start + 10_000))))
        script = CHILD.format(src=SRC, path=str(path), together=together, batch=batch)
        started = time.perf_counter()
        killed = runs = 0
        while killed < kills:
            runs += 1
            if run_child(script, rng):
                killed += 1
            else:
                break  # the input ran out before the kills did: say so below
        run_child(script, None)
        elapsed = time.perf_counter() - started
        with DurableQueue[int](path, "in") as source, DurableQueue[Any](path, "out") as sink:
            left, dead = source.qsize(), len(source.dead_letters())
            outputs: Counter[tuple[int, int]] = Counter()
            while sink.qsize():
                batch_out = sink.get_many(10_000)
                outputs.update(tuple(entry.item) for entry in batch_out)
                sink.ack_many(batch_out)
    expected = {(n, k) for n in range(items) for k in (0, 1)}
    lost = len(expected - outputs.keys())
    duplicated = sum(count - 1 for count in outputs.values())
    stray = len(outputs.keys() - expected)
    mode = "together (same transaction)" if together else "separate (sink, then ack)"
    print(
        f"{mode:<28} {items:>8,} items, {killed:>4} SIGKILLs in {runs + 1} runs, {elapsed:6.1f} s: "
        f"lost {lost}, duplicated {duplicated}, stray {stray}, left in queue {left}, dead {dead}"
    )
    return {"lost": lost + stray + left + dead, "duplicated": duplicated, "killed": killed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SIGKILL a resumable run, resume, count.")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100, help="items leased per commit")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sink", choices=["together", "separate", "both"], default="both", help="which sinks"
    )
    args = parser.parse_args(argv)
    figures: dict[str, dict[str, object]] = {}
    for together in (True, False):
        if args.sink in ("both", "together" if together else "separate"):
            counts = crash_run(together, args.items, args.kills, args.batch, args.seed)
            if together:  # the separate sink duplicates by design: not a figure to watch
                for name, value in counts.items() - {("killed", counts["killed"])}:
                    figures[f"same-file sink, {name}"] = {"value": value, "better": "lower"}
    if "PIPELINE_BENCH_JSON" in os.environ:
        Path(os.environ["PIPELINE_BENCH_JSON"]).write_text(json.dumps(figures), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
