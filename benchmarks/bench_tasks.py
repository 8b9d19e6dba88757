"""TaskWorkers beside huey's SqliteHuey: throughput, a SIGKILLed worker, a task it cannot import.

Both on a SQLite file in a temporary folder, each with its defaults unless said, and
each with its workers in a worker process of their own, as both are deployed:
TaskWorkers: `TaskWorkers(path, threads=2)` in a child process; huey: its consumer,
`huey_consumer bench_tasks.HUEY -w 2 -k thread -q` (2 thread workers; `-q` logs
warnings and errors only, as TaskWorkers logs nothing per task), on
`SqliteHuey(filename=path)`. This process enqueues, one task per call (huey has no
batch enqueue), and reads the results.

1. Throughput: `--tasks` trivial tasks (`add(n, 1)`). Timed from the enqueue of the
   first to the moment the last result is in the file (counted every 2 ms), after a
   first task has run (so the worker process is up); every result then read back and
   checked. TaskWorkers also runs with `synchronous="FULL"`: huey sets no
   `synchronous`, so its file gets SQLite's default, FULL (an fsync per commit; the
   benchmark prints what it got), where TaskWorkers' default NORMAL survives a killed
   process but not a power loss. The three take turns in each of `--repeat` rounds,
   with a fresh file and a fresh worker process each time; the ratio is huey's time
   over TaskWorkers' in the same round.
2. kill -9: tasks that hold until a gate file goes; a worker process with 2 threads
   starts two of them and is SIGKILLed mid-task; the gate goes, a fresh worker process
   runs until nothing is pending. Counted: tasks whose result is stored, tasks lost,
   and runs (from a marker file each run appends to).
3. A task whose function the worker cannot import (its module exists only on the
   enqueuing side), then an ordinary task: where each ends up. TaskWorkers' worker
   runs with a short retry policy (3 attempts, delays under 0.05 s) to keep it short.

Run: .venv/bin/python benchmarks/bench_tasks.py [--tasks 5000] [--repeat 3] [--json FILE]
     .venv/bin/python benchmarks/bench_tasks.py --quick    (small sizes, a few seconds)
huey is in the `bench` extra; without it the huey parts are skipped, saying so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pipeline.queues.errors import TaskFailed
from pipeline.queues.tasks import TaskQueue, TaskWorkers
from pipeline.resilience.retry import RetryPolicy

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
MODULE = "bench_tasks"  # the name the workers import the task functions by
WORKERS = 2
TIMEOUT = 120.0  # seconds for anything the benchmark waits for
PRODUCER_ONLY = "bench_tasks_producer_only"  # a module only the enqueuing side has
HUEY_FILE = "BENCH_TASKS_HUEY_FILE"  # where huey's consumer finds the file of its app

Figures = dict[str, dict[str, Any]]
STARTED: list[int] = []  # the pid of every worker process started (the JSON lists them)
System = Literal["taskworkers", "huey"]
Synchronous = Literal["NORMAL", "FULL"]

CHILD = """
import sys
sys.path[:0] = [{benchmarks!r}, {src!r}]
import bench_tasks
raise SystemExit(bench_tasks.taskworkers_process({path!r}, {synchronous!r}))
"""


# The tasks (imported by the workers as bench_tasks.NAME).


def add(a: int, b: int) -> int:
    """The trivial task of the throughput part."""
    return a + b


def hold(n: int, marker: str, gate: str) -> int:
    """Note the run in `marker`, wait while the file `gate` exists (60 s at most), return n."""
    _mark(marker, f"start {n} {os.getpid()}")
    deadline = time.monotonic() + 60
    while os.path.exists(gate) and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    _mark(marker, f"end {n} {os.getpid()}")
    return n


def _mark(marker: str, line: str) -> None:
    descriptor = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{line}\n".encode())
    finally:
        os.close(descriptor)


def _huey() -> ModuleType | None:
    try:
        return importlib.import_module("huey")
    except ImportError:
        return None


def make_huey(path: str) -> Any:
    """Return a `SqliteHuey` on `path` with this module's tasks registered, as a huey app does."""
    huey = importlib.import_module("huey")
    app = huey.SqliteHuey(filename=path)
    app.bench_tasks = {"add": app.task()(add), "hold": app.task()(hold)}
    return app


