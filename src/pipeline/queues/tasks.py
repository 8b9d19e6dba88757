"""A task queue over a durable queue: callables by import path, run by worker threads.

`TaskQueue(path).enqueue("package.module:function", *args, **kwargs)` stores a task
(the import path and the arguments, JSON by default) and returns its id.
`TaskWorkers(path, threads=2)` runs tasks in threads: each leases a task, imports and
calls the target, and stores its result (or its error) and acks the task in one
transaction, so a stored result is never lost nor stored twice. A task that raises is
retried as its `RetryPolicy` says (the workers' one, or the task's own), after a
backoff delay kept in the file; then its error is stored and it goes to the
dead-letter table. `TaskQueue.result(task_id, timeout)` waits for the result.

Leases are short (`lease_seconds`, 10 s by default) and renewed every third of that
while a task runs, by one renewer thread per `TaskWorkers`: a task may run for as long
as it needs, and a task whose worker was killed is taken over by a live worker of any
process within a lease. A lease lost all the same (a renewal held up longer than a
lease) is counted and logged once; the worker goes on with the next task.

What is guaranteed: a task runs at least once (a worker killed mid-task leaves it
leased; it runs again once the lease lapses or the file is reopened) and its result is
stored exactly once. Tasks with side effects outside the queue file must tolerate
running twice.

Workers left open do not keep the interpreter alive: at exit, before the interpreter
waits for its threads, every open `TaskWorkers` is closed (as `concurrent.futures`
does for its pools), which waits for the running tasks.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from queue import Empty
from typing import Any, Literal

from pipeline._checks import integer, non_empty_str, positive_int, seconds
from pipeline._interrupts import ctrl_c_held
from pipeline.errors import ShutDown, describe
from pipeline.queues.codecs import JSON, Codec
from pipeline.queues.durable import DurableQueue, Leased
from pipeline.queues.errors import LeaseLost, TaskFailed
from pipeline.resilience.retry import RetryPolicy

__all__ = ["TaskQueue", "TaskWorkers", "default_retry", "import_path"]

logger = logging.getLogger(__name__)

DEFAULT_NAME = "tasks"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_LEASE_SECONDS = 10.0


def default_retry(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> RetryPolicy:
    """Return the workers' retry policy when none is given: any `Exception`, backing off.

    Up to `max_attempts` runs; the delay before retry n is drawn from
    [0, min(60, 2 ** (n - 1))] seconds. A `BaseException` that is not an `Exception`
    (`SystemExit`, `KeyboardInterrupt` raised by a task) is never retried.
    """
    return RetryPolicy(max_attempts, base_delay=1.0, max_delay=60.0, retry_on=Exception)


def import_path(target: str | Callable[..., Any]) -> str:
    """Return the "module:qualified.name" a worker will import `target` by.

    Raises:
        ValueError: `target` cannot be imported back by that path (a lambda, a local
            function, a bound method), or the string is not of that form.
    """
    if isinstance(target, str):
        module, _, name = target.partition(":")
        if not module or not name:
            raise ValueError(f"a task target must be 'module:function', got {target!r}")
        return target
    path = _path_of(target)
    if path is None:
        raise ValueError(f"a task target must be importable by name; {target!r} is not")
    return path


class TaskQueue:
    """Open (or create) the task queue `name` in the SQLite file at `path`.

    Args:
        path: the queue file (it may hold other queues too).
        name: the queue's name in the file.
        codec: how arguments and results become bytes (JSON by default).
        max_attempts: passed to the underlying `DurableQueue` (`self.queue`); how often
            a task runs is the workers' retry policy or the task's own.
        synchronous: "NORMAL" or "FULL" (see `DurableQueue`).
        poll_interval: how often `result()` looks for results stored by other processes.

    Raises:
        Whatever `DurableQueue` raises for a bad file.
        TypeError, ValueError: an argument of the wrong type or out of range, named.
    """

    def __init__(
        self,
        path: str,
        name: str = DEFAULT_NAME,
        *,
        codec: Codec = JSON,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        poll_interval: float = 0.05,
    ) -> None:
        self.queue: DurableQueue[dict[str, Any]] = DurableQueue(
            path,
            non_empty_str("name", name),
            codec=codec,
            max_attempts=positive_int("max_attempts", max_attempts),
            synchronous=synchronous,
            poll_interval=seconds("poll_interval", poll_interval),
        )

    def enqueue(
        self,
        target: str | Callable[..., Any],
        /,
        *args: Any,
        priority: int | None = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> int:
        """Store one call of `target(*args, **kwargs)` and return its task id; durable on return.

        Lower `priority` runs first. `retry` is this task's own retry policy, stored
        with it (its `rng` is not: workers draw the jitter). A task taking keyword
        arguments named `priority` or `retry` is enqueued with `enqueue_call`.

        Raises:
            ValueError: `target` (or a class of `retry.retry_on`) is not importable by name.
            CodecError: the arguments cannot be encoded; nothing was stored.
        """
        return self.enqueue_call(target, args, kwargs, priority=priority, retry=retry)

    def enqueue_call(
        self,
        target: str | Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> int:
        """Store one call of `target(*args, **kwargs)`, any keywords allowed; see `enqueue`."""
        call = _call(import_path(target), args, {} if kwargs is None else kwargs, retry)
        return self._store([call], priority)[0]

    def enqueue_many(
        self,
        target: str | Callable[..., Any],
        arguments: Iterable[Sequence[Any]],
        *,
        priority: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[int]:
        """Store one call of `target(*args)` per tuple in `arguments`, in one transaction.

        Returns the task ids in order. Lower `priority` runs first; `retry` as for
        `enqueue`.

        Raises:
            ValueError: `target` is not importable by name.
            CodecError: some arguments cannot be encoded; nothing was stored.
        """
        path = import_path(target)
        return self._store([_call(path, args, {}, retry) for args in arguments], priority)

    def result(self, task_id: int, timeout: float | None = None) -> Any:
        """Wait for task `task_id` of this queue to finish and return what it returned.

        Blocks until the result is stored (by a worker of any process), or `timeout`
        seconds (None: no limit; 0: look once).

        Raises:
            TaskFailed: the task failed for good; the message holds its error.
            KeyError: this queue has no task with this id (another queue of the file
                may have).
            TimeoutError: not finished in time.
            ShutDown: this object was closed meanwhile.
        """
        integer("task_id", task_id)
        limit = seconds("timeout", timeout, zero_allowed=True, none_allowed=True)
        queue = self.queue
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            # One statement, so one snapshot: a worker's commit between two separate
            # reads could make a finishing task look unknown. Every table is read for
            # this queue only: ids are unique in the file, but not every id is a task.
            ok, value, error, dead_error, attempts, pending = (
                queue.connection()
                .execute(
                    "SELECT r.ok, r.value, r.error, d.error, d.attempts,"
                    " EXISTS (SELECT 1 FROM items WHERE id = ?1 AND queue = ?2) FROM (SELECT 1)"
                    " LEFT JOIN results r ON r.task_id = ?1 AND r.queue = ?2"
                    " LEFT JOIN dead d ON d.id = ?1 AND d.queue = ?2",
                    (task_id, queue.name),
                )
                .fetchone()
            )
            if ok is not None:
                if ok:
                    return queue.codec.decode(value)
                after = "" if attempts is None else f" after {_attempts(attempts)}"
                raise TaskFailed(f"task {task_id} failed{after}: {error}")
            if dead_error is not None:  # given up without a stored outcome: lapses, a corrupt row
                raise TaskFailed(f"task {task_id} was given up: {dead_error}")
            if not pending:
                raise KeyError(f"no task {task_id} in {queue!r}")
            wait = queue.poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"task {task_id} did not finish within {timeout} s")
                wait = min(wait, remaining)
            queue.wait_for_change(wait)

    def close(self) -> None:
        """Close the queue file's connections; calling it again is harmless."""
        self.queue.close()

    def __enter__(self) -> TaskQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _store(self, calls: list[dict[str, Any]], priority: int | None = None) -> list[int]:
        with self.queue.transaction() as connection:
            return self.queue.insert_in(connection, calls, priority)


