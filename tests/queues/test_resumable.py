"""Tests for run_resumable: the exactly-once same-file sink, other sinks, failures, SIGKILL."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support import sigint_setting

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.queues.durable import DurableQueue
from pipeline.queues.resumable import ResumableRun, run_resumable
from pipeline.stages.functions import FlatMapFunctionStage, FunctionStage, PredicateStage

SRC = str(Path(__file__).resolve().parents[2] / "src")


def twice(n: int) -> list[list[int]]:
    return [[n, 0], [n, 1]]


def test_a_same_file_sink_gets_each_batch_outputs_with_the_ack(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with DurableQueue[int](path, "in") as source, DurableQueue[Any](path, "out") as sink:
        source.put_many(list(range(100)))
        chain = PredicateStage[int](lambda n: n % 3 != 0) >> FlatMapFunctionStage(twice)
        progress: list[ResumableRun] = []
        done = run_resumable(
            Pipeline(chain), source, sink, batch_size=30, on_commit=progress.append
        )
        assert done == ResumableRun(batches=4, items_in=100, items_out=132, exactly_once=True)
        assert [run.items_in for run in progress] == [30, 60, 90, 100]
        assert source.qsize() == 0
        stored = [entry.item for entry in sink.get_many(1000)]
    assert stored == [pair for n in range(100) if n % 3 for pair in twice(n)]


def test_another_sink_is_called_before_the_ack(tmp_path: Path) -> None:
    calls: list[list[int]] = []
    with DurableQueue[int](tmp_path / "in.db") as source:
        source.put_many(list(range(10)))

        def sink(outputs: list[int]) -> None:
            assert source.counts().leased == len(outputs)  # not acked yet
            calls.append(outputs)

        done = run_resumable(Pipeline(FunctionStage[int, int](abs)), source, sink, batch_size=4)
        assert not done.exactly_once
        assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        with DurableQueue[int](tmp_path / "out.db") as other:
            source.put_many([5])
            assert (
                run_resumable(Pipeline(FunctionStage[int, int](abs)), source, other).items_out == 1
            )
            assert not run_resumable(Pipeline(FunctionStage[int, int](abs)), source, other).batches


class FailsOn(PipelineStage[int, int]):
    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad = bad

    def process(self, item: int) -> int:
        if item == self.bad:
            raise ValueError(f"bad item {item}")
        return item


def test_a_failing_batch_is_nacked_and_the_committed_ones_stay(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with (
        DurableQueue[int](path, "in", max_attempts=2) as source,
        DurableQueue[int](path, "out") as sink,
    ):
        source.put_many(list(range(10)))
        for _ in range(2):
            with pytest.raises(StageError, match="bad item 5"):
                run_resumable(Pipeline(FailsOn(5)), source, sink, batch_size=4)
        assert sink.qsize() == 4  # the first batch committed before the failure
        assert run_resumable(Pipeline(FailsOn(5)), source, sink, batch_size=4).items_in == 2
        (dead, *_) = source.dead_letters()
        assert "bad item 5" in dead.error
        assert len(source.dead_letters()) == 4  # the failing batch, after max_attempts runs
        assert sorted(entry.item for entry in sink.get_many(100)) == [0, 1, 2, 3, 8, 9]


CHILD = """
import sys
sys.path.insert(0, {src!r})
from pipeline import Pipeline
from pipeline.queues.durable import DurableQueue
from pipeline.queues.resumable import run_resumable
from pipeline.stages.functions import FlatMapFunctionStage
source = DurableQueue({path!r}, "in", max_attempts=None)
sink = DurableQueue({path!r}, "out")
pipeline = Pipeline(FlatMapFunctionStage(lambda n: [[n, 0], [n, 1]]), batch_size=16)
run_resumable(pipeline, source, sink, batch_size={batch},
              on_commit=lambda run: print(run.items_in, flush=True))