# The app huey's consumer imports by name (bench_tasks.HUEY), in a worker process
# started with the file's path in the environment.
HUEY: Any = make_huey(os.environ[HUEY_FILE]) if HUEY_FILE in os.environ else None


def taskworkers_process(path: str, synchronous: Synchronous) -> int:
    """A TaskWorkers worker process: run tasks from `path` until SIGINT (Ctrl-C)."""
    quick = RetryPolicy(3, base_delay=0.01, max_delay=0.05, retry_on=Exception)
    try:
        with TaskWorkers(path, threads=WORKERS, retry=quick, synchronous=synchronous):
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


class WorkerProcess:
    """A worker process of `system` on `path`; its stderr goes to a file beside `path`."""

    def __init__(self, system: System, path: str, synchronous: Synchronous = "NORMAL") -> None:
        self.log = Path(f"{path}.{time.monotonic_ns()}.log")
        if system == "taskworkers":
            script = CHILD.format(benchmarks=str(HERE), src=SRC, path=path, synchronous=synchronous)
            command = [sys.executable, "-c", script]
            environment = dict(os.environ)
        else:
            consumer = ["-m", "huey.bin.huey_consumer", f"{MODULE}.HUEY"]
            command = [sys.executable, *consumer, "-w", str(WORKERS), "-k", "thread", "-q"]
            python_path = os.pathsep.join([str(HERE), SRC, os.environ.get("PYTHONPATH", "")])
            environment = {**os.environ, HUEY_FILE: path, "PYTHONPATH": python_path}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=environment
            )
        STARTED.append(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def errors(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=TIMEOUT)

    def stop(self) -> None:
        """Stop it as Ctrl-C does (both finish their running tasks), and wait for it."""
        try:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)


class Side:
    """What this process does with one system's file: enqueue, count, read results."""

    def __init__(self, system: System, path: str, synchronous: Synchronous = "NORMAL") -> None:
        self.system = system
        self.path = path
        if system == "taskworkers":
            self.queue: TaskQueue | None = TaskQueue(path, synchronous=synchronous)
        else:
            self.queue = None
            self.app = make_huey(path)

    def enqueue(self, name: str, *args: Any) -> Any:
        """Enqueue bench_tasks.`name`(*args); return the task's id."""
        if self.queue is not None:
            return self.queue.enqueue(f"{MODULE}:{name}", *args)
        return self.app.bench_tasks[name](*args).id

    def pending(self) -> int:
        if self.queue is not None:
            counts = self.queue.queue.counts()
            return counts.ready + counts.leased
        return int(self.app.pending_count() + self.app.scheduled_count())

    def results_stored(self) -> int:
        if self.queue is not None:
            connection = self.queue.queue.connection()
            sql = "SELECT count(*) FROM results WHERE queue = ?"
            return int(connection.execute(sql, (self.queue.queue.name,)).fetchone()[0])
        return int(self.app.result_count())

    def result(self, task: Any) -> tuple[str, Any]:
        """Return ("ok", value), ("failed", error) or ("none", None) for task id `task`."""
        if self.queue is not None:
            try:
                return "ok", self.queue.result(task, timeout=0)
            except TaskFailed as error:
                return "failed", str(error)
            except TimeoutError:
                return "none", None
        value = self.app.result(task, preserve=True)
        return ("none", None) if value is None else ("ok", value)

    def synchronous(self) -> str:
        """Return the `PRAGMA synchronous` this side's connection has."""
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        if self.queue is not None:
            value = self.queue.queue.connection().execute("PRAGMA synchronous").fetchone()[0]
        else:
            value = self.app.storage.sql("PRAGMA synchronous", results=True)[0][0]
        return names.get(value, str(value))

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
        else:
            self.app.storage.close()


def _wait_for(done: Callable[[], bool], what: str, interval: float = 0.002) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not done within {TIMEOUT} s")
        threading.Event().wait(interval)


