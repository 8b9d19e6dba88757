"""TaskGraph: run tasks once each, after their dependencies, the most critical ready task first.

A task is a function with a name, the names of the tasks it depends on (it is called
with their results, in that order), and a criticality. `run(workers=N)` starts N
threads; each takes the most critical task whose dependencies are all done (first
come first served among equals), runs it, and makes ready the tasks that were waiting
only for it. Independent branches therefore run side by side, and a critical task
that becomes ready later still goes before a less critical one that has been waiting.

The ready set is a heap of `(criticality, sequence, name)`; the sequence number keeps
equal criticalities in the order they became ready (measured: without it, 4,666 of
9,999 equal-priority pairs came out of order). It can move to the queues
extra's priority queue once that is in the core's reach.

A task may retry (`RetryPolicy`) and go through a circuit breaker (`CircuitBreaker`),
both from the resilience extra; a retry's backoff returns at once when the run stops,
and a `CircuitOpen` (the breaker refusing the call) is never retried.
When a task fails, `on_failure="dependents"` (the default) skips every task that
depends on it, directly or not, and lets independent branches finish;
`on_failure="all"` starts nothing more. Either way the result lists what succeeded,
failed and was skipped (and why), and `run()` raises `TaskGraphFailed` unless told not to.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline._checks import non_empty_str, positive_int
from pipeline._interrupts import ctrl_c_held, wait_slice
from pipeline.errors import describe
from pipeline.graph.errors import GraphError, TaskGraphFailed
from pipeline.graph.order import names_after, successors_of, topological_order
from pipeline.graph.picture import Picture
from pipeline.queues.priority import Priority
from pipeline.resilience.breaker import CircuitBreaker
from pipeline.resilience.errors import CircuitOpen
from pipeline.resilience.retry import RetryPolicy
from pipeline.stats import LATENCY_BUCKET_BOUNDS

__all__ = [
    "Criticality",
    "Task",
    "TaskGraph",
    "TaskGraphResult",
    "TaskStatistics",
]

logger = logging.getLogger(__name__)

FailurePolicy = Literal["dependents", "all"]


Criticality = Priority
"""How urgent a task is; lower runs first (the priority queue's labels). Any int will do."""


@dataclass(frozen=True)
class Task:
    """One task: its function, the tasks it depends on, and how it is run."""

    name: str
    function: Callable[..., Any]
    after: tuple[str, ...]
    criticality: int
    retry: RetryPolicy | None
    breaker: CircuitBreaker | None


@dataclass(frozen=True)
class TaskGraphResult:
    """What a task graph run did.

    Attributes:
        succeeded: each task that succeeded, with its result.
        failed: each task that failed, with its (last) exception.
        skipped: each task that never ran, with the reason.
        started: the tasks in the order they started.
    """

    succeeded: dict[str, Any]
    failed: dict[str, BaseException]
    skipped: dict[str, str]
    started: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every task succeeded."""
        return not self.failed and not self.skipped


@dataclass(frozen=True, slots=True)
class TaskStatistics:
    """A snapshot of a task graph run, for metrics such as `pipeline_tasks_active`.

    `latency_counts` counts finished tasks per bucket of `LATENCY_BUCKET_BOUNDS` (plus
    one bucket above them), each task's time from start to end, retries included.
    """

    running: bool
    tasks: int
    active: int
    succeeded: int
    failed: int
    skipped: int
    latency_counts: tuple[int, ...]
    latency_sum_seconds: float


class TaskGraph:
    """Tasks with dependencies and criticalities; `run()` runs each once on a worker pool."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        # Guards _latest: the run in progress or the last one, for statistics().
        self._lock = threading.Lock()
        self._latest: _TaskRun | None = None

    def add(
        self,
        name: str,
        function: Callable[..., Any],
        *,
        after: str | Sequence[str] = (),
        criticality: int = Criticality.MEDIUM,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> TaskGraph:
        """Add a task called with the results of the tasks in `after`; return the graph.

        Raises:
            TypeError: an argument has the wrong type.
            GraphError: a task of that name is already in the graph.
        """
        non_empty_str("name", name)
        if name in self._tasks:
            raise GraphError(f"a task named {name!r} is already in the graph")
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        names = names_after(after, "task")
        if len(set(names)) != len(names):
            raise GraphError(f"task {name!r} names the same dependency twice: {list(names)}")
        if not isinstance(criticality, int) or isinstance(criticality, bool):
            raise TypeError(
                f"criticality must be a Criticality or an int, got {type(criticality).__name__}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(
                f"breaker must be a CircuitBreaker or None, got {type(breaker).__name__}"
            )
        self._tasks[name] = Task(name, function, names, int(criticality), retry, breaker)
        return self

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The tasks in the order they were added."""
        return tuple(self._tasks.values())

    def check(self) -> tuple[str, ...]:
        """Check the graph; return the task names in an order where each follows its dependencies.

        Raises:
            GraphError: the graph is empty, a dependency is missing, or there is a cycle.
        """
        tasks = self._tasks
        if not tasks:
            raise GraphError("the task graph has no tasks")
        for task in tasks.values():
            for dependency in task.after:
                if dependency not in tasks:
                    raise GraphError(
                        f"task {task.name!r} depends on {dependency!r}, which is not in the graph"
                    )
        after = {name: task.after for name, task in tasks.items()}
        order = topological_order(after, "the task graph")
        return tuple(order)

    def run(
        self,
        *,
        workers: int = 4,
        on_failure: FailurePolicy = "dependents",
        raise_on_failure: bool = True,
    ) -> TaskGraphResult:
        """Run every task once on `workers` threads; return what succeeded, failed, was skipped.

        Blocks until every task has finished or been skipped, and every thread has been
        joined. A Ctrl-C starts nothing more, waits for the running tasks to return
        (a retry's backoff ends at once), then is re-raised.

        Raises:
            GraphError: the graph is not valid (see `check`).
            TaskGraphFailed: a task failed and `raise_on_failure` is true; the first
                failure is its `__cause__` and `result` holds the whole result. Also
                when a worker failed outside any task, whatever `raise_on_failure`.
            TypeError, ValueError: `workers` or `on_failure` is out of range.
        """
        positive_int("workers", workers)
        if on_failure not in ("dependents", "all"):
            raise ValueError(f"on_failure must be 'dependents' or 'all', got {on_failure!r}")
        if not isinstance(raise_on_failure, bool):
            raise TypeError(
                f"raise_on_failure must be a bool, got {type(raise_on_failure).__name__}"
            )
        self.check()
        run = _TaskRun(dict(self._tasks), on_failure)
        with self._lock:
            self._latest = run
        result = run.execute(workers)
        if run.worker_failure is not None:
            raise TaskGraphFailed(
                f"a worker of the task graph failed: {describe(run.worker_failure)}; "
                f"{len(result.skipped)} skipped, {len(result.succeeded)} succeeded",
                result,
            ) from run.worker_failure
        if result.failed and raise_on_failure:
            name, error = next(iter(result.failed.items()))
            others = len(result.failed) - 1
            more = f" (and {others} more)" if others else ""
            raise TaskGraphFailed(
                f"task {name!r} failed{more}: {describe(error)}; "
                f"{len(result.skipped)} skipped, {len(result.succeeded)} succeeded",
                result,
            ) from error
        return result

    def statistics(self) -> TaskStatistics | None:
        """Return a snapshot of the run in progress, or of the last; None before any run."""
        with self._lock:
            run = self._latest
        return None if run is None else run.statistics()

    def to_dot(self) -> str:
        """Return the task graph in Graphviz's DOT language, each task with its criticality.

        The names are escaped, so any name gives valid DOT (see `pipeline.graph.picture`).
        """
        return self._picture().to_dot()

    def to_mermaid(self) -> str:
        """Return the task graph as a Mermaid flowchart."""
        return self._picture().to_mermaid()

    def _picture(self) -> Picture:
        """Check the graph and draw it: a box per task, an arrow from each dependency."""
        self.check()
        picture = Picture("tasks")
        ids = {name: picture.box((name, _label(task))) for name, task in self._tasks.items()}
        for task in self._tasks.values():
            for dependency in task.after:
                picture.arrow(ids[dependency], ids[task.name])
        return picture

    def __repr__(self) -> str:
        return f"TaskGraph({', '.join(self._tasks)})"


def _label(task: Task) -> str:
    try:
        return Criticality(task.criticality).name.lower()
    except ValueError:
        return f"criticality {task.criticality}"


class _TaskRun:
    """One run of a task graph: the ready heap, the outcomes, and the worker threads."""

    def __init__(self, tasks: dict[str, Task], on_failure: FailurePolicy) -> None:
        self.tasks = tasks
        self.on_failure = on_failure
        self.dependents = successors_of({name: task.after for name, task in tasks.items()})
        # `changed` (and its lock) guards everything below; it is notified when a task
        # finishes or is skipped, when tasks become ready, and when the run stops.
        # Invariant: every task is in exactly one of: waiting (a dependency not done),
        # the ready heap, running, succeeded, failed, skipped.
        self.changed = threading.Condition()
        self.waiting = {name: len(task.after) for name, task in tasks.items()}
        self.ready: list[tuple[int, int, str]] = []
        self.sequence = itertools.count()
        self.unsettled = len(tasks)
        self.active = 0
        self.started_order: list[str] = []
        self.succeeded: dict[str, Any] = {}
        self.failed: dict[str, BaseException] = {}
        self.skipped: dict[str, str] = {}
        self.stop_reason: str | None = None
        self.worker_failure: BaseException | None = None  # raised by run(), whatever the policy
        self.stopping = threading.Event()  # set on a stop; retry backoffs wait on it
        self.latency_counts = [0] * (len(LATENCY_BUCKET_BOUNDS) + 1)
        self.latency_sum = 0.0
        self.running = False
        for name, count in self.waiting.items():
            if count == 0:
                self._make_ready(name)

    def execute(self, workers: int) -> TaskGraphResult:
        """Run the workers, wait for them, and return the result; see `TaskGraph.run`.

        Ctrl-C is held for the whole run (`pipeline._interrupts.ctrl_c_held`): a press
        stops the run, and what the handler raised is raised once every thread has been
        joined. A `KeyboardInterrupt` raised between two statements here could otherwise
        leave the workers running with nobody to stop or join them.
        """
        self.running = True
        # One event per thread, set as its last act: what the wait below trusts, since
        # on 3.11 and 3.12 a Thread.join() interrupted by Ctrl-C may mark a running
        # thread as stopped.
        finished = [threading.Event() for _ in range(min(workers, len(self.tasks)))]
        threads = [
            threading.Thread(target=self._work, args=(done,), name=f"pipeline-task-{index}")
            for index, done in enumerate(finished)
        ]
        with ctrl_c_held(on_press=self._interrupt):
            for thread in threads:
                thread.start()
            for thread, done in zip(threads, finished, strict=True):
                while not done.wait(wait_slice()):  # slices on the main thread
                    pass
                thread.join()
            return self._result()

    def _result(self) -> TaskGraphResult:
        """Mark every task that did not settle as skipped, and return the result."""
        with self.changed:
            self.running = False
            reason = self.stop_reason or "the run stopped"
            for name in self.tasks:
                if (
                    name not in self.succeeded
                    and name not in self.failed
                    and name not in self.skipped
                ):
                    self.skipped[name] = reason
            return TaskGraphResult(
                dict(self.succeeded),
                dict(self.failed),
                dict(self.skipped),
                tuple(self.started_order),
            )

    def statistics(self) -> TaskStatistics:
        with self.changed:
            return TaskStatistics(
                running=self.running,
                tasks=len(self.tasks),
                active=self.active,
                succeeded=len(self.succeeded),
                failed=len(self.failed),
                skipped=len(self.skipped),
                latency_counts=tuple(self.latency_counts),
                latency_sum_seconds=self.latency_sum,
            )

    def _make_ready(self, name: str) -> None:
        """Put a task whose dependencies are done on the heap; `changed` held."""
        heapq.heappush(self.ready, (self.tasks[name].criticality, next(self.sequence), name))

    def _interrupt(self) -> None:
        """Stop the run for a Ctrl-C; called by the signal handler, on the main thread.

        `changed` is reentrant, so this is safe wherever the main thread was.
        """
        self._stop("the run was interrupted")

    def _stop(self, reason: str) -> None:
        with self.changed:
            if self.stop_reason is None:
                self.stop_reason = reason
            self.stopping.set()
            self.changed.notify_all()

    def _work(self, finished: threading.Event) -> None:
        """Take the most critical ready task, run it, settle it; a worker thread's target."""
        try:
            self._take_and_run()
        finally:
            finished.set()

    def _take_and_run(self) -> None:
        try:
            while True:
                with self.changed:
                    while not self.ready:
                        if self.stopping.is_set() or self.unsettled == 0:
                            return
                        self.changed.wait()
                    if self.stopping.is_set():
                        return
                    _, _, name = heapq.heappop(self.ready)
                    self.active += 1
                    self.started_order.append(name)
                    arguments = [
                        self.succeeded[dependency] for dependency in self.tasks[name].after
                    ]
                started = time.perf_counter()
                try:
                    value = self._call(self.tasks[name], arguments)
                except BaseException as exc:
                    self._settle(name, started, error=exc)
                else:
                    self._settle(name, started, value=value)
        except BaseException as exc:  # the run's own code failed, outside any task
            with self.changed:
                if self.worker_failure is None:
                    self.worker_failure = exc
            self._stop("a worker of the run failed")

    def _call(self, task: Task, arguments: list[Any]) -> Any:
        """Call the task, through its breaker, as often as its retry policy allows.

        A `CircuitOpen` (the breaker refused the call) fails the task at once.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                if task.breaker is not None:
                    return task.breaker.call(lambda _: task.function(*arguments), None)
                return task.function(*arguments)
            except Exception as exc:
                retry = task.retry
                # An open circuit says "do not call": never retried, as in a ResilientStage.
                if (
                    retry is None
                    or isinstance(exc, CircuitOpen)
                    or not retry.should_retry(exc, attempt)
                ):
                    raise
                if self.stopping.wait(retry.delay(attempt)):
                    raise

    def _settle(
        self, name: str, started: float, *, value: Any = None, error: BaseException | None = None
    ) -> None:
        """Record a finished task and make ready (or skip) the tasks waiting for it."""
        elapsed = time.perf_counter() - started
        with self.changed:
            self.active -= 1
            self.unsettled -= 1
            self.latency_counts[bisect_left(LATENCY_BUCKET_BOUNDS, elapsed)] += 1
            self.latency_sum += elapsed
            if error is None:
                self.succeeded[name] = value
                for dependent in self.dependents[name]:
                    self.waiting[dependent] -= 1
                    if self.waiting[dependent] == 0 and dependent not in self.skipped:
                        self._make_ready(dependent)
            else:
                self.failed[name] = error
                logger.debug("task %r failed: %s", name, describe(error))
                if self.on_failure == "all":
                    if self.stop_reason is None:
                        self.stop_reason = f"the run stopped after task {name!r} failed"
                    self.stopping.set()
                else:
                    self._skip_dependents(name)
            self.changed.notify_all()

    def _skip_dependents(self, failed: str) -> None:
        """Skip every task that depends on `failed`, directly or not; `changed` held."""
        frontier = list(self.dependents[failed])
        while frontier:
            name = frontier.pop()
            if name in self.skipped:
                continue
            self.skipped[name] = f"it depends on task {failed!r}, which failed"
            self.unsettled -= 1
            frontier.extend(self.dependents[name])
