"""Every blocking wait in the extras ends: it passes a timeout, or `BOUNDED` says why it ends.

The rule the README promises ("no user code, however it fails, can make a run hang")
comes down to this one: a wait that nothing can end hangs whoever waits. The waits are
found in the source (the `ast`) of the extras' folders, so a new one cannot slip in:

- `.wait(`, `.join(`, `.result(`, `.acquire(` on any object (events, conditions,
  barriers, threads, futures, locks), and `concurrent.futures.wait(...)`;
- `.get(` on queues (no positional argument: `dict.get(key)` is not a wait) and the
  package's `.get_many(`;
- `.shutdown(wait=True)` of an executor and `server_close()` of a threading server,
  which join threads or processes and take no timeout at all.

A call is bounded when it passes a timeout (positionally or as `timeout=`, and not
None) or does not block (`block=False`, `blocking=False`). Awaited calls are not
counted: a coroutine's wait ends when its task is cancelled, which is how asyncio
stops. Any other wait must be listed in `BOUNDED` with the reason it ends: a stop
signal that wakes it, a future known to be done, or user code that the caller waits
for by design (a thread cannot be killed). The list is keyed by file, function and
the call as written, not by line, and an entry that no longer matches a call fails too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pipeline

PACKAGE = Path(pipeline.__file__).resolve().parent
FOLDERS = ("aio", "executors", "queues", "graph", "stages", "observe", "resilience", "native")
WAITS = {"wait", "join", "result", "acquire", "get", "get_many", "shutdown", "server_close"}

# (file in the package, enclosing function, the call as written): why the wait ends.
BOUNDED: dict[tuple[str, str, str], str] = {
    ("aio/stage.py", "AsyncStage._run_concurrently", "task.result()"): (
        "an asyncio task's result() never blocks; every task was gathered just before"
    ),
    ("executors/executor.py", "WindowedStage.process_batch", "future.result()"): (
        "in a run the loop above waited for the future, so it is done; outside a run "
        "there is no stop signal to watch and the caller waits for its own call"
    ),
    ("executors/process.py", "ProcessStage._everywhere", "future.result()"): (
        "after the loop just above, which ends once every future is done (or kills the "
        "pool and raises once a stop has waited stop_timeout)"
    ),
    ("executors/dask_cluster.py", "_WorkerRuns.stop", "ended.wait()"): (
        "awaited inside asyncio.wait_for(..., timeout), the stop's stop_timeout"
    ),
    ("aio/loop.py", "LoopThread.stop", "self._thread.join()"): (
        "after the loop on `ended` just above: the loop thread has left its loop"
    ),
    ("aio/stage.py", "AsyncStage._wait", "future.result()"): (
        "after the loop just above, which ends once the future is done (or raises once "
        "the loop thread ended or a stop waited stop_timeout)"
    ),
    ("queues/tasks.py", "TaskWorkers.close", "self._renewer.join()"): (
        "the renewer waits on _stopping, set just above, between renewals, and a "
        "renewal is one SQLite transaction bounded by the queue's timeout"
    ),
    ("observe/dashboard.py", "Dashboard.close", "server.server_close()"): (
        "it joins the request threads, which run no user code (panels are read in "
        "threads of their own) and whose reads are bounded by request_timeout"
    ),
    ("observe/dashboard.py", "_PanelReader.join", "self._thread.join()"): (
        "after the loop on _ended just above: the panel thread has left its loop"
    ),
    ("observe/dashboard.py", "_PanelReader._run", "self._changed.wait()"): (
        "a loop re-checking _stopping and the readings asked for; notified by every "
        "request and by stop()"
    ),
    ("queues/tasks.py", "TaskWorkers.close", "thread.join()"): (
        "after shutdown(immediate=True) each worker returns once its current task "
        "returns: the task is user code, and a thread cannot be killed"
    ),
    ("graph/tasks.py", "_TaskRun.execute", "thread.join()"): (
        "the thread set `done` as its last act, waited for just above in slices"
    ),
    ("graph/tasks.py", "_TaskRun._take_and_run", "self.changed.wait()"): (
        "a loop re-checking `ready` and `stopping`; notified on every task that "
        "settles and by the stop"
    ),
    ("graph/forkmerge.py", "ForkMergeStage.process_batch", "future.result()"): (
        "the stage's own work, run in its helper threads: waiting for it is waiting for "
        "process_batch, as every thread stage does"
    ),
    ("graph/forkmerge.py", "ForkMergeStage.teardown", "pool.shutdown(wait=True)"): (
        "after the worker's last batch: its helper threads hold no work any more"
    ),
    ("observe/dashboard.py", "Dashboard.close", "thread.join()"): (
        "server.shutdown() just above returns once serve_forever, the thread's only "
        "work, has returned"
    ),
    ("observe/sampler.py", "_Sampler._wait_ended", "self._thread.join()"): (
        "after the loop on _ended just above: the monitor thread has left its loop"
    ),
    ("observe/sampler.py", "_Sampler._sample_until_stopped", "self._changed.wait()"): (
        "a loop re-checking _stopping and the subscribers; notified by every "
        "subscription and by the stop"
    ),
    ("resilience/timeout.py", "TimeLimit.call", "future.result()"): (
        "the future came back in `done` from the wait with a timeout just above"
    ),
    ("resilience/timeout.py", "TimeLimit.start", "helper.submit(self._setup).result()"): (
        "the stage's own setup(), run in its helper thread: waited for as a thread "
        "stage waits for its setup()"
    ),
    ("resilience/timeout.py", "TimeLimit.start", "helper.shutdown(wait=True)"): (
        "the helper's only task, the setup just waited for, has ended"
    ),
    ("resilience/timeout.py", "TimeLimit.close", "teardown.result()"): (
        "each helper was shut down with wait=True just above: its futures are done"
    ),
    ("resilience/timeout.py", "TimeLimit.close", "self._helper.shutdown(wait=True)"): (
        "the helper runs no overrunning call (those helpers are in _abandoned): only "
        "the stage's own teardown, waited for as a thread stage waits for it"
    ),
    (
        "resilience/timeout.py",
        "TimeLimit.start",
        "wait([self._abandoned[0][1]], return_when=FIRST_COMPLETED)",
    ): (
        "at max_overrunning the worker waits for the oldest overrunning call to return, "
        "as the module documents; a stop joins every helper thread anyway"
    ),
    ("resilience/timeout.py", "TimeLimit.close", "helper.shutdown(wait=True)"): (
        "joins the abandoned helpers once their call has returned: documented (no thread "
        "outlives its run; a call that never returns holds the run, a thread cannot be killed)"
    ),
    ("resilience/timeout.py", "TimeLimit._join_finished", "helper.shutdown(wait=True)"): (
        "only helpers whose teardown future is done are shut down here"
    ),
}


@dataclass(frozen=True)
class Wait:
    """A blocking call found in the source, and where."""

    path: str  # relative to the package
    line: int
    function: str
    call: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.path, self.function, self.call)


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _is_false(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _timeout_given(call: ast.Call, position: int) -> bool:
    """Whether `timeout=` or the positional argument at `position` is given, and not None."""
    timeout = _keyword(call, "timeout")
    if timeout is not None:
        return not _is_none(timeout)
    return len(call.args) > position and not _is_none(call.args[position])


def blocks_unbounded(call: ast.Call, futures_wait: set[str]) -> bool:
    """Whether `call` is a blocking wait that passes no timeout."""
    function = call.func
    if isinstance(function, ast.Name) and function.id in futures_wait:
        return not _timeout_given(call, 1)  # concurrent.futures.wait(fs, timeout)
    if not isinstance(function, ast.Attribute) or function.attr not in WAITS:
        return False
    name, receiver = function.attr, function.value
    if name == "wait" and ast.unparse(receiver) in {"futures", "concurrent.futures"}:
        return not _timeout_given(call, 1)
    if name == "join":
        text = isinstance(receiver, ast.Constant) or ast.unparse(receiver).endswith("path")
        return not text and not _timeout_given(call, 0)
    if name in ("wait", "result"):
        return not _timeout_given(call, 0)
    if name == "acquire":
        blocking = _keyword(call, "blocking")
        if (blocking is not None and _is_false(blocking)) or (
            call.args and _is_false(call.args[0])
        ):
            return False
        return not _timeout_given(call, 1)
    if name in ("get", "get_many"):
        if name == "get" and call.args:
            return False  # dict.get(key) and the like
        block = _keyword(call, "block")
        position = 0 if name == "get" else 1
        if block is None and len(call.args) > position:
            block = call.args[position]
        if block is not None and _is_false(block):
            return False
        return not _timeout_given(call, position + 1)
    if name == "shutdown":  # an executor's: it takes no timeout
        wait = _keyword(call, "wait")
        return wait is not None and not _is_false(wait)
    return name == "server_close"  # a threading server's: joins its request threads


def waits_in(path: Path) -> list[Wait]:
    """Return the unbounded blocking waits in one file, with their enclosing function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    futures_wait = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "concurrent.futures"
        for alias in node.names
        if alias.name == "wait"
    }
    awaited = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Await)}
    found: list[Wait] = []
    relative = path.relative_to(PACKAGE).as_posix()

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [*scope, child.name]
            if (
                isinstance(child, ast.Call)
                and id(child) not in awaited
                and blocks_unbounded(child, futures_wait)
            ):
                found.append(Wait(relative, child.lineno, ".".join(scope), ast.unparse(child)))
            visit(child, inner)

    visit(tree, [])
    return found