# 1. Throughput.


def throughput(system: System, folder: Path, tasks: int, synchronous: Synchronous) -> float:
    """Time `tasks` trivial tasks through a fresh worker process; check every result."""
    path = str(folder / f"{system}-{synchronous}-{time.monotonic_ns()}.db")
    side = Side(system, path, synchronous)
    try:
        worker = WorkerProcess(system, path, synchronous)
        try:
            first = side.enqueue("add", 0, 0)
            _wait_for(lambda: side.result(first)[0] != "none", f"{system}: the first task")
            before = side.results_stored()
            started = time.perf_counter()
            ids = [side.enqueue("add", n, 1) for n in range(tasks)]
            _wait_for(lambda: side.results_stored() >= before + tasks, f"{system}: {tasks} tasks")
            elapsed = time.perf_counter() - started
        finally:
            worker.stop()
        wrong = [n for n, task in enumerate(ids) if side.result(task) != ("ok", n + 1)]
    finally:
        side.close()
    if wrong:
        raise SystemExit(f"{system}: {len(wrong)} wrong results, first for task {wrong[0]}")
    return elapsed


def huey_synchronous(folder: Path) -> str:
    """Return the `synchronous` setting huey's connections get (it sets none)."""
    side = Side("huey", str(folder / "huey-settings.db"))
    try:
        return side.synchronous()
    finally:
        side.close()


def bench_throughput(tasks: int, repeat: int, with_huey: bool, figures: Figures) -> None:
    runs: dict[str, Callable[[Path], float]] = {
        "TaskWorkers": lambda folder: throughput("taskworkers", folder, tasks, "NORMAL"),
        "TaskWorkers, synchronous=FULL": lambda folder: throughput(
            "taskworkers", folder, tasks, "FULL"
        ),
    }
    if with_huey:
        runs["huey SqliteHuey"] = lambda folder: throughput("huey", folder, tasks, "NORMAL")
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as directory:
        huey_setting = huey_synchronous(Path(directory)) if with_huey else None
        for round_number in range(repeat):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(runs[name](Path(directory)))
    print(
        f"1. {tasks:,} trivial tasks, {WORKERS} worker threads in a worker process, from the "
        f"enqueue of the first to the last result stored; {repeat} round(s), every result "
        "checked"
    )
    if huey_setting is not None:
        print(f"   huey's file: synchronous={huey_setting} (SQLite's default; huey sets none)")
    print(f"   {'':<32}{'min s':>8}{'median s':>10}{'max s':>8}{'tasks/s (median)':>18}")
    for name, seconds in times.items():
        middle = statistics.median(seconds)
        print(
            f"   {name:<32}{min(seconds):8.2f}{middle:10.2f}{max(seconds):8.2f}"
            f"{tasks / middle:18,.0f}"
        )
        figures[f"{name}: tasks/s"] = {"value": tasks / middle, "better": "higher"}
    if with_huey:
        huey_times = times["huey SqliteHuey"]
        for name in ("TaskWorkers", "TaskWorkers, synchronous=FULL"):
            ratios = [h / t for h, t in zip(huey_times, times[name], strict=True)]
            print(
                f"   huey's time / the time of {name}, same round: min {min(ratios):.2f}x, "
                f"median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x"
            )
            figures[f"huey time / {name} time"] = {
                "value": statistics.median(ratios),
                "better": "higher",
            }
    else:
        print("   huey is not installed (pip install huey, or the bench extra): its row is skipped")


# 2. and 3.: what happens to the tasks.


def _settle(side: Side, open_runs: Callable[[], int]) -> None:
    """Wait until nothing is pending and no run is open, three looks in a row 0.1 s apart."""
    deadline = time.monotonic() + TIMEOUT
    quiet = 0
    while quiet < 3:
        quiet = quiet + 1 if side.pending() == 0 and open_runs() == 0 else 0
        if time.monotonic() > deadline:
            raise SystemExit(f"{side.system}: still pending after {TIMEOUT} s")
        threading.Event().wait(0.1)