print("finished", flush=True)
"""


def run_child(path: Path, batch: int, kill_after_lines: int | None, delay: float) -> bool:
    """Run the consumer; kill it with SIGKILL after some commits; return True if it finished."""
    script = CHILD.format(src=SRC, path=str(path), batch=batch)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    try:
        for lines, line in enumerate(child.stdout, start=1):
            if line == "finished\n":
                break
            if kill_after_lines is not None and lines >= kill_after_lines:
                # The kill lands at a random point of the next batch's work or commit.
                threading.Event().wait(delay)
                child.send_signal(signal.SIGKILL)
                break
        returncode = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        child.stdout.close()
        assert child.stderr is not None
        errors = child.stderr.read()
        child.stderr.close()
    if returncode == -signal.SIGKILL:
        return False
    assert (returncode, errors) == (0, "")
    return True


def test_sigkilled_at_random_moments_then_resumed_nothing_is_lost_or_duplicated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.db"
    items = 3000
    with DurableQueue[int](path, "in") as source:
        source.put_many(list(range(items)))
    rng = random.Random(12)
    kills = 0
    for _ in range(6):
        if not run_child(path, 40, kill_after_lines=rng.randint(1, 4), delay=rng.uniform(0, 0.01)):
            kills += 1
    assert run_child(path, 40, kill_after_lines=None, delay=0)
    assert kills >= 4
    with DurableQueue[int](path, "in") as source, DurableQueue[Any](path, "out") as sink:
        assert source.qsize() == 0
        assert source.dead_letters() == []
        stored = Counter(tuple(entry.item) for entry in sink.get_many(10 * items))
    assert len(stored) == 2 * items  # nothing lost
    assert set(stored.values()) == {1}  # nothing duplicated


def test_with_wait_it_follows_new_inputs_until_the_source_is_shut_down(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with DurableQueue[int](path, "in") as source, DurableQueue[int](path, "out") as sink:
        committed = threading.Semaphore(0)
        runs: list[ResumableRun] = []

        def follow() -> None:
            runs.append(
                run_resumable(
                    Pipeline(FunctionStage[int, int](abs)),
                    source,
                    sink,
                    wait=True,
                    on_commit=lambda run: committed.release(),
                )
            )

        thread = threading.Thread(target=follow)
        thread.start()
        for n in range(3):
            source.put(-n)  # wakes the waiting run at once: same object
            assert committed.acquire(timeout=10)
        source.shutdown()
        thread.join(10)
        assert runs == [ResumableRun(batches=3, items_in=3, items_out=3, exactly_once=True)]
        assert sorted(entry.item for entry in sink.get_many(10)) == [0, 1, 2]


STUCK_CHILD = """
import sys, threading
sys.path.insert(0, {src!r})
from pipeline import Pipeline
from pipeline.queues.durable import DurableQueue
from pipeline.queues.resumable import run_resumable
from pipeline.stages.functions import FunctionStage

def work(n):
    if {stuck!r}:
        print("working", flush=True)
        threading.Event().wait(60)  # killed here, in the middle of the first batch
    return n * 10