def all_waits() -> list[Wait]:
    return [
        wait
        for folder in FOLDERS
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for wait in waits_in(path)
    ]


def test_every_wait_in_the_extras_passes_a_timeout_or_says_why_it_ends() -> None:
    unexplained = [wait for wait in all_waits() if wait.key not in BOUNDED]
    listing = "\n".join(
        f"src/pipeline/{wait.path}:{wait.line}: {wait.call} (in {wait.function})"
        for wait in unexplained
    )
    assert not unexplained, (
        f"{len(unexplained)} waits without a timeout; bound each (a loop on a stop signal "
        f"or a deadline), or add it to BOUNDED with the reason it ends:\n{listing}"
    )


def test_every_entry_of_the_list_names_a_wait_that_exists() -> None:
    found = {wait.key for wait in all_waits()}
    stale = sorted(key for key in BOUNDED if key not in found)
    assert not stale, f"entries of BOUNDED that match no wait any more: {stale}"


def test_the_check_tells_bounded_waits_from_unbounded_ones() -> None:
    source = (
        "from concurrent.futures import wait\n"
        "def f(event, thread, future, lock, queue, pool, mapping, futures, server):\n"
        "    event.wait(1.0); thread.join(timeout=2); future.result(3)\n"
        "    lock.acquire(blocking=False); queue.get(block=False); queue.get_many(4, False)\n"
        "    wait(futures, timeout=5); pool.shutdown(wait=False); mapping.get('key')\n"
        "    ', '.join(['a']); queue.get(timeout=6)\n"
        "    event.wait(); thread.join(); future.result(timeout=None); lock.acquire()\n"
        "    queue.get(); queue.get_many(4); wait(futures); pool.shutdown(wait=True)\n"
        "    server.server_close()\n"
        "async def g(event):\n"
        "    await event.wait()\n"
    )
    tree = ast.parse(source)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    awaited = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Await)}
    unbounded = [
        ast.unparse(call)
        for call in calls
        if id(call) not in awaited and blocks_unbounded(call, {"wait"})
    ]
    assert sorted(unbounded) == sorted(
        [
            *("event.wait()", "thread.join()", "future.result(timeout=None)"),
            *("lock.acquire()", "queue.get()", "queue.get_many(4)", "wait(futures)"),
            *("pool.shutdown(wait=True)", "server.server_close()"),
        ]
    )