def _runs(marker: Path) -> list[tuple[str, int, int]]:
    if not marker.exists():
        return []
    rows = []
    for line in marker.read_text().splitlines():
        kind, n, pid = line.split()
        rows.append((kind, int(n), int(pid)))
    return rows


def kill_scenario(system: System, folder: Path, tasks: int) -> dict[str, int]:
    """SIGKILL a worker process mid-task, run a fresh one; return the counts."""
    path = str(folder / f"{system}-kill.db")
    marker, gate = folder / f"{system}-runs.txt", folder / f"{system}-gate"
    gate.touch()
    side = Side(system, path)
    try:
        ids = [side.enqueue("hold", n, str(marker), str(gate)) for n in range(tasks)]
        first = WorkerProcess(system, path)
        try:
            _wait_for(
                lambda: sum(kind == "start" for kind, _, _ in _runs(marker)) >= WORKERS,
                f"{system}: the first worker starting {WORKERS} tasks",
            )
        finally:
            first.kill()
        killed_mid_task = sum(kind == "start" for kind, _, _ in _runs(marker))
        gate.unlink()
        second = WorkerProcess(system, path)
        try:

            def open_runs() -> int:
                mine = [kind for kind, _, pid in _runs(marker) if pid == second.pid]
                return mine.count("start") - mine.count("end")

            _settle(side, open_runs)
        finally:
            second.stop()
        outcomes = [side.result(task) for task in ids]
    finally:
        side.close()
    started = Counter(n for kind, n, _ in _runs(marker) if kind == "start")
    completed = sum(kind == "ok" and value == n for n, (kind, value) in enumerate(outcomes))
    return {
        "tasks": tasks,
        "running when killed": killed_mid_task,
        "completed": completed,
        "lost": tasks - completed,
        "runs": sum(started.values()),
        "ran twice or more": sum(count > 1 for count in started.values()),
    }


def bench_kill(tasks: int, with_huey: bool, figures: Figures) -> dict[str, dict[str, int]]:
    print(
        f"2. kill -9: {tasks} tasks; a worker process with {WORKERS} threads is SIGKILLed while "
        "running two of them, then a fresh worker process runs until nothing is pending"
    )
    systems: list[System] = ["taskworkers", "huey"] if with_huey else ["taskworkers"]
    found: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tasks-kill-") as directory:
        for system in systems:
            counts = found[system] = kill_scenario(system, Path(directory), tasks)
            print(
                f"   {_title(system):<12} running when killed {counts['running when killed']}, "
                f"completed {counts['completed']} of {counts['tasks']}, lost {counts['lost']}; "
                f"{counts['runs']} runs ({counts['ran twice or more']} tasks ran twice)"
            )
            figures[f"kill -9, {_title(system)}: lost"] = {
                "value": counts["lost"],
                "better": "lower",
            }
    if found["taskworkers"]["lost"] == 0:
        print(
            "   TaskWorkers: every task ran at least once and its result was stored exactly "
            "once (the killed tasks ran again)"
        )
    if not with_huey:
        print("   huey is not installed: its side is skipped")
    return found


