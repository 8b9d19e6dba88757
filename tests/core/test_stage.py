"""Tests for stages: the hooks, their validation, chaining, and the ready-made stages."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import pytest

from pipeline import (
    FilteringStage,
    FlatMapStage,
    Pipeline,
    PipelineStage,
    SafeQueue,
    StageChain,
    StageError,
)
from pipeline.demos import AddStage, FilterStage, MultiplyStage
from pipeline.stage import ItemFailed
from pipeline.stages import FlatMapFunctionStage, FunctionStage, PredicateStage
from pipeline.worker import END_OF_STREAM, StageRun, ToQueue


class Double(PipelineStage[int, int]):
    def process(self, item: int) -> int:
        return item * 2


class KeepOdd(FilteringStage[int]):
    def keep(self, item: int) -> bool:
        return item % 2 == 1


class Repeat(FlatMapStage[int, int]):
    def expand(self, item: int) -> Iterable[int]:
        return [item] * item


def test_the_classic_chain_turns_one_to_five_into_twelve_to_twenty() -> None:
    chain = MultiplyStage() >> AddStage() >> FilterStage()
    assert Pipeline(chain).run(range(1, 6)) == [12, 14, 16, 18, 20]


def test_each_kind_of_stage_applies_its_hook_to_a_batch() -> None:
    assert Double().process_batch([1, 2, 3]) == [2, 4, 6]
    assert KeepOdd().process_batch([1, 2, 3]) == [1, 3]
    assert Repeat().process_batch([0, 1, 2, 3]) == [1, 2, 2, 3, 3, 3]


def test_function_stages_are_named_after_their_function() -> None:
    def square(item: int) -> int:
        return item * item

    assert FunctionStage(square).name == "square"
    assert PredicateStage(bool, name="truthy").name == "truthy"
    assert FunctionStage(square).process_batch([1, 2, 3]) == [1, 4, 9]
    assert PredicateStage[int](lambda x: x > 1).process_batch([1, 2, 3]) == [2, 3]
    assert FlatMapFunctionStage[str, str](str.split).process_batch(["a b", "c"]) == ["a", "b", "c"]


def test_a_stage_is_named_after_its_class_by_default() -> None:
    assert Double().name == "Double"
    assert Double("doubler").name == "doubler"
    assert repr(Double(workers=3)) == "<Double name='Double' workers=3>"


@pytest.mark.parametrize(
    ("stage", "item"),
    [
        (FunctionStage[int, float](lambda x: 1 / x), 0),
        (PredicateStage[int](lambda x: 1 / x > 0), 0),
        (FlatMapFunctionStage[int, float](lambda x: [1 / x]), 0),
    ],
)
def test_a_failing_item_is_identified_in_the_batch(
    stage: PipelineStage[int, object], item: int
) -> None:
    with pytest.raises(ItemFailed) as failed:
        stage.process_batch([3, 2, 1, item, 5])
    assert failed.value.item == item
    assert failed.value.index == 3
    assert isinstance(failed.value.__cause__, ZeroDivisionError)


def test_a_failing_generator_in_expand_is_pinned_to_its_item() -> None:
    def explode_on_two(item: int) -> Iterable[int]:
        yield item
        if item == 2:
            raise RuntimeError("two")

    with pytest.raises(ItemFailed) as failed:
        FlatMapFunctionStage(explode_on_two).process_batch([1, 2, 3])
    assert (failed.value.item, failed.value.index) == (2, 1)


def test_a_stage_must_override_process_or_process_batch() -> None:
    class Empty(PipelineStage[int, int]):
        pass

    with pytest.raises(TypeError, match=r"Empty must override process\(\) or process_batch\(\)"):
        Empty()


def test_filtering_and_flat_map_stages_need_their_hook() -> None:
    class NoKeep(FilteringStage[int]):
        pass

    class NoExpand(FlatMapStage[int, int]):
        pass

    # The wording differs between Python versions; both name the missing method.
    with pytest.raises(TypeError, match=r"abstract method.*keep"):
        NoKeep()  # type: ignore[abstract]
    with pytest.raises(TypeError, match=r"abstract method.*expand"):
        NoExpand()  # type: ignore[abstract]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be >= 1, got 0"),
        ({"workers": 1.5}, TypeError, "workers must be an int, got float"),
        ({"workers": True}, TypeError, "workers must be an int, got bool"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"name": 3}, TypeError, "name must be a str or None, got int"),
    ],
)
def test_bad_stage_arguments_are_rejected(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Double(**kwargs)  # type: ignore[arg-type]


def test_function_stages_need_a_callable() -> None:
    with pytest.raises(TypeError, match="function must be callable, got int"):
        FunctionStage(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="predicate must be callable, got str"):
        PredicateStage("x")  # type: ignore[arg-type]


def test_chaining_builds_a_flat_chain_in_order() -> None:
    first, second, third = Double("a"), Double("b"), Double("c")
    chain = first >> (second >> third)
    assert isinstance(chain, StageChain)
    assert chain.stages == (first, second, third)
    assert len(chain) == 3
    assert list(chain) == [first, second, third]
    assert repr(chain) == "a >> b >> c"
    assert (chain >> Double("d")).stages[-1].name == "d"


def test_chaining_with_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Double() >> 3  # type: ignore[operator]


def test_chaining_a_plain_function_says_to_wrap_it_in_a_function_stage() -> None:
    message = (
        r"^cannot chain the function <lambda> with >>: wrap it in a stage, "
        r"FunctionStage\(<lambda>\) \(or PredicateStage, FlatMapFunctionStage\)$"
    )
    with pytest.raises(TypeError, match=message):
        Double() >> (lambda x: x + 1)  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"^cannot chain the function abs with >>: wrap it"):
        Double() >> (Double() >> abs)  # type: ignore[operator]


def test_chaining_a_stage_class_says_to_make_a_stage_of_it() -> None:
    with pytest.raises(
        TypeError, match=r"^cannot chain the class Double with >>: make a stage of it, Double\(\)$"
    ):
        Double() >> Double  # type: ignore[operator]


def test_a_stage_that_skipped_super_init_is_named_in_the_error() -> None:
    class Forgetful(PipelineStage[int, int]):
        def __init__(self) -> None:
            pass

        def process(self, item: int) -> int:
            return item

    with pytest.raises(TypeError, match=r"Forgetful.__init__ did not call PipelineStage.__init__"):
        Pipeline(Forgetful())


def test_typed_chains_line_up() -> None:
    class Length(PipelineStage[str, int]):
        def process(self, item: str) -> int:
            return len(item)

    typed: Pipeline[str, int] = Pipeline(Length() >> Double())
    assert typed.run(["ab", "abc"]) == [4, 6]


@pytest.mark.parametrize(
    ("stage", "items", "bad"),
    [(MultiplyStage(), [1, 2, None, 4], None), (AddStage(), [1, "x", 3], "x")],
)
def test_the_classic_stages_name_the_failing_item(
    stage: PipelineStage[int, int], items: list[Any], bad: object
) -> None:
    with pytest.raises(StageError) as raised:
        Pipeline(stage).run(items)
    assert raised.value.has_item
    assert raised.value.item == bad
    assert isinstance(raised.value.__cause__, TypeError)


def test_the_classic_filter_names_the_failing_item() -> None:
    with pytest.raises(StageError) as raised:
        Pipeline(FilterStage()).run([2, 4, "odd one", 6])  # type: ignore[list-item]
    assert raised.value.item == "odd one"


def test_a_subclass_of_a_classic_stage_gets_its_own_hook_called() -> None:
    class KeepBig(FilterStage):
        def keep(self, item: int) -> bool:
            return item > 3

    class Triple(MultiplyStage):
        def process(self, item: int) -> int:
            return item * 3

    class AddOne(AddStage):
        def process(self, item: int) -> int:
            return item + 1

    assert Pipeline(KeepBig()).run([1, 2, 4, 5, 6]) == [4, 5, 6]
    assert Pipeline(Triple() >> AddOne()).run([1, 2]) == [4, 7]


def test_flush_outputs_follow_every_other_output_once_per_worker() -> None:
    class Totals(PipelineStage[int, int]):
        def setup(self) -> None:
            self.local.total = 0

        def process(self, item: int) -> int:
            self.local.total += item
            return item

        def flush(self) -> list[int]:
            return [-self.local.total]

    outputs = Pipeline(Totals(workers=3), batch_size=2).run(range(100))
    assert outputs[:100] == list(range(100))
    assert len(outputs) == 103
    assert -sum(outputs[100:]) == sum(range(100))


def test_flush_is_not_called_after_a_stop() -> None:
    flushed = threading.Event()

    class Fails(PipelineStage[int, int]):
        def process(self, item: int) -> int:
            raise ValueError(item)

        def flush(self) -> list[int]:
            flushed.set()
            return []

    with pytest.raises(StageError):
        Pipeline(Fails(), fail_fast=True).run(range(10))
    assert not flushed.is_set()


def test_a_failing_flush_is_named() -> None:
    class BadFlush(PipelineStage[int, int]):
        def process(self, item: int) -> int:
            return item

        def flush(self) -> list[int]:
            raise ValueError("cannot flush")

    with pytest.raises(StageError, match=r"in flush\(\) at the end of its input"):
        Pipeline(BadFlush()).run(range(3))


def test_a_latency_target_sizes_batches_toward_it() -> None:
    """With a target far above what a batch takes, batches grow additively (AIMD: +16)
    instead of doubling, up to the pipeline's batch size."""
    sizes: list[int] = []

    class Recorded(PipelineStage[int, int]):
        def process_batch(self, items: list[int]) -> list[int]:
            sizes.append(len(items))
            return items

    stage = Recorded(latency_target=1.0)
    assert stage.latency_target == 1.0
    inbox, outbox = SafeQueue[Any](0), SafeQueue[Any](0)
    inbox.put_many([*range(500), END_OF_STREAM])  # all there before the worker takes
    stage_run = StageRun(
        stage, inbox, ToQueue(outbox), max_batch=64, ordered=True, on_failure=print
    )
    stage_run.work(0)  # in this thread
    assert sizes[:6] == [1, 17, 33, 49, 64, 64]
    assert outbox.get_many(1000) == [*range(500), END_OF_STREAM]


@pytest.mark.parametrize("bad", [0, -1.0, "1", True])
def test_a_latency_target_must_be_positive_seconds(bad: object) -> None:
    with pytest.raises(ValueError, match="latency_target must be a number of seconds > 0"):
        FunctionStage(lambda x: x, latency_target=bad)  # type: ignore[arg-type]


def test_a_failing_flat_map_item_gives_none_of_its_partial_outputs() -> None:
    def expand(item: int) -> Iterable[int]:
        yield item
        if item == 2:
            raise ValueError("midway")
        yield -item

    with pytest.raises(ItemFailed) as failed:
        FlatMapFunctionStage(expand).process_batch([0, 1, 2, 3])
    assert failed.value.index == 2
    assert failed.value.outputs == [0, 0, 1, -1]  # item 2's own 2 is not among them


def test_a_stop_iteration_from_a_hook_fails_the_item_instead_of_ending_the_batch() -> None:
    def stop_on_1(item: int) -> int:
        if item == 1:
            raise StopIteration
        return item

    with pytest.raises(ItemFailed) as failed:
        FunctionStage(stop_on_1).process_batch([0, 1, 2])
    assert (failed.value.index, failed.value.outputs) == (1, [0])
    assert isinstance(failed.value.__cause__, StopIteration)