class TaskWorkers:
    """Start `threads` worker threads running the tasks of the queue `name` in `path`.

    A context manager: leaving it (or `close()`) stops the workers once their current
    task is done, and joins them. Each worker has its own connection. One more thread
    renews the leases of the running tasks every `lease_seconds / 3`. Workers left
    open are closed at interpreter exit.

    Args:
        path, name, codec, synchronous: as for `TaskQueue`.
        threads: how many tasks run at once.
        max_attempts: runs of a failing task before its error is final, with the
            default backoff (`default_retry`); give this or `retry`.
        retry: the retry policy of tasks stored without their own: which errors are
            retried, how often, after which delays.
        lease_seconds: how long a task's lease lasts unrenewed: the longest a killed
            worker's task waits before a live worker takes it over.
        max_lapses: runs of a task that ended without an outcome (its worker killed,
            its lease lost, its outcome not storable) before it is given up (a task
            that kills every worker it reaches); None: never. They are not attempts.

    Raises:
        Whatever `DurableQueue` raises for a bad file.
        TypeError, ValueError: an argument of the wrong type or out of range, named.
    """

    def __init__(
        self,
        path: str,
        name: str = DEFAULT_NAME,
        *,
        threads: int = 2,
        codec: Codec = JSON,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_lapses: int | None = 20,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        self.lease_seconds = seconds("lease_seconds", lease_seconds)
        self.retry = _workers_policy(max_attempts, retry)
        count = positive_int("threads", threads)
        # The workers decide when a task is given up on (its policy), so the queue
        # itself never buries an item.
        self.queue: DurableQueue[dict[str, Any]] = DurableQueue(
            path,
            non_empty_str("name", name),
            codec=codec,
            max_attempts=None,
            max_lapses=max_lapses,
            visibility_timeout=self.lease_seconds,
            synchronous=synchronous,
        )
        self._targets: dict[str, Callable[..., Any]] = {}
        # Guarded by _lock: the counts (read through `finished`, `failed` and
        # `leases_lost`); _running, the tasks being run now by lease id (what the
        # renewer renews; a worker takes its task out before storing the outcome);
        # _lost, the lease ids of running tasks whose loss was logged already;
        # _working, the worker threads not yet returned.
        self._lock = threading.Lock()
        self._finished = 0
        self._failed = 0
        self._leases_lost = 0
        self._running: dict[str, Leased[dict[str, Any]]] = {}
        self._lost: set[str] = set()
        self._working = count
        # Held for each write transaction of this object's threads (a claim, an outcome,
        # a renewal), so that they take turns on the file's write lock here, woken at
        # once, instead of in SQLite's busy handler, which sleeps 1 to 100 ms between
        # tries: on a busy machine, with an fsync per commit, short tasks ran 1.7x
        # faster (the same on a quiet one). Never held while a task runs or while a
        # worker waits for one.
        self._writing = threading.Lock()
        # Set when the last worker returns (or by close()): the renewer's stop signal.
        self._stopping = threading.Event()
        self._workers = [
            threading.Thread(target=self._work, name=f"task-worker-{n}") for n in range(count)
        ]
        self._renewer = threading.Thread(target=self._renew_leases, name="task-lease-renewer")
        _live_workers.add(self)
        _register_exit_hook()
        try:
            for thread in (*self._workers, self._renewer):
                thread.start()
        except BaseException:
            self.close()
            raise

    @property
    def finished(self) -> int:
        """Tasks whose result this object stored, successes and final failures."""
        with self._lock:
            return self._finished

    @property
    def failed(self) -> int:
        """Runs of a task that raised (retried or final)."""
        with self._lock:
            return self._failed

    @property
    def leases_lost(self) -> int:
        """Tasks whose lease lapsed while this object ran them (another worker took them over)."""
        with self._lock:
            return self._leases_lost

    def close(self) -> None:
        """Stop taking tasks, wait for the running ones, join the threads, close the file.

        A task that never returns holds `close()` (a thread cannot be stopped from
        outside); calling it again is harmless.
        """
        self.queue.shutdown(immediate=True)
        for thread in self._workers:
            if thread.ident is not None:  # started
                thread.join()
        self._stopping.set()
        if self._renewer.ident is not None:
            self._renewer.join()
        self.queue.close()
        _live_workers.discard(self)

    def __enter__(self) -> TaskWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _work(self) -> None:
        """One worker thread: lease a task, run it, store the outcome; until shut down."""
        try:
            while True:
                try:
                    with self._writing:
                        (task,) = self.queue.get_many(1, block=False)
                except Empty:  # woken by this object's commits, or looks again
                    self.queue.wait_for_change(self.queue.poll_interval)
                    continue
                except ShutDown:
                    return
                except Exception:  # a corrupt row (kept as a dead letter), a full disk
                    logger.exception("a task worker could not lease a task")
                    self.queue.wait_for_change(self.queue.poll_interval)
                    continue
                self._run(task)
        finally:
            with self._lock:
                self._working -= 1
                last = self._working == 0
            if last:
                self._stopping.set()

    def _run(self, task: Leased[dict[str, Any]]) -> None:
        """Run one task and store its outcome; nothing it does ends the worker."""
        policy = self.retry
        encoded = b""
        failure: BaseException | None = None
        with self._lock:
            self._running[task.lease_id] = task
        try:
            call = task.item
            policy = _task_policy(call, self.retry)
            target = self._target(call["target"])
            value = target(*call["args"], **call["kwargs"])
            encoded = self.queue.codec.encode(value)
        except BaseException as exc:  # the task's outcome, whatever it is: stored
            failure = exc
        finally:
            with self._lock:
                del self._running[task.lease_id]
        try:
            with self._writing:
                if failure is None:
                    self._succeed(task, encoded)
                else:
                    self._fail(task, failure, policy)
        except LeaseLost:
            self._lease_lost(task, "before its outcome was stored; the new holder runs it")
        except Exception:  # a full disk, a damaged file: the lease lapses, it runs again
            logger.exception(
                "the outcome of task %d of %r could not be stored; it runs again once its "
                "lease lapses",
                task.id,
                self.queue,
            )
        finally:
            with self._lock:
                self._lost.discard(task.lease_id)

    def _succeed(self, task: Leased[dict[str, Any]], encoded: bytes) -> None:
        with self.queue.transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO results (task_id, queue, ok, value, error, finished)"
                " VALUES (?, ?, 1, ?, NULL, ?)",
                (task.id, self.queue.name, encoded, time.time()),
            )
            self.queue.ack_in(connection, [task])
        with self._lock:
            self._finished += 1

    def _fail(
        self, task: Leased[dict[str, Any]], failure: BaseException, policy: RetryPolicy
    ) -> None:
        error = _storable(_error_text(failure))
        with self._lock:
            self._failed += 1
        if policy.should_retry(failure, task.attempts):
            self.queue.nack(task, error, delay=policy.delay(task.attempts))
            return
        with self.queue.transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO results (task_id, queue, ok, value, error, finished)"
                " VALUES (?, ?, 0, NULL, ?, ?)",
                (task.id, self.queue.name, error, time.time()),
            )
            self.queue.bury_in(connection, task, error)  # kept for `requeue-dead`
        with self._lock:
            self._finished += 1

    def _lease_lost(
        self, task: Leased[dict[str, Any]], consequence: str, *, while_running: bool = False
    ) -> None:
        """Count a lost lease and log it, once per task run.

        With `while_running` (the renewer), only if the worker has not taken the task
        out of `_running` yet: once it has, a lease that is gone may be its own ack.
        """
        with self._lock:
            first = task.lease_id not in self._lost
            if while_running and task.lease_id not in self._running:
                first = False
            if first:
                self._lost.add(task.lease_id)
                self._leases_lost += 1
        if first:
            logger.warning(
                "task %d of %r lost its lease (it lapsed and another worker took the task over) %s",
                task.id,
                self.queue,
                consequence,
            )

    def _renew_leases(self) -> None:
        """The renewer thread: extend the running tasks' leases every third of a lease."""
        while not self._stopping.wait(self.lease_seconds / 3):
            with self._lock:
                running = [task for lease, task in self._running.items() if lease not in self._lost]
            for task in running:
                try:
                    with self._writing:
                        self.queue.renew([task], self.lease_seconds)
                except LeaseLost:
                    self._lease_lost(
                        task, "while it ran; its outcome will not be stored", while_running=True
                    )
                except ShutDown:
                    return
                except Exception:
                    logger.exception(
                        "the lease of task %d of %r could not be renewed", task.id, self.queue
                    )

    def _target(self, path: str) -> Callable[..., Any]:
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = _resolve(path)
        return target