def unimportable_scenario(system: System, folder: Path) -> dict[str, Any]:
    """Enqueue a task of a module the worker process lacks, and an ordinary one after it."""
    modules = folder / "producer-only"
    modules.mkdir(exist_ok=True)
    (modules / f"{PRODUCER_ONLY}.py").write_text("def work(n):\n    return n\n")
    sys.path.insert(0, str(modules))
    try:
        work = importlib.import_module(PRODUCER_ONLY).work
    finally:
        sys.path.remove(str(modules))
    path = str(folder / f"{system}-unimportable.db")
    side = Side(system, path)
    try:
        if side.queue is not None:
            missing = side.queue.enqueue(work, 7)
        else:
            missing = side.app.task()(work)(7).id
        ordinary = side.enqueue("add", 1, 1)
        worker = WorkerProcess(system, path)
        try:
            _settle(side, lambda: int(side.result(ordinary)[0] == "none"))
        finally:
            worker.stop()
        found: dict[str, Any] = {
            "missing": side.result(missing),
            "ordinary": side.result(ordinary),
            "pending": side.pending(),
            "worker log": worker.errors,
        }
        if side.queue is not None:
            found["dead"] = [
                (item.id, item.attempts, item.error.splitlines()[0])
                for item in side.queue.queue.dead_letters()
            ]
            listing = subprocess.run(
                [sys.executable, "-m", "pipeline", "queue", path, "dead", "--name", "tasks"],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
            found["dead listing"] = listing.stdout
            found["missing id"] = missing
        else:
            rows = side.app.storage.sql("select count(*) from task", results=True)[0][0]
            found["rows left"] = rows
    finally:
        side.close()
        sys.modules.pop(PRODUCER_ONLY, None)
    return found


def bench_unimportable(with_huey: bool, figures: Figures) -> dict[str, dict[str, Any]]:
    print(
        "3. a task whose function the worker cannot import (its module is only on the "
        "enqueuing side), then an ordinary task"
    )
    systems: list[System] = ["taskworkers", "huey"] if with_huey else ["taskworkers"]
    found: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tasks-import-") as directory:
        for system in systems:
            seen = found[system] = unimportable_scenario(system, Path(directory))
            status, detail = seen["missing"]
            if system == "taskworkers":
                dead = seen["dead"]
                listed = f"#{seen['missing id']} " in seen["dead listing"]
                where = (
                    f"in the dead letters ({len(dead)} row: attempts {dead[0][1]}, "
                    f"{dead[0][2]}); `pipeline queue FILE dead` lists it: {listed}; "
                    f"result() raises TaskFailed"
                    if dead
                    else "not in the dead letters"
                )
                figures["unimportable task, TaskWorkers: dead letters"] = {
                    "value": len(dead),
                    "better": None,
                }
            else:
                logged = [
                    line.strip()
                    for line in seen["worker log"].splitlines()
                    if "Error reading from queue" in line or "TaskRegistry" in line
                ]
                where = (
                    f"dropped: no result ({status}), {seen['rows left']} rows left in its task "
                    f"table, nothing pending; the consumer logged: {' / '.join(logged) or '-'}"
                )
            ordinary = (
                "ran" if seen["ordinary"] == ("ok", 2) else f"did not run: {seen['ordinary']}"
            )
            print(f"   {_title(system):<12} {where}; the ordinary task after it {ordinary}")
            if status == "failed":
                print(f"   {'':<12} its stored error: {detail.splitlines()[0]}")
    if not with_huey:
        print("   huey is not installed: its side is skipped")
    return found


def _title(system: System) -> str:
    return "TaskWorkers" if system == "taskworkers" else "huey"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=5_000, help="tasks of the throughput part")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the throughput part")
    parser.add_argument("--kill-tasks", type=int, default=20, help="tasks of the kill -9 part")
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--json", type=Path, help="write the figures and outcomes here")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.repeat, args.kill_tasks = 200, 1, 6
    huey = _huey()
    with_huey = huey is not None
    version = getattr(huey, "__version__", None)
    print(
        f"TaskWorkers beside huey {version}"
        if with_huey
        else "huey is not installed: TaskWorkers alone (pip install huey, or the bench extra)"
    )
    print(f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    figures: Figures = {}
    bench_throughput(args.tasks, args.repeat, with_huey, figures)
    kills = bench_kill(args.kill_tasks, with_huey, figures)
    unimportable = bench_unimportable(with_huey, figures)
    report = {
        "huey": version,
        "figures": figures,
        "kill": kills,
        "worker processes": STARTED,
        "unimportable": {
            system: {key: value for key, value in seen.items() if key != "worker log"}
            for system, seen in unimportable.items()
        },
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if "PIPELINE_BENCH_JSON" in os.environ:
        Path(os.environ["PIPELINE_BENCH_JSON"]).write_text(json.dumps(figures), encoding="utf-8")
    return 0


if __name__ == "__main__":
    # Run as the module the worker processes import, so that both sides name the task
    # functions alike (bench_tasks.add, not __main__.add).
    sys.path.insert(0, str(HERE))
    raise SystemExit(importlib.import_module(MODULE).main())
