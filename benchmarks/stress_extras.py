"""Run random fault scenarios over the extras; report hangs, leaks, lost, duplicated, wrong.

The extras' counterpart of `stress_faults.py`. Each scenario is drawn from its seed and
index (`--replay SEED:INDEX` runs one again) and is one of these kinds, in a fixed
rotation so that any 40 scenarios in a row hold every kind (`SCHEDULE`):

- chain: 1 to 4 stages mixing thread stages, `ExecutorStage` on a `ThreadPoolExecutor`,
  asyncio stages (`pipeline.aio`) and, now and then, a `ProcessStage`;
- aio: a chain around asyncio stages, whose coroutines block their loop, never finish
  (paired with a stop that must end them), or whose `open()`/`close()` fail;
- process: a chain around a `ProcessStage` (fork, forkserver or spawn), whose worker
  processes are killed, die while starting, raise unpicklable exceptions, get an item
  that does not pickle, or are forked while another thread writes to a slow pipe;
- graph: a broadcast into branches rejoined by a `SequenceJoin`, or a partition
  rejoined by an `OrderedMerge`; sometimes two pipelines built from one graph run at once;
- durable: `run_resumable` from a `DurableQueue` into a sink in the same file, in
  another file, or a function, with stage faults, SIGINT and `close()` mid-run, and the
  file locked or corrupted between runs; durable-kill: the consumer is a process that
  is SIGKILLed again and again while it holds a batch, then the run is resumed;
- shared-queue: one `DurableQueue` used by hundreds of short-lived threads, then every
  method called after `close()`;
- tasks: `TaskWorkers` with a lease shorter than one task;
- dask: a `DaskStage` on a loopback `LocalCluster` (processes=False; one per worker
  process of the fuzzer, reused), a minority because each task costs milliseconds.

Faults injected into user code: exceptions, `BaseException`s, `SystemExit` and
`KeyboardInterrupt`, exceptions whose `__str__` raises and exceptions that do not
pickle. Sources are lists, generators, iterators with a `close()`, and async
generators (through `iterate_async`), which may fail; each run is consumed by `run`,
`stream`, a `break`, `close()` from another thread or from inside a stage at a random
moment, or a real SIGINT at a random moment: to the main thread, to the whole process
group as a terminal's Ctrl-C does (worker processes still starting get it too), or to
the worker processes alone.

What is expected of each scenario is computed apart, by a plain loop over the same
functions and the same fault table, and each run is checked against it:

- hangs: each scenario runs in a worker process of the fuzzer, which is killed (its
  whole process group) and replaced when a scenario runs past `--bound` seconds; its
  threads' stacks are dumped first (faulthandler) and shown with the failure;
- leaked threads: a thread of the scenario still alive once its run has returned;
- leaked processes: a descendant of the worker process (by pid, the fork server and
  resource tracker aside) still alive after the scenario; it is then killed;
- leaked files: file descriptors still open after the scenario (gc run first), or,
  for the shared queue, descriptors that grow with the threads that used it;
- lost: an expected output that is missing (from a run that completed, before a
  failure the run reports at its position, or from the sink of a resumed run);
- duplicated: an output delivered or stored twice;
- wrong: an output that differs from the plain loop's, an error of the wrong kind, a
  source not closed exactly once (in the thread that iterated it) by the time the run
  returned, stage work still running or starting after the run returned, a thread of
  the run that died of an exception, an error that is not the package's for a locked
  or damaged file.

    python benchmarks/stress_extras.py --scenarios 1000 --seed 1
    python benchmarks/stress_extras.py --quick          # what `make check` runs
    python benchmarks/stress_extras.py --replay 1:17    # one scenario again, in full
    python benchmarks/stress_extras.py --only aio process --scenarios 200

Exit status 0 when every count is zero and every scenario ran (`--time-limit` may
leave some unrun). Without Dask installed (3.13t), the Dask scenarios run as chains.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import functools
import gc
import importlib.util
import itertools
import json
import logging
import multiprocessing
import os
import random
import re
import select
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any, Final

from pipeline import Pipeline, PipelineClosed, PipelineStage, StageError
from pipeline.aio import AsyncFunctionStage, AsyncStage, iterate_async
from pipeline.errors import PipelineError, ShutDown, describe
from pipeline.executors import ExecutorStage, NotPicklable, ProcessStage, RemoteError
from pipeline.graph import Graph, OrderedMerge, Partition, SequenceJoin
from pipeline.queues.durable import DurableQueue
from pipeline.queues.errors import NotAQueueFile
from pipeline.queues.resumable import run_resumable
from pipeline.queues.tasks import TaskQueue, TaskWorkers
from pipeline.stages import FunctionStage

HERE = Path(__file__).resolve().parent
COUNTS: Final = (
    "hangs",
    "leaked threads",
    "leaked processes",
    "leaked files",
    "lost",
    "duplicated",
    "wrong",
)
UNIT: Final = 1_000_000  # a value is index + UNIT * (what the stages added): index = value % UNIT
QUICK: Final = {"scenarios": 120, "seed": 0, "bound": 8.0}

# The rotation of kinds: scenario i is of kind SCHEDULE[i % len(SCHEDULE)].
WEIGHTS: Final = {
    "chain": 11,
    "aio": 7,
    "process": 6,
    "graph": 7,
    "durable": 4,
    "durable-kill": 1,
    "shared-queue": 1,
    "tasks": 1,
    "dask": 2,
}
SCHEDULE: Final = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]
random.Random(0).shuffle(SCHEDULE)


# Faults: what user code raises or does.


class Boom(Exception):
    """An injected fault."""


class UnprintableBoom(Exception):
    """An injected fault whose `__str__` and `__repr__` raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


class UnpicklableBoom(Exception):
    """An injected fault that cannot be pickled (it holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class BaseBoom(BaseException):
    """An injected fault that is not an `Exception`."""


class Unpicklable:
    """An output that cannot be pickled: what a stage before a process or Dask stage emits."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.lock = threading.Lock()


# The fault kinds each stage kind may inject, and the exception types each may end in.
COMMON_FAULTS: Final = ("error", "unprintable", "unpicklable", "base", "systemexit", "keyboard")
CAUSES: Final[dict[str, tuple[type[BaseException], ...]]] = {
    "error": (Boom,),
    "unprintable": (UnprintableBoom, RemoteError),
    "unpicklable": (UnpicklableBoom, RemoteError),
    "base": (BaseBoom, RemoteError),
    "systemexit": (SystemExit, RemoteError),
    "keyboard": (KeyboardInterrupt, RemoteError),
    "kill": (BrokenExecutor,),
    "unpicklable-item": (NotPicklable,),
    "setup-die": (BrokenExecutor, PipelineError),
    "source": (Boom,),
}


def raise_fault(kind: str, where: str) -> None:
    if kind == "error":
        raise Boom(where)
    if kind == "unprintable":
        raise UnprintableBoom
    if kind == "unpicklable":
        raise UnpicklableBoom(where)
    if kind == "base":
        raise BaseBoom(where)
    if kind == "systemexit":
        raise SystemExit(3)
    if kind == "keyboard":
        raise KeyboardInterrupt(where)
    raise AssertionError(f"no such fault {kind}")


# What runs in the threads of this process: a count of calls under way, per scenario.


class Calls:
    """Calls of stage work started and running in this process (not in worker processes)."""

    lock = threading.Lock()
    running = 0
    started = 0

    @classmethod
    def enter(cls) -> None:
        with cls.lock:
            cls.running += 1
            cls.started += 1

    @classmethod
    def leave(cls) -> None:
        with cls.lock:
            cls.running -= 1


class Step:
    """Add `UNIT * add` to a value; raise or misbehave on the indexes in `faults`.

    Picklable: it travels to worker processes and Dask. `reference` is the plain loop's
    view of the same function: the output, or the fault.
    """

    def __init__(self, name: str, add: int, faults: dict[int, str], home: int) -> None:
        self.name = name
        self.add = add
        self.faults = faults
        self.home = home  # the pid of the fuzzer's worker process

    def reference(self, value: int) -> int | str:
        fault = self.faults.get(value % UNIT)
        if fault is not None and fault not in ("block", "slow"):
            return fault
        return value + UNIT * self.add

    def __call__(self, value: int) -> Any:
        local = os.getpid() == self.home
        if local:
            Calls.enter()
        try:
            fault = self.faults.get(value % UNIT)
            if fault == "kill" and not local:
                os.kill(os.getpid(), signal.SIGKILL)
            if fault == "unpicklable-item":
                return Unpicklable(value)
            if fault == "slow":
                time.sleep(0.01)
            elif fault is not None and fault not in ("block", "never", "kill"):
                raise_fault(fault, f"{self.name} failed on {value % UNIT}")
            return value + UNIT * self.add
        finally:
            if local:
                Calls.leave()


class FlakyStep(Step):
    """A `Step` whose faults fire on an index's first call only (durable runs retry)."""

    def __init__(self, name: str, add: int, faults: dict[int, str], home: int) -> None:
        super().__init__(name, add, faults, home)
        self.fired: set[int] = set()
        self.lock = threading.Lock()

    def reference(self, value: int) -> int | str:
        return value + UNIT * self.add

    def __call__(self, value: int) -> Any:
        index = value % UNIT
        with self.lock:
            first = index not in self.fired
            self.fired.add(index)
        if first and index in self.faults:
            raise_fault(self.faults[index], f"{self.name} failed on {index}")
        return value + UNIT * self.add


class ClosingStep(Step):
    """A thread-stage `Step` that closes its own pipeline when it meets `close_at`."""

    pipeline: Pipeline[Any, Any] | None = None
    close_at: int | None = None

    def __call__(self, value: int) -> Any:
        if value % UNIT == self.close_at and self.pipeline is not None:
            self.pipeline.close()
        return super().__call__(value)


