"""Measure how long Ctrl-C takes to stop a pipeline: busy, or in a 30 s retry backoff.

Run alone, it is a scenario. `backoff` (the default): a stage fails and its RetryPolicy
backs off for 30 s. `busy`: three workers in two stages, each item 1 ms of work, over an
endless source. `taskgraph`: a task graph of 50 tasks of 50 ms each on 2 workers, just
started. When SIGINT arrives the script prints how long the stop took and how many
threads were left. With `--measure N` it runs the scenario N times in subprocesses,
sending the real SIGINT itself, and prints the figures.

The stop is timed from the moment the handler ran, except for `taskgraph`, where it is
timed from the moment the scenario said it was ready: the SIGINT is sent as the run
starts, when a lost wake-up (pipeline._interrupts) delays the handler itself, and a
Ctrl-C missed until the graph's 1.25 s of tasks ran out shows as a stop of over 1 s.

Run: .venv/bin/python benchmarks/ctrl_c_backoff.py --measure 20 [--scenario busy|taskgraph]
"""

from __future__ import annotations

import argparse
import itertools
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from types import FrameType

from pipeline import Pipeline
from pipeline.graph import TaskGraph
from pipeline.resilience import ResilientStage, RetryPolicy
from pipeline.stages import FunctionStage

BACKOFF_SECONDS = 30.0
READY = {"backoff": "backing off", "busy": "running", "taskgraph": "started"}
WHEN = {
    "backoff": f"during a {BACKOFF_SECONDS:.0f} s backoff",
    "busy": "while 3 workers are busy",
    "taskgraph": "as a task graph starts",
}
TASKS = 50
TASK_SECONDS = 0.05


class LongestDelay(random.Random):
    """Make full jitter pick the whole 30 s backoff every time."""

    def uniform(self, a: float, b: float) -> float:
        return b


def report_stop(since: float) -> None:
    """Print the two lines `interrupt_once` reads: the stop's duration, and threads left."""
    print(f"stopped after {time.monotonic() - since:.4f} s", flush=True)
    print("threads left:", threading.active_count() - 1, flush=True)


def scenario(name: str) -> int:
    interrupted_at = 0.0

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted_at
        interrupted_at = time.monotonic()
        raise KeyboardInterrupt

    def down(item: int) -> int:
        print(READY["backoff"], flush=True)
        raise ConnectionError("service down")

    pause = threading.Event()

    def work(item: int) -> int:
        pause.wait(0.001)  # the stage's own work
        return item

    signal.signal(signal.SIGINT, on_sigint)
    if name == "taskgraph":
        return task_graph_scenario()
    retry = RetryPolicy(
        max_attempts=2, base_delay=BACKOFF_SECONDS, max_delay=BACKOFF_SECONDS, rng=LongestDelay()
    )
    try:
        if name == "backoff":
            stage = ResilientStage(FunctionStage(down), retry=retry)
            Pipeline(stage, batch_size=1).run(range(3))
        else:
            chain = FunctionStage(work, workers=2) >> FunctionStage(work)
            for count, _ in enumerate(Pipeline(chain).stream(itertools.count())):
                if count == 100:
                    print(READY["busy"], flush=True)
    except KeyboardInterrupt:
        report_stop(interrupted_at)
        return 0
    return 3


def task_graph_scenario() -> int:
    """Run TASKS tasks of TASK_SECONDS on 2 workers; time a Ctrl-C from the announcement."""
    pause = threading.Event()
    announced_at = 0.0

    def announce() -> None:
        nonlocal announced_at
        announced_at = time.monotonic()
        print(READY["taskgraph"], flush=True)

    graph = TaskGraph().add("announce", announce)
    for index in range(TASKS):
        graph.add(f"task{index}", lambda _: pause.wait(TASK_SECONDS), after="announce")
    try:
        graph.run(workers=2)
    except KeyboardInterrupt:
        report_stop(announced_at)
        return 0
    return 3


def interrupt_once(name: str) -> tuple[float, str]:
    """Run scenario `name` in a subprocess, send SIGINT once it is ready, return its report."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--scenario", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != READY[name]:
            raise RuntimeError(f"the {name} scenario never got ready")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=BACKOFF_SECONDS / 2)
    finally:
        process.kill()
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the scenario exited with {process.returncode}: {stderr}")
    stopped, threads = stdout.strip().splitlines()
    return float(stopped.removeprefix("stopped after ").removesuffix(" s")), threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", type=int, metavar="N", help="run N times and report")
    parser.add_argument("--scenario", choices=sorted(READY), default="backoff")
    args = parser.parse_args(argv)
    if args.measure is None:
        return scenario(args.scenario)
    reports = [interrupt_once(args.scenario) for _ in range(args.measure)]
    seconds = [stop for stop, _ in reports]
    leaks = sum(threads != "threads left: 0" for _, threads in reports)
    late = sum(stop > 1.0 for stop in seconds)
    print(
        f"{args.measure} runs, SIGINT {WHEN[args.scenario]}: stopped after "
        f"median {statistics.median(seconds) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms; "
        f"runs leaving threads: {leaks}; stops over 1 s: {late}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