source = DurableQueue({path!r}, "in")  # max_attempts=5, the default
sink = DurableQueue({path!r}, "out")
run_resumable(Pipeline(FunctionStage(work)), source, sink, batch_size=10)
print("finished", flush=True)
"""


def test_a_consumer_killed_again_and_again_in_one_batch_gives_up_on_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kills.db"
    with DurableQueue[int](path, "in") as source:
        source.put_many(list(range(30)))
    for _ in range(7):  # more kills than max_attempts
        child = subprocess.Popen(
            [sys.executable, "-c", STUCK_CHILD.format(src=SRC, path=str(path), stuck=True)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        try:
            assert child.stdout.readline() == "working\n"
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
            child.stdout.close()
    finished = subprocess.run(
        [sys.executable, "-c", STUCK_CHILD.format(src=SRC, path=str(path), stuck=False)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (finished.stdout, finished.stderr) == ("finished\n", "")
    with DurableQueue[int](path, "in") as source, DurableQueue[int](path, "out") as sink:
        assert source.dead_letters() == []
        assert source.qsize() == 0
        assert sorted(entry.item for entry in sink.get_many(100)) == [n * 10 for n in range(30)]


def test_a_failing_batch_whose_leases_lapsed_still_raises_the_stage_error(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with DurableQueue[int](path, "in") as source, DurableQueue[int](path, "out") as sink:
        source.put_many([1, 2, 3])

        def slow_then_failing(n: int) -> int:
            if n == 3:  # so slow that the batch's leases lapse, then it fails
                source.connection().execute("UPDATE items SET lease_expires = 0")
                source.release_expired()
                raise ValueError("bad item 3")
            return n

        with pytest.raises(StageError, match="bad item 3"):
            run_resumable(Pipeline(FunctionStage(slow_then_failing)), source, sink)
        assert source.counts().ready == 3  # back, by the lapse


def test_a_bad_source_sink_or_callback_is_refused_before_anything_is_leased(
    tmp_path: Path,
) -> None:
    with DurableQueue[int](tmp_path / "in.db") as source:
        source.put_many([1, 2])
        pipeline = Pipeline(FunctionStage[int, int](abs))
        with pytest.raises(TypeError, match="source must be a DurableQueue, got list"):
            run_resumable(pipeline, [1, 2], print)  # type: ignore[arg-type]
        with pytest.raises(
            TypeError,
            match="sink must be a DurableQueue or a function taking each batch's outputs, got str",
        ):
            run_resumable(pipeline, source, "out.db")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="on_commit must be callable or None, got int"):
            run_resumable(pipeline, source, print, on_commit=1)  # type: ignore[arg-type]
        assert source.counts().ready == 2  # nothing leased, nothing run


class PressedAfterClaims(DurableQueue[int]):
    """A source whose user presses Ctrl-C just as a claim returns (a real SIGINT)."""

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> Any:
        leased = super().get_many(max_items, block, timeout)
        signal.raise_signal(signal.SIGINT)
        return leased


class PressedWhileReleasing(DurableQueue[int]):
    """A source whose user presses Ctrl-C again while a stopped batch is given back."""

    def release(self, leased: Any) -> None:
        signal.raise_signal(signal.SIGINT)
        super().release(leased)


class PressedWhileNacking(DurableQueue[int]):
    """A source whose user presses Ctrl-C while a failed batch is nacked."""

    def nack(self, leased: Any, error: str = "nacked", *, delay: float = 0.0) -> None:
        signal.raise_signal(signal.SIGINT)
        super().nack(leased, error, delay=delay)


def failing(n: int) -> int:
    raise ValueError(f"cannot take {n}")


@pytest.mark.parametrize(
    ("kind", "function"),
    [(PressedAfterClaims, twice), (PressedWhileReleasing, twice), (PressedWhileNacking, failing)],
)
def test_a_ctrl_c_at_any_step_leaves_no_item_leased(
    tmp_path: Path, kind: type[DurableQueue[int]], function: Any
) -> None:
    pressed = threading.Event()
    with sigint_setting(pressed), kind(tmp_path / "run.db", "in") as source:
        source.put_many(list(range(10)))
        if kind is PressedWhileReleasing:  # the first press stops the run in the stage
            function = pressing_once(function)
        with pytest.raises(KeyboardInterrupt):
            run_resumable(Pipeline(FunctionStage(function)), source, lambda _: None)
        counts = source.counts()
    assert pressed.is_set()
    assert (counts.ready, counts.leased) == (10, 0)
    if kind is PressedWhileNacking:  # the batch failed: each item's failure is counted
        with DurableQueue[int](tmp_path / "run.db", "in") as again:
            assert {item.attempts for item in again.get_many(10)} == {2}


def pressing_once(function: Any) -> Any:
    def press_then_run(n: int) -> Any:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        return function(n)

    return press_then_run
