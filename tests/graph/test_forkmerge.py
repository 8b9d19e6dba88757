"""Tests for fork_merge (every function sees every item) and mix_pool (one function per worker)."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest
from support import WAIT, Boom

from pipeline import Pipeline, StageError
from pipeline.graph import fork_merge, mix_pool


def test_fork_merge_merges_every_functions_result_per_item() -> None:
    stage = fork_merge([lambda x: x + 1, lambda x: x * 10, str], lambda a, b, c: (a, b, c))
    outputs = Pipeline(stage, batch_size=7).run(range(30))
    assert outputs == [(item + 1, item * 10, str(item)) for item in range(30)]


def test_fork_merge_runs_the_functions_side_by_side() -> None:
    # Each function waits until both have started: only side-by-side calls get through.
    both = threading.Barrier(2, timeout=WAIT)

    def meet(item: int) -> int:
        both.wait()
        return item

    stage = fork_merge([meet, meet], lambda left, right: left + right)
    assert Pipeline(stage, batch_size=1).run(range(5)) == [0, 2, 4, 6, 8]


def test_fork_merge_reports_the_earliest_failing_item_after_the_outputs_before_it() -> None:
    def fail_on_5(item: int) -> int:
        if item == 5:
            raise Boom("five")
        return item

    def fail_on_3(item: int) -> int:
        if item == 3:
            raise Boom("three")
        return item

    stage = fork_merge([fail_on_5, fail_on_3], lambda a, b: a + b, name="fm")
    pipeline: Pipeline[int, int] = Pipeline(stage, batch_size=16)
    outputs: list[int] = []
    with pytest.raises(StageError, match=r"^stage 'fm' failed on item 3: Boom: three$"):
        outputs.extend(pipeline.stream(range(10)))
    assert outputs == [0, 2, 4]


def test_fork_merge_reports_a_failing_merge_with_its_item() -> None:
    stage = fork_merge([abs], lambda value: 1 // value, name="fm")
    with pytest.raises(StageError, match=r"^stage 'fm' failed on item 0: ZeroDivisionError"):
        Pipeline(stage).run([2, 0])


def test_mix_pool_gives_each_worker_its_own_function_on_one_shared_input() -> None:
    # Each function waits for the other: both workers run, each with its own function.
    both = threading.Barrier(2, timeout=WAIT)
    first_call = threading.local()

    def tag(name: str) -> Any:
        def function(item: int) -> tuple[str, int]:
            if not getattr(first_call, "done", False):
                first_call.done = True
                both.wait()
            return (name, item)

        return function

    stage = mix_pool([tag("gpu"), tag("cpu")], name="pool")
    assert stage.workers == 2
    outputs = Pipeline(stage, batch_size=1, ordered=False).run(range(40))
    assert sorted(item for _, item in outputs) == list(range(40))
    assert {name for name, _ in outputs} <= {"gpu", "cpu"}


def test_a_mix_pool_pickles_with_a_lock_of_its_own() -> None:
    stage = mix_pool([abs, str], name="pool")
    copy = pickle.loads(pickle.dumps(stage))
    assert (copy.name, copy.functions, copy.workers) == ("pool", (abs, str), 2)
    assert copy._lock is not stage._lock
    assert sorted(Pipeline(copy, ordered=False).run([-1])) in ([1], ["-1"])


@pytest.mark.parametrize("functions", [[], "ab", [1]])
def test_bad_function_lists_are_rejected(functions: Any) -> None:
    with pytest.raises(TypeError, match=r"^functions must"):
        mix_pool(functions)
    with pytest.raises(TypeError, match=r"^functions must"):
        fork_merge(functions, lambda *parts: parts)