# At exit, close the workers left open before the interpreter joins their threads.
_live_workers: weakref.WeakSet[TaskWorkers] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook_registered = False
# A forked child has none of its parent's threads: nothing to close there.
os.register_at_fork(after_in_child=_live_workers.clear)


def _close_workers_at_exit() -> None:
    """Close every `TaskWorkers` still open, so that the interpreter can exit."""
    for workers in list(_live_workers):
        workers.queue.shutdown(immediate=True)  # all of them stop taking tasks at once
    for workers in list(_live_workers):
        # A Ctrl-C now is held until the workers are joined, then dropped: the
        # interpreter is exiting already.
        with contextlib.suppress(KeyboardInterrupt), ctrl_c_held():
            workers.close()


def _register_exit_hook() -> None:
    """Have `threading` close open workers before it waits for their threads at exit.

    `threading._register_atexit` is the hook `concurrent.futures` uses for the same
    purpose (and `pipeline.pipeline` for runs): it runs before the interpreter joins
    the remaining threads, where a plain `atexit` handler would run too late.
    """
    global _exit_hook_registered
    with _exit_hook_lock:
        if not _exit_hook_registered:
            with contextlib.suppress(RuntimeError):  # the interpreter is already exiting
                threading._register_atexit(_close_workers_at_exit)  # type: ignore[attr-defined]
            _exit_hook_registered = True


