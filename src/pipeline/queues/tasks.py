"""A task queue over a durable queue: callables by import path, run by worker threads.

`TaskQueue(path).enqueue("package.module:function", *args, **kwargs)` stores a task
(the import path and the arguments, JSON by default) and returns its id.
`TaskWorkers(path, threads=2)` runs tasks in threads: each leases a task, imports and
calls the target, and stores its result (or its error) and acks the task in one
transaction, so a stored result is never lost nor stored twice. A task that raises is
retried until `max_attempts`, then its error is stored and it goes to the dead-letter
table. `TaskQueue.result(task_id, timeout)` waits for the result.

What is guaranteed: a task runs at least once (a worker killed mid-task leaves it
leased; it runs again once the lease lapses or the file is reopened) and its result is
stored exactly once. Tasks with side effects outside the queue file must tolerate
running twice.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from pipeline._checks import non_empty_str, positive_int
from pipeline.errors import ShutDown, describe
from pipeline.queues.codecs import JSON, Codec
from pipeline.queues.durable import DurableQueue, Leased
from pipeline.queues.errors import TaskFailed

__all__ = ["TaskQueue", "TaskWorkers", "import_path"]

logger = logging.getLogger(__name__)

DEFAULT_NAME = "tasks"


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
    path = f"{getattr(target, '__module__', None)}:{getattr(target, '__qualname__', None)}"
    try:
        found = _resolve(path)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"a task target must be importable by name; {target!r} is not") from exc
    if found is not target:
        raise ValueError(f"a task target must be importable by name; {path!r} names another object")
    return path


class TaskQueue:
    """Open (or create) the task queue `name` in the SQLite file at `path`.

    Args:
        path: the queue file (it may hold other queues too).
        name: the queue's name in the file.
        codec: how arguments and results become bytes (JSON by default).
        max_attempts: runs of a failing task before its error is final.
        synchronous: "NORMAL" or "FULL" (see `DurableQueue`).
        poll_interval: how often `result()` looks for results stored by other processes.

    Raises:
        Whatever `DurableQueue` raises for a bad file.
    """

    def __init__(
        self,
        path: str,
        name: str = DEFAULT_NAME,
        *,
        codec: Codec = JSON,
        max_attempts: int = 3,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        poll_interval: float = 0.05,
    ) -> None:
        self.queue: DurableQueue[dict[str, Any]] = DurableQueue(
            path,
            non_empty_str("name", name),
            codec=codec,
            max_attempts=positive_int("max_attempts", max_attempts),
            synchronous=synchronous,
            poll_interval=poll_interval,
        )

    def enqueue(self, target: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> int:
        """Store one call of `target(*args, **kwargs)` and return its task id; durable on return.

        Raises:
            ValueError: `target` is not importable by name.
            CodecError: the arguments cannot be encoded; nothing was stored.
        """
        return self._store([{"target": import_path(target), "args": list(args), "kwargs": kwargs}])[
            0
        ]

    def enqueue_many(
        self,
        target: str | Callable[..., Any],
        arguments: Iterable[Sequence[Any]],
        *,
        priority: int | None = None,
    ) -> list[int]:
        """Store one call of `target(*args)` per tuple in `arguments`, in one transaction.

        Returns the task ids in order. Lower `priority` runs first.

        Raises:
            ValueError: `target` is not importable by name.
            CodecError: some arguments cannot be encoded; nothing was stored.
        """
        path = import_path(target)
        return self._store(
            [{"target": path, "args": list(args), "kwargs": {}} for args in arguments], priority
        )

    def result(self, task_id: int, timeout: float | None = None) -> Any:
        """Wait for task `task_id` to finish and return what it returned.

        Blocks until the result is stored (by a worker of any process), or `timeout`.

        Raises:
            TaskFailed: the task failed for good; the message holds its error.
            KeyError: no task has this id.
            TimeoutError: not finished in time.
        """
        queue = self.queue
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # One statement, so one snapshot: a worker's commit between two separate
            # reads could make a finishing task look unknown.
            ok, value, error, dead_error, attempts, pending = (
                queue.connection()
                .execute(
                    "SELECT r.ok, r.value, r.error, d.error, d.attempts,"
                    " EXISTS (SELECT 1 FROM items WHERE id = ?1) FROM (SELECT 1)"
                    " LEFT JOIN results r ON r.task_id = ?1 LEFT JOIN dead d ON d.id = ?1",
                    (task_id,),
                )
                .fetchone()
            )
            if ok is not None:
                if ok:
                    return queue.codec.decode(value)
                raise TaskFailed(f"task {task_id} failed: {error}")
            if dead_error is not None:
                raise TaskFailed(
                    f"task {task_id} was given up after {attempts} attempts: {dead_error}"
                )
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
    task is done, and joins them. Each worker has its own connection.

    Args:
        path, name, codec, max_attempts, synchronous: as for `TaskQueue`.
        threads: how many tasks run at once.
        lease_seconds: how long a task may run before another worker may take it over.
    """

    def __init__(
        self,
        path: str,
        name: str = DEFAULT_NAME,
        *,
        threads: int = 2,
        codec: Codec = JSON,
        max_attempts: int = 3,
        lease_seconds: float = 300.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        self.queue: DurableQueue[dict[str, Any]] = DurableQueue(
            path,
            non_empty_str("name", name),
            codec=codec,
            max_attempts=positive_int("max_attempts", max_attempts),
            visibility_timeout=lease_seconds,
            synchronous=synchronous,
        )
        self._targets: dict[str, Callable[..., Any]] = {}
        # Guarded by _lock: the counts below (read through `finished` and `failed`).
        self._lock = threading.Lock()
        self._finished = 0
        self._failed = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"task-worker-{n}")
            for n in range(positive_int("threads", threads))
        ]
        for thread in self._threads:
            thread.start()

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

    def close(self) -> None:
        """Stop taking tasks, wait for the running ones, join the threads, close the file."""
        self.queue.shutdown(immediate=True)
        for thread in self._threads:
            thread.join()
        self.queue.close()

    def __enter__(self) -> TaskWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _work(self) -> None:
        """One worker thread: lease a task, run it, store the outcome; until shut down."""
        while True:
            try:
                (task,) = self.queue.get_many(1)
            except ShutDown:
                return
            except Exception:  # a corrupt row (kept as a dead letter), a full disk
                logger.exception("a task worker could not lease a task")
                self.queue.wait_for_change(self.queue.poll_interval)
                continue
            self._run(task)

    def _run(self, task: Leased[dict[str, Any]]) -> None:
        call = task.item
        try:
            target = self._target(call["target"])
            value = target(*call["args"], **call["kwargs"])
            encoded = self.queue.codec.encode(value)
        except BaseException as exc:
            error = f"{describe(exc)}\n{''.join(traceback.format_exception(exc))}"
            self._fail(task, error)
            return
        with self.queue.transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO results (task_id, queue, ok, value, error, finished)"
                " VALUES (?, ?, 1, ?, NULL, ?)",
                (task.id, self.queue.name, encoded, time.time()),
            )
            self.queue.ack_in(connection, [task])
        with self._lock:
            self._finished += 1

    def _fail(self, task: Leased[dict[str, Any]], error: str) -> None:
        limit = self.queue.max_attempts
        with self._lock:
            self._failed += 1
        if limit is not None and task.attempts < limit:
            self.queue.nack(task, error)
            return
        with self.queue.transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO results (task_id, queue, ok, value, error, finished)"
                " VALUES (?, ?, 0, NULL, ?, ?)",
                (task.id, self.queue.name, error, time.time()),
            )
            self.queue.nack_in(connection, task, error)  # the last attempt: to dead letters
        with self._lock:
            self._finished += 1

    def _target(self, path: str) -> Callable[..., Any]:
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = _resolve(path)
        return target


def _resolve(path: str) -> Callable[..., Any]:
    module_name, _, qualified = path.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in qualified.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise TypeError(f"task target {path!r} is not callable")
    return value  # type: ignore[no-any-return]