class AsyncStep:
    """The coroutine of an asyncio stage around a `Step`: it may block its loop or hang."""

    def __init__(self, step: Step) -> None:
        self.step = step

    async def __call__(self, value: int) -> Any:
        fault = self.step.faults.get(value % UNIT)
        if fault == "block":
            time.sleep(0.05)  # blocks the stage's event loop
        elif fault == "never":
            Calls.enter()
            try:
                await asyncio.Event().wait()  # never set: only a stop ends it
            finally:
                Calls.leave()
        else:
            await asyncio.sleep(0)
        return self.step(value)


class FaultyAsyncStage(AsyncStage[int, Any]):
    """An asyncio stage whose `open()` or `close()` may fail."""

    def __init__(self, step: Step, *, fail_in: str, fault: str, concurrency: int) -> None:
        super().__init__(step.name, concurrency=concurrency)
        self.call = AsyncStep(step)
        self.fail_in = fail_in
        self.fault = fault

    async def open(self) -> None:
        if self.fail_in == "open":
            raise_fault(self.fault, f"{self.name}.open() failed")

    async def close(self) -> None:
        if self.fail_in == "close":
            raise_fault(self.fault, f"{self.name}.close() failed")

    async def process_async(self, item: int) -> Any:
        return await self.call(item)


class SetupDeath(FunctionStage[int, Any]):
    """A stage whose `setup()` ends the process it runs in, in one of its worker processes."""

    def __init__(self, step: Step, marker: str, *, workers: int) -> None:
        super().__init__(step, name=step.name, workers=workers)
        self.marker = marker

    def setup(self) -> None:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os._exit(1)  # the first process to start dies, as on a Ctrl-C during start-up