def _call(
    path: str, args: Sequence[Any], kwargs: Mapping[str, Any], retry: RetryPolicy | None
) -> dict[str, Any]:
    """Return the stored form of one task: its target, arguments and own retry policy."""
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError(
            f"a task's arguments must be a sequence (a tuple or a list), got {type(args).__name__}"
        )
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"a task's keyword arguments must be a mapping, got {type(kwargs).__name__}"
        )
    call: dict[str, Any] = {"target": path, "args": list(args), "kwargs": dict(kwargs)}
    if retry is not None:
        call["retry"] = _policy_record(retry)
    return call


def _policy_record(policy: object) -> dict[str, Any]:
    """Return a retry policy as the codec can store it (its rng is not stored)."""
    if not isinstance(policy, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None, got {type(policy).__name__}")
    paths = []
    for kind in policy.retry_on:
        path = _path_of(kind)
        if path is None:
            raise ValueError(
                f"retry_on must hold classes importable by name, so that workers can "
                f"read it back; {kind!r} is not"
            )
        paths.append(path)
    return {
        "max_attempts": policy.max_attempts,
        "base_delay": policy.base_delay,
        "max_delay": policy.max_delay,
        "multiplier": policy.multiplier,
        "retry_on": paths,
    }


def _task_policy(call: dict[str, Any], default: RetryPolicy) -> RetryPolicy:
    """Return the task's own retry policy, read back from its record, or `default`."""
    record = call.get("retry")
    if record is None:
        return default
    return RetryPolicy(
        record["max_attempts"],
        record["base_delay"],
        record["max_delay"],
        record["multiplier"],
        retry_on=[_exception_class(path) for path in record["retry_on"]],
    )


def _workers_policy(max_attempts: int | None, retry: RetryPolicy | None) -> RetryPolicy:
    if retry is None:
        limit = DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts
        return default_retry(positive_int("max_attempts", limit))
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
    if max_attempts is not None and max_attempts != retry.max_attempts:
        raise ValueError(
            f"max_attempts={max_attempts} and retry.max_attempts={retry.max_attempts} "
            "disagree: give one of them"
        )
    return retry


def _error_text(failure: BaseException) -> str:
    """Return "Type: message" and the traceback; never raises, whatever the exception."""
    try:
        trace = "".join(traceback.format_exception(failure))
    except BaseException:
        return describe(failure)
    return f"{describe(failure)}\n{trace}"


def _storable(text: str) -> str:
    """Return `text` with what SQLite cannot store as text (lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _attempts(count: int) -> str:
    return "1 attempt" if count == 1 else f"{count} attempts"


def _path_of(value: object) -> str | None:
    """Return the "module:qualified.name" that imports `value` back, or None if none does."""
    path = f"{getattr(value, '__module__', None)}:{getattr(value, '__qualname__', None)}"
    try:
        found = _resolve(path)
    except Exception:  # not importable, or not by this path
        return None
    return path if found is value else None


def _exception_class(path: str) -> type[BaseException]:
    kind = _resolve(path)
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        raise TypeError(f"retry_on of a task names {path!r}, which is not an exception class")
    return kind


def _resolve(path: str) -> Callable[..., Any]:
    module_name, _, qualified = path.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in qualified.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise TypeError(f"task target {path!r} is not callable")
    return value  # type: ignore[no-any-return]
