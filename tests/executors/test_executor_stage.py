"""ExecutorStage: batches on a caller-owned Executor, through a window of futures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
import remote_work
from remote_work import RemoteBoom
from support import WAIT

from pipeline import Pipeline, PipelineClosed, StageError
from pipeline.executors import ExecutorStage, NotPicklable, RemoteError, RemoteTraceback


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """One pool for the module, started here so that its helper threads predate every test."""
    with ProcessPoolExecutor(2) as executor:
        executor.submit(remote_work.square, 1).result(timeout=WAIT)
        yield executor


def test_outputs_come_in_input_order(pool: ProcessPoolExecutor) -> None:
    assert Pipeline(ExecutorStage(remote_work.nap, pool)).run(range(60)) == list(range(60))


def test_unordered_outputs_are_the_same_items(pool: ProcessPoolExecutor) -> None:
    outputs = Pipeline(ExecutorStage(remote_work.nap, pool), ordered=False).run(range(60))
    assert sorted(outputs) == list(range(60))


def test_the_default_window_is_four_batches_per_executor_worker(pool: ProcessPoolExecutor) -> None:
    stage = ExecutorStage(remote_work.square, pool)
    assert stage.max_inflight == stage.workers == 8
    assert stage.name == "square"


def test_no_more_than_max_inflight_batches_are_submitted_at_once() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def count(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        threading.Event().wait(0.001)
        with lock:
            running -= 1
        return item

    with ThreadPoolExecutor(8) as executor:
        stage = ExecutorStage(count, executor, max_inflight=3)
        assert Pipeline(stage, batch_size=1).run(range(200)) == list(range(200))
    assert 1 <= most <= 3


def test_items_in_flight_stay_under_the_bound_with_a_slow_consumer(
    pool: ProcessPoolExecutor,
) -> None:
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for item in range(400):
            pulled += 1
            yield item

    pipeline = Pipeline(
        ExecutorStage(remote_work.square, pool, max_inflight=3), queue_size=8, batch_size=4
    )
    # Each window slot (a worker thread) holds one batch, as a thread stage's worker does.
    bound = pipeline.max_items_in_flight
    assert bound == 4 + 2 * 8 + (3 + 4 * 3) * 4 + 4
    slow_down = threading.Event()
    most_in_flight = 0
    for consumed, _ in enumerate(pipeline.stream(source()), start=1):
        slow_down.wait(0.0005)
        most_in_flight = max(most_in_flight, pulled - consumed)
        assert pulled - consumed <= bound
    assert pulled == 400
    assert most_in_flight > 0


def test_a_remote_failure_names_the_item_and_chains_the_remote_traceback(
    pool: ProcessPoolExecutor,
) -> None:
    with pytest.raises(StageError) as caught:
        Pipeline(ExecutorStage(remote_work.fail_on_seven, pool)).run(range(20))
    error = caught.value
    assert str(error) == "stage 'fail_on_seven' failed on item 7: RemoteBoom: no 7"
    assert type(error.__cause__) is RemoteBoom
    remote = error.__cause__.__cause__
    assert isinstance(remote, RemoteTraceback)
    assert 'raise RemoteBoom(f"no {item}")' in str(remote)
    assert "in fail_on_seven" in str(remote)


def test_the_outputs_before_a_remote_failure_are_delivered_first(
    pool: ProcessPoolExecutor,
) -> None:
    outputs: list[int] = []
    stage = ExecutorStage(remote_work.fail_on_seven, pool)
    with pytest.raises(StageError, match="on item 7"):
        outputs.extend(Pipeline(stage, batch_size=16).stream(range(20)))
    assert outputs == list(range(7))


def test_an_exception_that_cannot_be_rebuilt_comes_back_as_a_remote_error(
    pool: ProcessPoolExecutor,
) -> None:
    with pytest.raises(StageError) as caught:
        Pipeline(ExecutorStage(remote_work.raise_unrebuildable, pool)).run([1])
    assert type(caught.value.__cause__) is RemoteError
    assert str(caught.value.__cause__).startswith("NeedsTwoArguments: odd (could not be sent back")
    # The pool survived it (python/cpython#103061 breaks it otherwise).
    assert pool.submit(remote_work.square, 3).result(timeout=WAIT) == 9


def test_a_killed_worker_process_is_a_stage_error_not_a_hang() -> None:
    with ProcessPoolExecutor(2) as executor:
        stage = ExecutorStage(remote_work.kill_own_process_on_three, executor)
        with pytest.raises(StageError) as caught:
            Pipeline(stage).run(range(10))
    assert isinstance(caught.value.__cause__, BrokenProcessPool)
    assert str(caught.value).startswith(
        "stage 'kill_own_process_on_three' failed in process_batch(): BrokenProcessPool: "
    )


def test_an_item_that_does_not_pickle_is_named(pool: ProcessPoolExecutor) -> None:
    items: list[Any] = [threading.Lock()]
    with pytest.raises(StageError) as caught:
        Pipeline(ExecutorStage(remote_work.square, pool), batch_size=1).run(items)
    cause = caught.value.__cause__
    assert isinstance(cause, NotPicklable)
    assert str(cause) == (
        "stage 'square': item 0 of the batch (lock) cannot be pickled: TypeError: cannot pickle "
        "'_thread.lock' object; a lock or event belongs to one process: create it in setup(), "
        "in the worker"
    )


def test_a_lambda_is_named_as_the_function_that_does_not_pickle(
    pool: ProcessPoolExecutor,
) -> None:
    with pytest.raises(StageError) as caught:
        Pipeline(ExecutorStage[int, int](lambda item: item, pool, name="inline")).run([1])
    message = str(caught.value.__cause__)
    assert message.startswith("stage 'inline': the function (function) cannot be pickled: ")
    assert message.endswith(
        "; functions pickle by their importable name: define it at the top level of a module"
    )


class CountingExecutor(ThreadPoolExecutor):
    """One thread; sets `submitted` once `expected` futures were handed out, and
    `cancelled` once all but the first of them were cancelled."""

    def __init__(self, expected: int) -> None:
        super().__init__(1)
        self.futures: list[Future[Any]] = []
        self.expected = expected
        self.submitted = threading.Event()
        self.cancelled = threading.Event()
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        with self._lock:
            self.futures.append(future)
            if len(self.futures) == self.expected:
                self.submitted.set()
        future.add_done_callback(self._count_cancelled)
        return future

    def _count_cancelled(self, _: Future[Any]) -> None:
        with self._lock:
            if sum(future.cancelled() for future in self.futures) == self.expected - 1:
                self.cancelled.set()


def test_a_stop_cancels_the_pending_batches_and_leaves_the_callers_executor_running() -> None:
    release = threading.Event()
    started: list[int] = []

    def hold_the_first(item: int) -> int:
        started.append(item)
        release.wait(WAIT)
        return item

    with CountingExecutor(expected=4) as executor:
        stage = ExecutorStage(hold_the_first, executor, max_inflight=4)
        pipeline = Pipeline(stage, batch_size=1)
        outcome: list[BaseException] = []

        def consume() -> None:
            try:
                list(pipeline.stream(range(100)))
            except BaseException as exc:
                outcome.append(exc)

        consumer = threading.Thread(target=consume)
        consumer.start()
        assert executor.submitted.wait(WAIT)
        closer = threading.Thread(target=pipeline.close)
        closer.start()
        # The three queued batches are cancelled while the first one still runs.
        assert executor.cancelled.wait(WAIT)
        release.set()
        closer.join(WAIT)
        consumer.join(WAIT)
        assert len(started) == 1
        assert not executor.futures[0].cancelled()
        assert len(outcome) == 1
        assert isinstance(outcome[0], PipelineClosed)
        assert executor.submit(remote_work.square, 4).result(timeout=WAIT) == 16


def test_a_stop_gives_up_a_task_still_running_after_stop_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    running = threading.Event()

    def never_ends_on_one(item: int) -> int:
        if item == 1:
            running.set()
            release.wait(WAIT)  # stands for a task that never returns
        return item

    with ThreadPoolExecutor(2) as executor:
        stage = ExecutorStage(never_ends_on_one, executor, max_inflight=2, stop_timeout=0.1)
        outputs = Pipeline(stage, batch_size=1).stream([0, 1, 2])
        assert next(outputs) == 0
        assert running.wait(WAIT)
        outputs.close()  # returns though the task of item 1 is still running
        gave_up = not release.is_set()
        release.set()
    assert gave_up
    assert "a task was still running 0.1 s after the run stopped" in caplog.text


def test_bad_arguments_are_named(pool: ProcessPoolExecutor) -> None:
    with pytest.raises(TypeError, match=r"^function must be callable, got int$"):
        ExecutorStage(3, pool)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^executor must be a concurrent.futures.Executor, got str$"
    ):
        ExecutorStage(remote_work.square, "pool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_inflight must be >= 1, got 0$"):
        ExecutorStage(remote_work.square, pool, max_inflight=0)
    with pytest.raises(ValueError, match=r"^stop_timeout must be > 0 seconds and finite, got inf$"):
        ExecutorStage(remote_work.square, pool, stop_timeout=float("inf"))