class Noise:
    """A thread writing to a slow pipe while processes are forked; their stage writes too."""

    stream: Any = None

    def __init__(self) -> None:
        read, write = os.pipe()
        self.read = read
        Noise.stream = os.fdopen(write, "w", buffering=1024)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._write, name="stress-noise-writer"),
            threading.Thread(target=self._drain, name="stress-noise-reader"),
        ]
        for thread in self.threads:
            thread.start()

    def _write(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                Noise.stream.write("x" * 3000 + "\n")

    def _drain(self) -> None:
        while not self.stop.wait(0.002):
            with contextlib.suppress(OSError):
                os.read(self.read, 512)
        with contextlib.suppress(OSError):
            os.set_blocking(self.read, False)
            while os.read(self.read, 65536):
                pass

    def close(self) -> None:
        self.stop.set()
        self.threads[1].join()
        os.close(self.read)  # the writer's next write fails and it ends
        self.threads[0].join(5)
        with contextlib.suppress(OSError, ValueError):
            Noise.stream.close()
        Noise.stream = None


class NoisyStep(Step):
    """A `Step` that writes a line to `Noise.stream` in its worker process, if it has one."""

    def __call__(self, value: int) -> Any:
        if Noise.stream is not None and os.getpid() != self.home:
            Noise.stream.write(f"item {value % UNIT}\n")
            Noise.stream.flush()
        return super().__call__(value)


def merge_answers(*answers: int) -> int:
    """A sequence join's combine: one value per item, from every branch's answer."""
    return answers[0] % UNIT + UNIT * sum(answer // UNIT for answer in answers)


class Route:
    """A partition's route: the branch of a value, by its index."""

    def __init__(self, heads: list[str]) -> None:
        self.heads = heads

    def __call__(self, value: int) -> str:
        return self.heads[(value % UNIT) % len(self.heads)]


def task_sleep(index: int, seconds: float) -> int:
    """A task of the task-queue scenarios."""
    time.sleep(seconds)
    return index * 2


# Sources: each records who iterated it and who closed it.


@dataclass
class SourceLog:
    kind: str
    iterated_by: int | None = None
    closed: int = 0
    closed_by: int | None = None
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_next: int = 0

    def close_once(self) -> None:
        with self.lock:
            self.closed += 1
            self.closed_by = threading.get_ident()


def generator_source(items: int, fails_at: int | None, log: SourceLog) -> Iterator[int]:
    log.iterated_by = threading.get_ident()
    try:
        for index in range(items):
            if index == fails_at:
                raise Boom(f"source failed at {index}")
            yield index
    finally:
        log.close_once()


def after_barrier(source: Any, barrier: threading.Barrier) -> Iterator[int]:
    """Yield `source` once another run's source has started too (or a moment has passed)."""
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(2.0)
    yield from source


async def async_source(items: int, fails_at: int | None, log: SourceLog) -> AsyncIterator[int]:
    log.iterated_by = threading.get_ident()
    try:
        for index in range(items):
            if index == fails_at:
                raise Boom(f"source failed at {index}")
            await asyncio.sleep(0)
            yield index
    finally:
        log.close_once()


class ClosableSource:
    """An iterator with a `close()`: a cursor, a file reader."""

    def __init__(self, items: int, fails_at: int | None, log: SourceLog) -> None:
        self.items = items
        self.fails_at = fails_at
        self.log = log
        self.next_index = 0
        self.finished = False

    def __iter__(self) -> ClosableSource:
        return self

    def __next__(self) -> int:
        log = self.log
        with log.lock:
            if self.finished:
                raise StopIteration
            log.iterated_by = log.iterated_by or threading.get_ident()
            log.in_next += 1
        try:
            index = self.next_index
            if index >= self.items:
                self._finish()
                raise StopIteration
            if index == self.fails_at:
                self._finish()
                raise Boom(f"source failed at {index}")
            self.next_index += 1
            return index
        finally:
            with log.lock:
                log.in_next -= 1

    def close(self) -> None:
        with self.log.lock:
            if self.log.in_next and threading.get_ident() != self.log.iterated_by:
                self.log.problems.append("close() called while next() ran in another thread")
        if not self.finished:
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        self.log.close_once()


def make_source(kind: str, items: int, fails_at: int | None) -> tuple[Any, SourceLog]:
    log = SourceLog(kind)
    if kind == "list":
        if fails_at is None:
            return list(range(items)), log
        return generator_source(items, fails_at, SourceLog("generator")), log
    if kind == "generator":
        return generator_source(items, fails_at, log), log
    if kind == "closable":
        return ClosableSource(items, fails_at, log), log
    return iterate_async(async_source(items, fails_at, log)), log


def check_source(log: SourceLog | None, problems: list[tuple[str, str]]) -> None:
    """A source must be closed exactly once, in the thread that iterated it, by now."""
    if log is None or log.kind == "list":
        return
    for problem in log.problems:
        problems.append(("wrong", f"{log.kind} source: {problem}"))
    if log.iterated_by is None and log.kind != "closable":
        return  # a generator never started has no code to run on close
    if log.closed != 1:
        problems.append(
            ("wrong", f"{log.kind} source closed {log.closed} times by the time the run returned")
        )
    elif log.iterated_by is not None and log.closed_by != log.iterated_by:
        problems.append(
            (
                "wrong",
                f"{log.kind} source closed in {thread_name(log.closed_by)}, "
                f"not in {thread_name(log.iterated_by)}, which iterated it",
            )
        )


def thread_name(ident: int | None) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return f"thread {thread.name!r}"
    return "a thread now ended" if ident else "no thread"


# The environment of a worker process of the fuzzer.


class Interrupts:
    """Real SIGINTs for the scenarios that ask for one, ignored between scenarios."""

    def __init__(self) -> None:
        self.armed = False
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.armed:
            raise KeyboardInterrupt

    def press_later(
        self, seconds: float, done: threading.Event, *, to: str = "main"
    ) -> threading.Thread:
        """Send SIGINT to the main thread after `seconds`, unless `done` is set first.

        `to` "group": to the whole process group, as a terminal's Ctrl-C does, so worker
        processes still starting get it too; "children": to this process's descendants
        only (a Ctrl-C meant for a child, or a child's start cut short).
        """
        main = threading.main_thread().ident or 0
        started = threading.Event()

        def press() -> None:
            if started.wait() and not done.wait(seconds):
                if to == "group":
                    os.killpg(os.getpgrp(), signal.SIGINT)
                elif to == "children":
                    for pid in descendants(os.getpid()):
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGINT)
                else:
                    signal.pthread_kill(main, signal.SIGINT)

        thread = threading.Thread(target=press, name="stress-ctrl-c")
        thread.start()
        started.set()
        return thread


class Env:
    """What a worker process keeps between scenarios: its folder, SIGINTs, a Dask client."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.interrupts = Interrupts()
        self.pid = os.getpid()
        self.thread_errors: list[str] = []
        self._dask: contextlib.ExitStack | None = None
        self._client: Any = None
        self.infrastructure: set[threading.Thread] = set()
        self.announce: Callable[[str], None] | None = None
        self.dask_files: set[int] = set()  # opened by the cluster as it started
        self.description = ""  # of the scenario drawn last
        threading.excepthook = self._excepthook

    def _excepthook(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        error = args.exc_value if args.exc_value is not None else args.exc_type()
        self.thread_errors.append(f"thread {name!r} died: {describe(error)}")

    def has_dask(self) -> bool:
        return self._client is not None

    def dask_client(self) -> Any:
        if self._client is None:
            from pipeline.executors.dask_cluster import local_cluster

            before = set(threading.enumerate())
            files = open_files()
            self._dask = contextlib.ExitStack()
            self._client = self._dask.enter_context(
                local_cluster(1, threads_per_worker=2, processes=False)
            )
            self.infrastructure |= set(threading.enumerate()) - before
            self.dask_files = {fd for fd, what in open_files().items() if files.get(fd) != what}
        return self._client

    def result(self, description: str) -> Result:
        """Return the result of the scenario drawn, announced before it runs (for hangs)."""
        self.description = description
        if self.announce is not None:
            self.announce(description)
        return Result(description)

    def close(self) -> None:
        if self._dask is not None:
            self._dask.close()


# Stages, chains and what a plain loop expects of them.


@dataclass
class Link:
    """One stage of a chain: the stage, its step, its kind, and faults outside the step."""

    stage: PipelineStage[Any, Any]
    step: Step
    kind: str  # thread, executor, aio, process, dask
    stage_fault: str | None = None  # "open:<fault>", "close:<fault>", "setup-die"
    describe: str = ""


@dataclass
class Expected:
    """The plain loop's answer: an output or the failing (stage, fault) per index."""

    outputs: dict[int, int] = field(default_factory=dict)  # index -> value
    failures: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> stage, fault
    stalls: set[int] = field(default_factory=set)
    run_failures: list[tuple[str, str]] = field(default_factory=list)  # no item: setup, ...
    also: set[tuple[str, str]] = field(default_factory=set)  # more failures (other branches)
    allowed: set[tuple[str, str]] = field(default_factory=set)  # may fail so, need not
    order: list[int] = field(default_factory=list)  # the indexes of outputs, in input order


def run_chain(steps: list[Step], value: int) -> int | str | tuple[str, str]:
    """Run one value through `steps`; return the output or the (stage, fault) it failed in."""
    for position, step in enumerate(steps):
        result = step.reference(value)
        if isinstance(result, str):
            if result == "unpicklable-item":
                return (steps[position + 1].name, "unpicklable-item")
            if result == "never":
                return "never"
            return (step.name, result)
        value = result
    return value


def stage_failures(links: list[Link]) -> list[tuple[str, str]]:
    """The (stage, fault) failures of stages that fail on no item: in open(), setup(), close()."""
    failures = []
    for link in links:
        if link.stage_fault:
            failures.append((link.step.name, link.stage_fault.split(":")[-1]))
    return failures


def expect_chain(links: list[Link], items: int, source_fails_at: int | None) -> Expected:
    expected = Expected()
    expected.run_failures.extend(stage_failures(links))
    steps = [link.step for link in links]
    for index in range(items if source_fails_at is None else min(items, source_fails_at)):
        outcome = run_chain(steps, index)
        if outcome == "never":
            expected.stalls.add(index)
        elif isinstance(outcome, tuple):
            expected.failures[index] = outcome
        else:
            assert isinstance(outcome, int)
            expected.outputs[index] = outcome
            expected.order.append(index)
    if source_fails_at is not None and source_fails_at < items:
        expected.failures[source_fails_at] = ("source", "source")
    return expected


class Builder:
    """Draws stages for one scenario, and owns what they need (executors, noise)."""

    def __init__(self, rng: random.Random, env: Env, scenario_folder: Path) -> None:
        self.rng = rng
        self.env = env
        self.folder = scenario_folder
        self.executors: list[ThreadPoolExecutor] = []
        self.noise: Noise | None = None
        self.count = 0

    def faults(
        self, items: int, kinds: list[str], weights: list[int] | None = None
    ) -> dict[int, str]:
        rng = self.rng
        if not items or not kinds:
            return {}
        count = rng.choice([0, 0, 0, 1, 1, 2, 4])
        return {rng.randrange(items): rng.choices(kinds, weights)[0] for _ in range(count)}

    def link(self, kind: str, items: int, *, faults: list[str] | None = None) -> Link:
        rng = self.rng
        self.count += 1
        name = f"{kind}{self.count}"
        allowed = list(COMMON_FAULTS) if faults is None else faults
        fault_table = self.faults(items, allowed)
        if kind == "thread":
            step = Step(name, rng.randint(1, 9), fault_table, self.env.pid)
            workers = rng.randint(1, 4)
            stage: PipelineStage[Any, Any] = FunctionStage(step, name=name, workers=workers)
            return Link(stage, step, kind, describe=f"{name}(threads={workers}")
        if kind == "executor":
            step = Step(name, rng.randint(1, 9), fault_table, self.env.pid)
            pool = ThreadPoolExecutor(rng.randint(1, 3), thread_name_prefix=f"stress-{name}")
            self.executors.append(pool)
            inflight = rng.randint(1, 4)
            stage = ExecutorStage(step, pool, max_inflight=inflight, name=name)
            return Link(stage, step, kind, describe=f"{name}(inflight={inflight}")
        if kind == "aio":
            step = Step(name, rng.randint(1, 9), fault_table, self.env.pid)
            concurrency = rng.choice([1, 2, 8])
            stage = AsyncFunctionStage(
                AsyncStep(step), name=name, concurrency=concurrency, workers=rng.randint(1, 4)
            )
            return Link(stage, step, kind, describe=f"{name}(concurrency={concurrency}")
        if kind == "dask":
            from pipeline.executors.dask_cluster import DaskStage

            step = Step(name, rng.randint(1, 9), fault_table, self.env.pid)
            inflight = rng.randint(1, 4)
            latency = rng.choice([None, 0.05])
            stage = DaskStage(
                step,
                self.env.dask_client(),
                max_inflight=inflight,
                name=name,
                latency_target=latency,
            )
            return Link(stage, step, kind, describe=f"{name}(inflight={inflight}")
        assert kind == "process"
        return self.process_link(name, items, fault_table)

    def process_link(self, name: str, items: int, faults: dict[int, str]) -> Link:
        rng = self.rng
        method = rng.choices([None, "forkserver", "spawn"], [6, 3, 1])[0]
        processes = rng.randint(1, 2)
        variant = rng.choices(["plain", "setup-die", "noisy"], [8, 1, 1])[0]
        if method == "spawn" or processes == 1:
            variant = "plain" if variant == "setup-die" and processes == 1 else variant
        step_type = NoisyStep if variant == "noisy" else Step
        step = step_type(name, rng.randint(1, 9), faults, self.env.pid)
        inner: PipelineStage[Any, Any]
        if variant == "setup-die":
            inner = SetupDeath(step, str(self.folder / f"{name}.started"), workers=processes)
        else:
            inner = FunctionStage(step, name=name, workers=processes)
        if variant == "noisy":
            method = None
            if self.noise is None:
                self.noise = Noise()
        stage = ProcessStage(inner, start_method=method, max_inflight=rng.randint(1, 4))
        link = Link(stage, step, "process", describe=f"{name}(processes={processes}, {method}")
        if variant == "setup-die":
            link.stage_fault = "setup-die"
            link.describe += ", a process dies in setup"
        if variant == "noisy":
            link.describe += ", forked beside a thread writing to a slow pipe"
        return link

    def close(self) -> None:
        for pool in self.executors:
            pool.shutdown(wait=True, cancel_futures=True)  # no executor task is endless
        if self.noise is not None:
            self.noise.close()


def finish_description(link: Link) -> str:
    faults = Counter(kind for kind in link.step.faults.values() if kind != "slow")
    shown = ", ".join(f"{count} {kind}" for kind, count in sorted(faults.items()))
    extra = f", faults: {shown}" if shown else ""
    if link.stage_fault and link.stage_fault.startswith(("open:", "close:")):
        extra += f", {link.stage_fault.replace(':', '() raises ')}"
    return link.describe + extra + ")"


# Consuming a run.


@dataclass
class Outcome:
    outputs: list[Any]
    error: BaseException | None
    stopped: bool  # the consumer stopped it (break, close, SIGINT)
    running_after: int = 0  # calls of stage work still running when the run returned
    started_at_return: int = 0
    streamed: bool = False  # outputs came through stream(), so those before a failure count


CONSUMERS: Final = ("run", "stream", "break", "close-anytime", "close-inside", "interrupt")


def consume(
    pipeline: Pipeline[Any, Any],
    source: Any,
    consumer: str,
    env: Env,
    *,
    stop_after: int,
    delay: float,
) -> Outcome:
    """Run `pipeline` over `source` the way `consumer` says; return what came out."""
    outputs: list[Any] = []
    done = threading.Event()
    helper: threading.Thread | None = None
    stopped = consumer in ("close-anytime", "close-inside", "interrupt", "interrupt-group")
    if consumer == "interrupt-children":  # the run goes on, or fails with a broken pool
        consumer, to = "run", "children"
    else:
        to = "group" if consumer == "interrupt-group" else "main"
    error: BaseException | None = None
    with Calls.lock:
        running_before = Calls.running
    try:
        if to == "children":
            helper = env.interrupts.press_later(delay, done, to=to)
        elif consumer.startswith("interrupt"):
            env.interrupts.armed = True
            helper = env.interrupts.press_later(delay, done, to=to)
        elif consumer == "close-anytime":

            def close_later() -> None:
                if done.wait(delay):
                    return
                # close() stops the run in progress; a run that has not started yet is
                # not stopped (and a stage that never ends would then hold it), so the
                # closer waits for the run to start, bounded by the run's end.
                while not pipeline.stats().running and not done.wait(0.001):
                    pass
                pipeline.close()

            helper = threading.Thread(target=close_later, name="stress-closer")
            helper.start()
        if consumer in ("run", "close-anytime", "close-inside", "interrupt", "interrupt-group"):
            try:
                outputs = pipeline.run(source)
            finally:
                env.interrupts.armed = False  # first, before any other call
        else:
            stream = pipeline.stream(source)
            try:
                for output in stream:
                    outputs.append(output)
                    if consumer == "break" and len(outputs) > stop_after:
                        stopped = True
                        break
            finally:
                stream.close()
    except BaseException as exc:  # noqa: BLE001 - checked by check_outcome()
        env.interrupts.armed = False
        error = exc
    finally:
        env.interrupts.armed = False
        done.set()
    with Calls.lock:
        running, started = Calls.running, Calls.started
    if helper is not None:
        helper.join()
    streamed = consumer in ("stream", "break")
    return Outcome(outputs, error, stopped, running - running_before, started, streamed)


def check_outcome(
    expected: Expected,
    outcome: Outcome,
    *,
    ordered: bool,
    at_position: bool,
    stage_names: set[str],
) -> list[tuple[str, str]]:
    """Compare a run with the plain loop's answer; return (count, detail) per problem."""
    problems: list[tuple[str, str]] = []
    indexes: list[int] = []
    for output in outcome.outputs:
        if not isinstance(output, int):
            problems.append(("wrong", f"an output of type {type(output).__name__}: {output!r}"))
            continue
        index = output % UNIT
        indexes.append(index)
        if expected.outputs.get(index) != output:
            want = expected.outputs.get(index, expected.failures.get(index, "no output"))
            problems.append(("wrong", f"output {output} for item {index}, expected {want}"))
    duplicates = sorted(index for index, count in Counter(indexes).items() if count > 1)
    if duplicates:
        problems.append(("duplicated", f"items delivered twice: {duplicates[:10]}"))
    if ordered and indexes != sorted(indexes):
        problems.append(("wrong", f"outputs out of input order: {indexes[:20]}"))
    if outcome.running_after:
        problems.append(
            ("wrong", f"{outcome.running_after} calls of stage work still running after return")
        )
    error = outcome.error
    failures = {*expected.failures.values(), *expected.run_failures, *expected.also}
    possible = failures | expected.allowed
    if error is None:
        if outcome.stopped:
            return problems
        if failures:
            problems.append(("wrong", f"the run completed, but the plain loop fails: {failures}"))
        missing = sorted(set(expected.outputs) - set(indexes))
        if missing and not expected.stalls:
            problems.append(("lost", f"{len(missing)} outputs missing, first {missing[:10]}"))
        return problems
    if isinstance(error, PipelineClosed):
        if not outcome.stopped:
            problems.append(("wrong", f"PipelineClosed without a close(): {error}"))
        return problems
    if isinstance(error, KeyboardInterrupt) and not isinstance(error, StageError):
        keyboard_faults = any(fault == "keyboard" for _, fault in failures)
        if not outcome.stopped and not keyboard_faults:
            problems.append(("wrong", "KeyboardInterrupt without a SIGINT or a fault raising it"))
        return problems
    if not isinstance(error, StageError):
        where = "".join(traceback.format_exception(error)[-8:])
        problems.append(("wrong", f"unexpected {type(error).__name__}: {describe(error)}\n{where}"))
        return problems
    cause = error.__cause__
    allowed = [fault for stage, fault in possible if stage == error.stage]
    if not allowed:
        detail = f"{error} (cause {type(cause).__name__}); the plain loop fails with {failures}"
        problems.append(("wrong", f"unexpected error: {detail}"))
        return problems
    causes = tuple(kind for fault in allowed for kind in CAUSES[fault])
    if not isinstance(cause, causes):
        problems.append(
            (
                "wrong",
                f"{error.stage} failed with cause {type(cause).__name__}: "
                f"{describe(cause) if cause else None}, expected one of {allowed}",
            )
        )
        return problems
    if (
        at_position
        and outcome.streamed
        and not outcome.stopped
        and error.has_item
        and isinstance(error.item, int)
    ):
        failed_at = error.item % UNIT
        before = [index for index in expected.order if index < failed_at]
        missing = sorted(set(before) - set(indexes))
        if missing and not expected.stalls and not expected.run_failures:
            problems.append(
                ("lost", f"{len(missing)} outputs before the failing item {failed_at} missing")
            )
    return problems


def draw_consumer(rng: random.Random, never: bool) -> str:
    if never:
        return rng.choice(["close-anytime", "interrupt"])
    return rng.choices(CONSUMERS, [6, 3, 3, 2, 1, 2])[0]


@dataclass
class Result:
    description: str
    problems: list[tuple[str, str]] = field(default_factory=list)


# The scenario kinds.


def fuzz_chain(rng: random.Random, env: Env, folder: Path, flavour: str) -> Result:
    items = rng.choice([0, 1, 3, 10, 20] if flavour == "dask" else [0, 1, 3, 10, 40, 100])
    builder = Builder(rng, env, folder)
    links: list[Link] = []
    length = rng.randint(1, 4)
    never = False
    for position in range(length):
        if flavour == "aio" and (position == 0 or rng.random() < 0.5):
            kind = "aio"
        elif flavour == "process" and position == length // 2:
            kind = "process"
        elif flavour == "dask" and position == length // 2:
            kind = "dask"
        else:
            kind = rng.choices(["thread", "executor", "aio", "process"], [6, 3, 3, 1])[0]
        faults: list[str] = list(COMMON_FAULTS)
        if kind == "aio":
            faults += ["block", "never"] if rng.random() < 0.3 else ["block"]
        if kind == "process":
            faults += ["kill"]
        if kind in ("process", "dask"):
            faults = [fault for fault in faults if fault != "keyboard" or kind == "process"]
        link = builder.link(kind, items, faults=faults)
        if kind == "aio" and flavour == "aio" and rng.random() < 0.25:
            fail_in = rng.choice(["open", "close"])
            fault = rng.choice(COMMON_FAULTS)
            step = link.step
            link.stage = FaultyAsyncStage(
                step, fail_in=fail_in, fault=fault, concurrency=rng.choice([1, 4])
            )
            link.stage_fault = f"{fail_in}:{fault}"
        if kind == "dask" and items and rng.random() < 0.5:
            for item in range(items):  # slow work, so that a stop meets calls in flight
                link.step.faults.setdefault(item, "slow")
            link.describe += ", 10 ms per item"
        never = never or "never" in link.step.faults.values()
        links.append(link)
    # An item that does not pickle, made just before a process or Dask stage.
    for before, after in itertools.pairwise(links):
        local = before.kind in ("thread", "executor", "aio")  # a process's output is its own
        if local and after.kind in ("process", "dask") and items and rng.random() < 0.3:
            before.step.faults[rng.randrange(items)] = "unpicklable-item"
    closing: ClosingStep | None = None
    consumer = draw_consumer(rng, never)
    if flavour == "dask" and rng.random() < 0.5:
        # A stop while Dask tasks are in flight; a break only if every item gives an output.
        consumer = rng.choice(["close-anytime", "interrupt", *([] if never else ["break"])])
    group_delay = rng.choice([0.0, 0.005, 0.02, 0.1])
    if flavour == "process" and not never and rng.random() < 0.3:
        # A terminal's Ctrl-C, or a SIGINT to the worker processes only, while they start.
        consumer = rng.choice(["interrupt-group", "interrupt-children"])
    if consumer == "close-inside":
        thread_links = [link for link in links if link.kind == "thread"]
        if thread_links and items:
            link = rng.choice(thread_links)
            closing = ClosingStep(link.step.name, link.step.add, link.step.faults, env.pid)
            closing.close_at = rng.randrange(items)
            link.step = closing
            assert isinstance(link.stage, FunctionStage)
            link.stage.function = closing
        else:
            consumer = "close-anytime"
    source_kind = rng.choice(["list", "generator", "closable", "async"])
    source_fails_at = rng.randrange(items + 1) if rng.random() < 0.1 else None
    ordered = rng.random() < 0.85
    fail_fast = rng.random() < 0.2
    pipeline = Pipeline(
        [link.stage for link in links],
        queue_size=rng.choice([1, 2, 16]),
        batch_size=rng.choice([1, 4, 64]),
        ordered=ordered,
        fail_fast=fail_fast,
    )
    if closing is not None:
        closing.pipeline = pipeline
    expected = expect_chain(links, items, source_fails_at)
    if consumer == "interrupt-children":  # a worker process may die of it: a broken pool
        expected.allowed |= {(link.step.name, "kill") for link in links if link.kind == "process"}
    stop_after = rng.randint(0, max(items - 1, 0))
    delay = rng.choice([0.0, 0.001, 0.01, 0.05])
    description = (
        f"{flavour}: items={items} source={source_kind}"
        + (f" failing at {source_fails_at}" if source_fails_at is not None else "")
        + f" ordered={ordered} fail_fast={fail_fast} consumer={consumer}"
        + (f" after {stop_after}" if consumer == "break" else "")
        + (f" delay={delay}" if consumer in ("close-anytime", "interrupt") else "")
        + (f" delay={group_delay}" if consumer.startswith("interrupt-") else "")
        + (f" close at {closing.close_at}" if closing is not None else "")
        + ": "
        + " >> ".join(finish_description(link) for link in links)
    )
    result = env.result(description)
    try:
        source, log = make_source(source_kind, items, source_fails_at)
        if consumer.startswith("interrupt-"):
            delay = group_delay
        outcome = consume(pipeline, source, consumer, env, stop_after=stop_after, delay=delay)
        check_source(log, result.problems)
        result.problems += check_outcome(
            expected,
            outcome,
            ordered=ordered,
            at_position=ordered and not fail_fast,
            stage_names={link.step.name for link in links},
        )
        if flavour == "dask":
            time.sleep(0.2)  # a stopped Dask stage must not start more work meanwhile
        with Calls.lock:
            started = Calls.started
        if started > outcome.started_at_return:
            result.problems.append(
                ("wrong", f"{started - outcome.started_at_return} calls started after return")
            )
    finally:
        pipeline.close()
        builder.close()
    return result


def fuzz_graph(rng: random.Random, env: Env, folder: Path) -> Result:
    items = rng.choice([0, 1, 5, 20, 60])
    builder = Builder(rng, env, folder)
    shape = rng.choice(["broadcast", "partition"])
    twice = rng.random() < 0.25
    kinds = ["thread"] if twice else ["thread", "thread", "executor", "aio"]
    if not twice and rng.random() < 0.1:
        kinds.append("process")
    fault_kinds: list[str] | None = (
        [] if twice else None
    )  # two runs at once: no fault, both must complete
    split = builder.link("thread", items, faults=fault_kinds)
    split.stage.name = split.step.name = "split"
    branches = [
        [
            builder.link(rng.choice(kinds), items, faults=fault_kinds)
            for _ in range(rng.randint(1, 2))
        ]
        for _ in range(rng.randint(2, 3))
    ]
    tail = builder.link("thread", items, faults=fault_kinds) if rng.random() < 0.5 else None
    graph = Graph()
    graph.add(split.stage, fan_out="broadcast")
    heads = [branch[0].step.name for branch in branches]
    route = Route(heads)
    if shape == "partition":
        graph = Graph()
        graph.add(split.stage, fan_out=Partition(route=route))
    for branch in branches:
        after = "split"
        for link in branch:
            graph.add(link.stage, after=after)
            after = link.step.name
    ends = [branch[-1].step.name for branch in branches]
    join: PipelineStage[Any, Any]
    join = (
        SequenceJoin(merge_answers, name="join") if shape == "broadcast" else OrderedMerge("join")
    )
    graph.add(join, after=ends)
    if tail is not None:
        graph.add(tail.stage, after="join")
    expected = Expected()
    every_link = [split, *(link for branch in branches for link in branch)]
    expected.run_failures.extend(stage_failures(every_link + ([tail] if tail else [])))
    for index in range(items):
        value = split.step.reference(index)
        failure: tuple[str, str] | None = None
        if isinstance(value, str):
            failure = ("split", value)
        else:
            chosen = branches if shape == "broadcast" else [branches[heads.index(route(value))]]
            answers: list[int] = []
            for branch in chosen:
                answer = run_chain([link.step for link in branch], value)
                if isinstance(answer, tuple):
                    expected.also.add(answer)
                    failure = failure or answer
                else:
                    assert isinstance(answer, int)
                    answers.append(answer)
            if failure is None:
                merged = merge_answers(*answers) if shape == "broadcast" else answers[0]
                final = merged if tail is None else run_chain([tail.step], merged)
                if isinstance(final, tuple):
                    failure = final
                else:
                    assert isinstance(final, int)
                    expected.outputs[index] = final
                    expected.order.append(index)
        if failure is not None:
            expected.failures[index] = failure
    ordered = rng.random() < 0.8
    consumer = rng.choices(
        ["run", "stream", "break", "close-anytime", "interrupt"], [6, 2, 2, 1, 1]
    )[0]
    if twice:
        consumer = "run"
    stop_after = rng.randint(0, max(items - 1, 0))
    delay = rng.choice([0.0, 0.001, 0.01])
    source_kind = rng.choice(["list", "generator", "closable", "async"])
    queue_size, batch_size = rng.choice([1, 4, 64]), rng.choice([1, 8, 64])
    description = (
        f"graph {shape}: items={items} source={source_kind} ordered={ordered} "
        f"consumer={consumer}"
        + (" (two pipelines built from the graph, run at once)" if twice else "")
        + f": split{finish_description(split)[len(split.describe) :]} -> "
        + " | ".join(" >> ".join(finish_description(link) for link in b) for b in branches)
        + f" -> {type(join).__name__}"
        + (f" >> {finish_description(tail)}" if tail else "")
    )
    result = env.result(description)
    names = {"split", "join", *(link.step.name for b in branches for link in b)}
    if tail is not None:
        names.add(tail.step.name)
    pipelines = [
        graph.build(ordered=ordered, queue_size=queue_size, batch_size=batch_size)
        for _ in range(2 if twice else 1)
    ]
    try:
        outcomes: list[Outcome] = [Outcome([], None, False)] * len(pipelines)
        logs: list[SourceLog | None] = []
        together = threading.Barrier(2)  # both runs have started before either reads on
        with Calls.lock:
            running_before = Calls.running
        if twice:
            second_source, second_log = make_source(source_kind, items, None)
            second_source = after_barrier(second_source, together)
            logs.append(second_log)

            def second() -> None:
                outcomes[1] = consume(
                    pipelines[1], second_source, "run", env, stop_after=0, delay=0
                )

            helper = threading.Thread(target=second, name="stress-second-graph")
            helper.start()
        source, log = make_source(source_kind, items, None)
        if twice:
            source = after_barrier(source, together)
        logs.append(log)
        outcomes[0] = consume(
            pipelines[0], source, consumer, env, stop_after=stop_after, delay=delay
        )
        if twice:
            helper.join()
            # Calls are counted per process: one run's return is checked once both have.
            with Calls.lock:
                still_running = Calls.running - running_before
            for outcome in outcomes:
                outcome.running_after = 0
            if still_running:
                result.problems.append(
                    ("wrong", f"{still_running} calls of stage work still running after return")
                )
        for each_log in logs:
            check_source(each_log, result.problems)
        for outcome in outcomes:
            result.problems += check_outcome(
                expected,
                outcome,
                ordered=ordered and shape == "partition",
                at_position=False,
                stage_names=names,
            )
    finally:
        for pipeline in pipelines:
            pipeline.close()
        builder.close()
    return result


def fuzz_durable(rng: random.Random, env: Env, folder: Path) -> Result:
    items = rng.choice([0, 2, 10, 40])
    sink_kind = rng.choice(["same-file", "other-file", "function"])
    between = rng.choices(["nothing", "lock", "lock-long", "corrupt"], [4, 2, 1, 1])[0]
    stopper = rng.choices(["none", "interrupt", "close"], [3, 1, 1])[0]
    delay = rng.choice([0.0, 0.002, 0.02])
    batch_size = rng.choice([1, 4, 16])
    steps: list[Step] = []
    stages: list[PipelineStage[Any, Any]] = []
    executors: list[ThreadPoolExecutor] = []
    drawn = []
    for number in range(rng.randint(1, 2)):
        name = f"d{number}"
        faults = {}
        if items and rng.random() < 0.5:
            faults = {rng.randrange(items): rng.choice(COMMON_FAULTS) for _ in range(2)}
        step = FlakyStep(name, rng.randint(1, 9), faults, env.pid)
        steps.append(step)
        kind = rng.choice(["thread", "aio", "executor"])
        if kind == "thread":
            stages.append(FunctionStage(step, name=name, workers=rng.randint(1, 3)))
        elif kind == "aio":
            stages.append(AsyncFunctionStage(AsyncStep(step), name=name, concurrency=4))
        else:
            pool = ThreadPoolExecutor(2, thread_name_prefix=f"stress-{name}")
            executors.append(pool)
            stages.append(ExecutorStage(step, pool, max_inflight=2, name=name))
        shown = ", ".join(sorted(faults.values())) or "none"
        drawn.append(f"{name}({kind}, faults on the first attempt: {shown})")
    path = folder / "queue.db"
    other = folder / "other.db"
    result = env.result(
        f"durable: items={items} sink={sink_kind} batch={batch_size} "
        f"first run stopped by {stopper} (delay {delay}), then {between} between runs: "
        + " >> ".join(drawn)
    )
    expected = {index: run_chain(steps, index) for index in range(items)}
    stored: list[Any] = []
    pipeline: Pipeline[Any, Any] = Pipeline(stages, queue_size=4)
    interrupted = False

    def open_queues(timeout: float = 5.0) -> tuple[DurableQueue[Any], Any]:
        source: DurableQueue[Any] = DurableQueue(path, "in", timeout=timeout)
        if sink_kind == "same-file":
            return source, DurableQueue(path, "out", timeout=timeout)
        if sink_kind == "other-file":
            return source, DurableQueue(other, "out", timeout=timeout)
        return source, stored.extend

    def close_queues(source: DurableQueue[Any], sink: Any) -> None:
        source.close()
        if isinstance(sink, DurableQueue):
            sink.close()

    def run_until_done(source: DurableQueue[Any], sink: Any, stop: str) -> bool:
        """Run again after each failure or stop; return whether a run completed."""
        nonlocal interrupted
        for attempt in range(8):
            done = threading.Event()
            helper: threading.Thread | None = None
            if stop == "interrupt" and attempt == 0:
                env.interrupts.armed = True
                helper = env.interrupts.press_later(delay, done)
            elif stop == "close" and attempt == 0:

                def close_later(done: threading.Event = done) -> None:
                    if not done.wait(delay):
                        pipeline.close()

                helper = threading.Thread(target=close_later, name="stress-closer")
                helper.start()
            try:
                try:
                    run_resumable(pipeline, source, sink, batch_size=batch_size)
                finally:
                    env.interrupts.armed = False  # first, before any other call
                return True
            except (PipelineClosed, KeyboardInterrupt):
                interrupted = True
            except StageError:
                pass
            finally:
                env.interrupts.armed = False
                done.set()
                if helper is not None:
                    helper.join()
        result.problems.append(("wrong", "run_resumable still failing after 8 runs"))
        return False

    half = items // 2
    try:
        source, sink = open_queues()
        source.put_many(list(range(half)))
        if not run_until_done(source, sink, stopper):
            close_queues(source, sink)
            return result
        close_queues(source, sink)
        if between == "corrupt":
            return durable_corrupt(rng, path, result, open_queues)
        if between.startswith("lock"):
            opened = durable_locked(between == "lock-long", path, result, open_queues)
            if opened is None:
                return result
            source, sink = opened
        else:
            source, sink = open_queues()
        source.put_many(list(range(half, items)))
        run_until_done(source, sink, "none")
        outputs = read_sink(sink, stored)
        dead = source.counts().dead
        close_queues(source, sink)
    finally:
        pipeline.close()
        for pool in executors:
            pool.shutdown(wait=True, cancel_futures=True)
    indexes = Counter(output % UNIT for output in outputs)
    missing = sorted(set(expected) - set(indexes))
    if missing:
        result.problems.append(
            ("lost", f"{len(missing)} of {items} outputs not in the sink ({dead} dead letters)")
        )
    twice = sorted(index for index, count in indexes.items() if count > 1)
    if twice and (sink_kind == "same-file" or not interrupted):
        result.problems.append(("duplicated", f"outputs stored twice: {twice[:10]}"))
    wrong = [output for output in outputs if expected.get(output % UNIT) != output]
    if wrong:
        result.problems.append(("wrong", f"outputs that differ from the plain loop: {wrong[:5]}"))
    return result


def read_sink(sink: Any, stored: list[Any]) -> list[Any]:
    if not isinstance(sink, DurableQueue):
        return list(stored)
    outputs: list[Any] = []
    while True:
        try:
            batch = sink.get_many(1000, block=False)
        except Empty:
            return outputs
        outputs.extend(leased.item for leased in batch)
        sink.ack_many(batch)


@functools.cache
def sqlite_waits_out_an_exclusive_lock() -> bool:
    """Whether a bare sqlite3 connection's busy timeout sees a lock released by another thread.

    The lock is the one `durable_locked` holds (`locking_mode = EXCLUSIVE` on a WAL file).
    Some interpreter builds (a source-built free-threaded 3.13.5 with Debian's SQLite
    3.40.1, seen) never see it released until the timeout ends, with no package code
    involved; there a short lock can only be expected to give the package's clear error.
    """
    with tempfile.TemporaryDirectory(prefix="stress-sqlite-probe-") as folder:
        return _sqlite_probe(Path(folder) / "probe.db")


def _sqlite_probe(path: Path) -> bool:
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE probe (x)")
    setup.close()
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("PRAGMA locking_mode = EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        locker.rollback()
        locker.close()

    unlocker = threading.Timer(0.05, release)
    unlocker.start()
    waiter = sqlite3.connect(path, timeout=1.0, isolation_level=None)
    try:
        waiter.execute("SELECT count(*) FROM probe").fetchall()
    except sqlite3.OperationalError:
        return False
    finally:
        unlocker.join()
        waiter.close()
    return True


def durable_locked(long: bool, path: Path, result: Result, open_queues: Callable[..., Any]) -> Any:
    """Hold the file locked by another connection while the queues open; None if they did not."""
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("PRAGMA locking_mode = EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release() -> None:
        released.wait(0.1)
        locker.rollback()
        locker.close()

    unlocker = None
    if not long:
        unlocker = threading.Thread(target=release, name="stress-unlocker")
        unlocker.start()
    try:
        opened = open_queues(timeout=0.5 if long else 5.0)
    except PipelineError as exc:
        text = str(exc)
        if not long and sqlite_waits_out_an_exclusive_lock():
            result.problems.append(
                ("wrong", f"locked 0.1 s, opening with timeout=5 failed: {text}")
            )
        elif isinstance(exc, NotAQueueFile) or "lock" not in text or str(path) not in text:
            result.problems.append(
                ("wrong", f"a locked file reported as {type(exc).__name__}: {text}")
            )
        return None
    except Exception as exc:  # noqa: BLE001 - any other error is the finding
        result.problems.append(
            ("wrong", f"a locked file gave {type(exc).__module__}.{type(exc).__name__}: {exc}")
        )
        return None
    finally:
        if unlocker is not None:
            unlocker.join()
        else:
            locker.rollback()
            locker.close()
    if long:
        result.problems.append(("wrong", "opened a file another connection held locked"))
    return opened


def durable_corrupt(
    rng: random.Random, path: Path, result: Result, open_queues: Callable[..., Any]
) -> Result:
    """Damage the closed file; every error met from then on must be the package's, naming it.

    A queue of filler rows first spreads the file over many pages, so that the damage
    is met by a get after the file opened, as well as by the open itself.
    """
    with DurableQueue[str](path, "filler") as filler:
        filler.put_many(["x" * 200] * rng.choice([50, 300]))
    pages = path.stat().st_size // 4096
    with path.open("r+b") as file:
        if rng.random() < 0.2 or pages < 3:
            offset, length = rng.randrange(16, 100), rng.choice([4, 16])  # the header
        else:
            offset, length = 4096 * rng.randrange(1, pages), 4096  # a whole page
        file.seek(offset)
        file.write(bytes(rng.randrange(256) for _ in range(length)))
    result.description += f" (damaged: {length} bytes at byte {offset} of {pages} pages)"
    try:
        source, sink = open_queues()
        try:
            with DurableQueue[str](path, "filler") as filler:
                for queue in (source, filler):
                    with contextlib.suppress(Empty):
                        while True:
                            queue.ack_many(queue.get_many(100, block=False))
        finally:
            source.close()
            if isinstance(sink, DurableQueue):
                sink.close()
    except PipelineError as exc:
        if str(path) not in str(exc) and path.name not in str(exc):
            result.problems.append(("wrong", f"a damaged file's error does not name it: {exc}"))
    except Exception as exc:  # noqa: BLE001 - any other error is the finding
        result.problems.append(
            ("wrong", f"a damaged file gave {type(exc).__module__}.{type(exc).__name__}: {exc}")
        )
    return result


KILLED_CONSUMER: Final = """
import sys, time
from pipeline import Pipeline
from pipeline.queues.durable import DurableQueue
from pipeline.queues.resumable import run_resumable
from pipeline.stages import FunctionStage

def step(value):
    print("leased", flush=True)
    time.sleep(30)
    return value

source = DurableQueue(sys.argv[1], "in", max_attempts=int(sys.argv[2]))
sink = DurableQueue(sys.argv[1], "out")
run_resumable(Pipeline(FunctionStage(step)), source, sink, batch_size=10)
"""


def fuzz_durable_kill(rng: random.Random, env: Env, folder: Path) -> Result:
    items = rng.choice([10, 20])
    attempts = rng.choice([2, 3])
    kills = attempts + 1
    path = folder / "queue.db"
    result = env.result(
        f"durable-kill: items={items}, max_attempts={attempts}, the consumer (another "
        f"process, same-file sink) SIGKILLed {kills} times while it holds a batch, then resumed"
    )
    with DurableQueue[int](path, "in", max_attempts=attempts) as source:
        source.put_many(list(range(items)))
    for kill in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_CONSUMER, str(path), str(attempts)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
        finally:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()
        if line.strip() != "leased":  # nothing left to lease: the batch was given up on
            result.description += f" (nothing to lease after {kill} kills)"
            break
    step = Step("resume", 0, {}, env.pid)
    with (
        DurableQueue[int](path, "in", max_attempts=attempts) as source,
        DurableQueue[int](path, "out") as sink,
    ):
        run_resumable(Pipeline(FunctionStage(step)), source, sink, batch_size=10)
        dead = source.counts().dead
        outputs = read_sink(sink, [])
    counts = Counter(outputs)
    missing = sorted(set(range(items)) - set(counts))
    if missing:
        result.problems.append(
            ("lost", f"{len(missing)} of {items} items never stored ({dead} moved to dead letters)")
        )
    twice = sorted(item for item, count in counts.items() if count > 1)
    if twice:
        result.problems.append(("duplicated", f"stored twice: {twice[:10]}"))
    return result


def open_files() -> dict[int, str]:
    """Return this process's open file descriptors and what each is."""
    found = {}
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{entry}")
            # A module or shared library that another thread is importing at that moment
            # (Dask's threads import lazily on 3.14) is the import system's, not the run's.
            if not re.search(r"\.(py|pyc|so(\.\d+)*)$", target):
                found[int(entry)] = target
    return found


def fuzz_shared_queue(rng: random.Random, env: Env, folder: Path) -> Result:
    threads = rng.choice([50, 150, 300])
    wave = rng.choice([1, 4, 8])
    per_thread = rng.randint(1, 3)
    result = env.result(
        f"shared-queue: {threads} short-lived threads ({wave} at a time) put {per_thread} "
        "items each into one DurableQueue, as many get and ack; then every method after close()"
    )
    before = len(open_files())
    queue: DurableQueue[int] = DurableQueue(folder / "shared.db")
    errors: list[str] = []
    got: list[int] = []
    got_lock = threading.Lock()

    def put(number: int) -> None:
        try:
            queue.put_many([number * 10 + k for k in range(per_thread)])
        except Exception as exc:  # noqa: BLE001 - counted as wrong below
            errors.append(f"put: {type(exc).__name__}: {exc}")

    def take() -> None:
        try:
            batch = queue.get_many(per_thread, block=False)
            queue.ack_many(batch)
            with got_lock:
                got.extend(leased.item for leased in batch)
        except Empty:
            pass
        except Exception as exc:  # noqa: BLE001 - counted as wrong below
            errors.append(f"get/ack: {type(exc).__name__}: {exc}")

    try:
        for target in (put, take, take):
            for start in range(0, threads, wave):
                group = [
                    threading.Thread(target=target, args=(n,) if target is put else ())
                    for n in range(start, min(start + wave, threads))
                ]
                for thread in group:
                    thread.start()
                for thread in group:
                    thread.join()
        while True:
            try:
                batch = queue.get_many(100, block=False)
            except Empty:
                break
            queue.ack_many(batch)
            got.extend(leased.item for leased in batch)
        gc.collect()
        grown = len(open_files()) - before
        if grown > 96:  # a bounded pool of connections (3 descriptors each) is flat
            result.problems.append(
                (
                    "leaked files",
                    f"{grown} file descriptors open after {threads} threads that used the "
                    "queue had ended",
                )
            )
    finally:
        queue.close()
    if errors:
        result.problems.append(("wrong", f"{len(errors)} calls failed, first: {errors[0]}"))
    expected = Counter(n * 10 + k for n in range(threads) for k in range(per_thread))
    seen = Counter(got)
    if expected - seen:
        result.problems.append(("lost", f"{sum((expected - seen).values())} items never got"))
    if any(count > 1 for count in seen.values()):
        result.problems.append(("duplicated", "items got twice"))
    leased = queue_after_close_checks(folder / "closed.db")
    result.problems += leased
    return result


def queue_after_close_checks(path: Path) -> list[tuple[str, str]]:
    """Every method of a closed queue raises ShutDown."""
    queue: DurableQueue[int] = DurableQueue(path)
    queue.put_many([1, 2, 3])
    batch = queue.get_many(3)
    queue.close()
    calls: dict[str, Callable[[], object]] = {
        "ack_many": lambda: queue.ack_many(batch[:1]),
        "ack": lambda: queue.ack(batch[1]),
        "nack": lambda: queue.nack(batch[2]),
        "release": lambda: queue.release(batch),
        "counts": queue.counts,
        "qsize": queue.qsize,
        "put": lambda: queue.put(4),
    }
    wrong = []
    for name, call in calls.items():
        try:
            call()
            wrong.append(f"{name} returned")
        except ShutDown:
            pass
        except Exception as exc:  # noqa: BLE001 - any other error is the finding
            wrong.append(f"{name}: {type(exc).__module__}.{type(exc).__name__}")
    if wrong:
        return [("wrong", "after close(), not ShutDown: " + "; ".join(wrong))]
    return []


def fuzz_tasks(rng: random.Random, env: Env, folder: Path) -> Result:
    tasks = rng.randint(3, 8)
    lease = 0.2
    slow = rng.randrange(tasks)
    result = env.result(
        f"tasks: {tasks} tasks on 2 TaskWorkers threads with lease_seconds={lease}; "
        f"task {slow} takes 0.5 s"
    )
    path = str(folder / "tasks.db")
    with TaskQueue(path) as queue:
        ids = queue.enqueue_many(
            "stress_extras:task_sleep", [(n, 0.5 if n == slow else 0.0) for n in range(tasks)]
        )
        workers = TaskWorkers(path, threads=2, lease_seconds=lease)
        try:
            for n, task_id in enumerate(ids):
                try:
                    value = queue.result(task_id, timeout=5)
                except Exception as exc:  # noqa: BLE001 - a task without its result
                    result.problems.append(("lost", f"task {n}: {type(exc).__name__}: {exc}"))
                    continue
                if value != n * 2:
                    result.problems.append(("wrong", f"task {n} returned {value!r}"))
            alive = sum(thread.is_alive() for thread in workers._workers)
            if alive < 2:
                result.problems.append(("wrong", f"{2 - alive} of 2 task workers died"))
        finally:
            workers.close()
    return result


def run_scenario(seed: int, index: int, env: Env) -> Result:
    """Draw scenario `index` of `seed` and run it."""
    rng = random.Random(f"{seed}:{index}")
    kind = SCHEDULE[index % len(SCHEDULE)]
    folder = Path(tempfile.mkdtemp(prefix=f"s{index}-", dir=env.folder))
    try:
        if kind == "dask" and importlib.util.find_spec("distributed") is None:
            result = fuzz_chain(rng, env, folder, "chain")  # the Dask extra is not installed
            result.description += " (instead of a Dask scenario: Dask is not installed)"
            return result
        if kind in ("chain", "aio", "process", "dask"):
            return fuzz_chain(rng, env, folder, kind)
        if kind == "graph":
            return fuzz_graph(rng, env, folder)
        if kind == "durable":
            return fuzz_durable(rng, env, folder)
        if kind == "durable-kill":
            return fuzz_durable_kill(rng, env, folder)
        if kind == "shared-queue":
            return fuzz_shared_queue(rng, env, folder)
        assert kind == "tasks"
        return fuzz_tasks(rng, env, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# The worker process: runs scenarios sent by the coordinator, checks for leaks.


def descendants(root: int) -> set[int]:
    """Return the pids of the live (not zombie) descendants of `root`."""
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        states[int(entry)] = fields[0]
        parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return {pid for pid in found if states.get(pid) != "Z"}


def helper_processes() -> set[int]:
    """The fork server and resource tracker multiprocessing keeps for the whole process."""
    pids = set()
    from multiprocessing import forkserver, resource_tracker

    for pid in (
        getattr(forkserver._forkserver, "_forkserver_pid", None),
        getattr(resource_tracker._resource_tracker, "_pid", None),
    ):
        if pid:
            pids.add(pid)
    return pids


def checked_scenario(seed: int, index: int, env: Env) -> dict[str, Any]:
    threads_before = set(threading.enumerate())
    files_before = open_files()
    env.thread_errors.clear()
    env.description = ""
    began = time.perf_counter()
    try:
        result = run_scenario(seed, index, env)
    except BaseException as exc:  # noqa: BLE001 - a scenario that raised is reported as wrong
        text = "".join(traceback.format_exception(exc)[-10:])
        drawn = env.description or f"{SCHEDULE[index % len(SCHEDULE)]} (not drawn)"
        result = Result(drawn)
        result.problems.append(("wrong", f"the scenario raised {describe(exc)}\n{text}"))
    seconds = time.perf_counter() - began
    retire = False
    # Threads: the scenario's own helpers are joined; anything else left is a leak.
    if env.has_dask():  # a Dask cluster starts threads of its own as it likes
        env.infrastructure |= {t for t in threading.enumerate() if "Dask-" in t.name}
    new = [t for t in threading.enumerate() if t not in threads_before | env.infrastructure]
    deadline = time.monotonic() + 1.0
    for thread in new:
        with contextlib.suppress(RuntimeError):
            thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [thread for thread in new if thread.is_alive()]
    ended_late = [thread.name for thread in new if not thread.is_alive()]
    if leaked or ended_late:
        names = [thread.name for thread in leaked] + [f"{n} (ended late)" for n in ended_late]
        result.problems.append(("leaked threads", f"{len(names)}: {names[:8]}"))
    if leaked:
        retire = True  # a thread cannot be killed: start afresh
    # Processes, by pid: descendants still alive a moment after the scenario.
    helpers = helper_processes()
    deadline = time.monotonic() + 1.0
    while (alive := descendants(env.pid) - helpers) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive:
        result.problems.append(("leaked processes", f"{len(alive)}: pids {sorted(alive)}"))
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        retire = True
    for error in env.thread_errors:
        result.problems.append(("wrong", error))
    gc.collect()
    files_after = open_files()
    if env.has_dask():  # its threads open sockets and read /proc as they like
        noise = ("socket:", "/proc/", "anon_inode:", tempfile.gettempdir() + "/dask-")

        def quiet(files: dict[int, str]) -> dict[int, str]:
            return {
                fd: what
                for fd, what in files.items()
                if not what.startswith(noise) and fd not in env.dask_files
            }

        files_before, files_after = quiet(files_before), quiet(files_after)
    grown = len(files_after) - len(files_before)
    if grown > 0 and not retire:
        if not any(kind == "leaked files" for kind, _ in result.problems):
            added = {what for fd, what in files_after.items() if files_before.get(fd) != what}
            shown = sorted(added)[:4]
            result.problems.append(("leaked files", f"{grown} more open, new: {shown}"))
        retire = True
    return {
        "index": index,
        "description": result.description,
        "problems": result.problems,
        "seconds": seconds,
        "retire": retire,
    }


def worker_main() -> int:
    """Read "SEED INDEX" lines from standard input; write one JSON result line per scenario."""
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a scenario prints goes to standard error
    logging.basicConfig(level=logging.CRITICAL)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    folder = Path(tempfile.mkdtemp(prefix="stress-extras-"))
    # Started once for the whole process, so that they are not taken for leaks.
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()
    forkserver.ensure_running()
    multiprocessing.get_context("fork").Barrier(1)  # its shared memory arena is kept for reuse
    env = Env(folder)

    def announce(description: str) -> None:
        results.write(json.dumps({"description": description}) + "\n")
        results.flush()

    env.announce = announce
    try:
        for line in sys.stdin:
            seed, index = (int(part) for part in line.split())
            report = checked_scenario(seed, index, env)
            results.write(json.dumps(report) + "\n")
            results.flush()
            if report["retire"]:
                break
    finally:
        env.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


# The coordinator: a pool of worker processes, each killed and replaced on a hang.


class Worker:
    """A worker process of the fuzzer, in a process group of its own."""

    def __init__(self, log_folder: Path, number: int) -> None:
        self.log_path = log_folder / f"worker-{number}.log"
        self.log = self.log_path.open("ab")
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(HERE), environment.get("PYTHONPATH", "")])
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, stress_extras; sys.exit(stress_extras.worker_main())",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=environment,
            process_group=0,  # killed as a group, with every process it started
        )
        assert self.process.stdout is not None
        self.stdout = self.process.stdout
        self.buffer = b""
        self.current: int | None = None
        self.description = ""
        self.deadline = 0.0
        self.log_offset = 0

    def send(self, seed: int, index: int, bound: float) -> None:
        assert self.process.stdin is not None
        self.current = index
        self.description = f"{SCHEDULE[index % len(SCHEDULE)]} (not drawn yet)"
        self.deadline = time.monotonic() + bound
        self.log.flush()
        self.log_offset = self.log_path.stat().st_size
        self.process.stdin.write(f"{seed} {index}\n".encode())
        self.process.stdin.flush()

    def read_lines(self) -> list[bytes] | None:
        """Read what the worker wrote; return the complete lines, or None at end of file."""
        chunk = os.read(self.stdout.fileno(), 65536)
        if not chunk:
            return None
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        return lines

    def stacks(self) -> str:
        """Ask the worker to dump its threads' stacks; return them."""
        with contextlib.suppress(OSError):
            os.kill(self.process.pid, signal.SIGUSR1)
        time.sleep(0.5)
        return self.log_path.read_bytes()[self.log_offset :].decode(errors="replace")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self.stdout.close()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        self.log.close()

    def stop(self) -> None:
        """Ask an idle worker to end: close its input (`finish` waits for it)."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def finish(self) -> None:
        """Wait for a stopped worker to end (its Dask cluster closes); kill it if it does not."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.kill()

    def has_output(self) -> bool:
        return bool(select.select([self.stdout], [], [], 0)[0])


IDLE: Final = ("in _take", "in _supervise", "in _write", "in _drain")


def summarize_stacks(text: str) -> str:
    """Keep the threads of a faulthandler dump that were not idle, and their frames here."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith(("Thread 0x", "Current thread")):
            blocks.append([line.strip().removesuffix(" (most recent call first):")])
        elif blocks and line.strip().startswith("File"):
            blocks[-1].append(line.strip())
    stacks: Counter[tuple[str, ...]] = Counter()
    for block in blocks:
        frames = block[1:]
        if not frames or any(word in frame for frame in frames for word in IDLE):
            continue
        ours = [frame for frame in frames if "/pipeline/" in frame or "stress_extras" in frame]
        if not ours:
            continue  # not the package's (a Dask thread, a pool's idle worker)
        where = "the main thread" if block[0].startswith("Current") else "thread"
        stacks[(where, frames[0], *[frame for frame in ours[:5] if frame != frames[0]])] += 1
    kept = [
        "\n      ".join([f"{count} x {where}" if count > 1 else where, *frames])
        for (where, *frames), count in stacks.items()
    ]
    return "\n    ".join(kept[:5]) or "(no busy thread)"


def coordinate(
    seed: int, indexes: list[int], workers: int, bound: float, verbose: bool, time_limit: float
) -> tuple[Counter[str], list[str], Counter[str], float, tuple[float, str]]:
    """Run the scenarios on `workers` worker processes; return counts, failures, kinds run.

    No scenario starts after `time_limit` seconds; those left are not run.
    """
    counts: Counter[str] = Counter()
    failures: list[str] = []
    logs = Path(tempfile.mkdtemp(prefix="stress-extras-logs-"))
    pending = list(reversed(indexes))
    pool: list[Worker] = []
    selector = selectors.DefaultSelector()
    ran: Counter[str] = Counter()  # scenarios run, by kind
    slowest = (0.0, "")
    busy = 0.0  # seconds the scenarios that ended took, summed
    started = time.perf_counter()
    spawned = 0
    spawned_pids: list[int] = []
    stopped: list[Worker] = []  # asked to end; waited for at the end

    def spawn() -> Worker:
        nonlocal spawned
        spawned += 1
        worker = Worker(logs, spawned)
        spawned_pids.append(worker.process.pid)
        selector.register(worker.stdout, selectors.EVENT_READ, worker)
        pool.append(worker)
        return worker

    def next_index() -> int | None:
        if not pending or time.perf_counter() - started > time_limit:
            return None
        return pending.pop()

    def retire(worker: Worker) -> None:
        selector.unregister(worker.stdout)
        pool.remove(worker)

    def record(index: int, report: dict[str, Any]) -> None:
        nonlocal slowest, busy
        ran[SCHEDULE[index % len(SCHEDULE)]] += 1
        busy += report["seconds"]
        slowest = max(slowest, (report["seconds"], f"{seed}:{index}"))
        kinds = Counter(kind for kind, _ in report["problems"])
        for kind in kinds:
            counts[kind] += 1  # scenarios with this problem, not problems
        if kinds:
            details = "\n    ".join(
                f"{kind}: {detail}".replace("\n", "\n      ") for kind, detail in report["problems"]
            )
            failures.append(f"--replay {seed}:{index}  {report['description']}\n    {details}")
        if verbose:
            print(f"{seed}:{index} {report['seconds']:.2f} s {report['description']}", flush=True)

    try:
        for _ in range(min(workers, len(pending))):
            first = next_index()
            if first is not None:
                spawn().send(seed, first, bound)
        while pool:
            timeout = max(0.0, min(worker.deadline for worker in pool) - time.monotonic())
            for key, _ in selector.select(timeout):
                worker = key.data
                lines = worker.read_lines()
                index = worker.current
                assert index is not None
                if lines is None:  # the worker died
                    code = worker.process.wait(10)
                    text = summarize_stacks(
                        worker.log_path.read_bytes()[worker.log_offset :].decode(errors="replace")
                    )
                    report = {
                        "seconds": 0.0,
                        "description": worker.description,
                        "problems": [("wrong", f"the worker process died (exit {code})\n{text}")],
                    }
                    record(index, report)
                    retire(worker)
                    worker.kill()
                    following = next_index()
                    if following is not None:
                        spawn().send(seed, following, bound)
                    continue
                for line in lines:
                    report = json.loads(line)
                    if "problems" not in report:  # the scenario drawn, before it runs
                        worker.description = report["description"]
                        continue
                    record(index, report)
                    following = next_index()
                    if report["retire"] or following is None:
                        retire(worker)
                        if report["retire"]:
                            worker.kill()  # it holds a thread that may never end
                        else:
                            worker.stop()
                            stopped.append(worker)
                        if following is not None:
                            spawn().send(seed, following, bound)
                    else:
                        worker.send(seed, following, bound)
            now = time.monotonic()
            for worker in [w for w in pool if w.deadline <= now and not w.has_output()]:
                index = worker.current
                assert index is not None
                stacks = summarize_stacks(worker.stacks())
                retire(worker)
                worker.kill()
                ran[SCHEDULE[index % len(SCHEDULE)]] += 1
                counts["hangs"] += 1
                failures.append(
                    f"--replay {seed}:{index}  {worker.description}\n"
                    f"    hang: ran past {bound} s; the threads that were not idle:\n    {stacks}"
                )
                following = next_index()
                if following is not None:
                    spawn().send(seed, following, bound)
    finally:
        for worker in list(pool):
            worker.kill()
        for worker in stopped:
            worker.finish()
        shutil.rmtree(logs, ignore_errors=True)
        left = [pid for pid in spawned_pids if _alive(pid)]
        if left:
            counts["leaked processes"] += 1
            failures.append(f"worker processes of the fuzzer left running: {left}")
    counts["busy seconds"] = round(busy)  # not a problem: taken out by main()
    return counts, failures, ran, time.perf_counter() - started, slowest


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=int, default=1000, help="how many (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of every scenario")
    parser.add_argument("--bound", type=float, default=15.0, help="seconds before a hang")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the preset of `make check`: {QUICK['scenarios']} scenarios, every kind "
        f"{QUICK['scenarios'] // len(SCHEDULE)}+ times, bound {QUICK['bound']} s",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=float("inf"),
        help="start no scenario after this many seconds; those left count as not run",
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(WEIGHTS), help="run only scenarios of these kinds"
    )
    parser.add_argument("--replay", metavar="SEED:INDEX", help="run one scenario, in full")
    parser.add_argument("--show", type=int, default=12, help="failures shown (default 12)")
    parser.add_argument("--verbose", action="store_true", help="a line per scenario")
    args = parser.parse_args(argv)
    # A SIGTERM (a test's timeout) ends the run through the `finally` that kills the workers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit("stopped by SIGTERM"))
    if args.quick:
        args.scenarios, args.seed, args.bound = QUICK["scenarios"], QUICK["seed"], QUICK["bound"]
    indexes = list(range(args.scenarios))
    if args.only:  # the first scenarios of those kinds, by index, so each replays alike
        chosen = itertools.count()
        kinds = set(args.only)
        indexes = list(
            itertools.islice(
                (i for i in chosen if SCHEDULE[i % len(SCHEDULE)] in kinds), args.scenarios
            )
        )
    if args.replay:
        seed_text, _, index_text = args.replay.partition(":")
        args.seed, indexes, args.show, args.verbose = int(seed_text), [int(index_text)], 1, True
    counts, failures, ran, elapsed, slowest = coordinate(
        args.seed, indexes, args.workers, args.bound, args.verbose, args.time_limit
    )
    busy = counts.pop("busy seconds")
    done = sum(ran.values())
    not_run = len(indexes) - done
    print(
        f"scenarios: {done}  "
        + "  ".join(f"{name}: {counts[name]}" for name in COUNTS)
        + (f"  not run: {not_run}" if not_run else "")
        + f"  ({elapsed:.1f} s, {busy} s in scenarios that ended; slowest "
        + f"{slowest[0]:.2f} s, --replay {slowest[1] or '-'})"
    )
    print("kinds run: " + ", ".join(f"{kind} {ran[kind]}" for kind in WEIGHTS))
    for failure in failures[: args.show]:
        print(failure)
    if len(failures) > args.show:
        print(f"... and {len(failures) - args.show} more failing scenarios")
    return 1 if sum(counts.values()) or not_run else 0


if __name__ == "__main__":
    sys.exit(main())
