"""Tests for the key join: pairs on random latencies, the buffer bound, the incomplete policies."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import pytest
from support import WAIT, Boom

from pipeline import PipelineStage, StageError
from pipeline.graph import MISSING, Graph, GraphStatistics, KeyJoin
from pipeline.stages import FunctionStage, PredicateStage
from pipeline.worker import current_stop_event


class Service(PipelineStage[int, tuple[int, str]]):
    """Answers (item, "<name>-<item>") after a random pause (its own work)."""

    def __init__(self, name: str, seed: int, *, workers: int = 2) -> None:
        super().__init__(name, workers=workers)
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.pause = threading.Event()

    def process(self, item: int) -> tuple[int, str]:
        with self.lock:
            pause = self.random.uniform(0, 0.0005)
        self.pause.wait(pause)
        return (item, f"{self.name}-{item}")


def key_of(pair: tuple[int, str]) -> int:
    return pair[0]


def enrich(join: KeyJoin[Any], *, drop_right: bool = False) -> Graph:
    graph = (
        Graph()
        .add(FunctionStage(lambda item: item, name="ids"))
        .add(Service("prices", seed=1), after="ids")
        .add(Service("stock", seed=2, workers=3), after="ids")
    )
    if drop_right:
        graph.add(PredicateStage(lambda pair: pair[0] % 4 != 0, name="lossy"), after="stock")
        return graph.add(join, after=["prices", "lossy"])
    return graph.add(join, after=["prices", "stock"])


def test_a_key_join_pairs_both_services_answers_on_random_latencies() -> None:
    join: KeyJoin[Any] = KeyJoin(
        key_of, combine=lambda left, right: (left[0], left[1], right[1]), name="join"
    )
    pipeline = enrich(join).build(queue_size=3, batch_size=4)
    outputs = pipeline.run(range(400))
    assert sorted(outputs) == [(item, f"prices-{item}", f"stock-{item}") for item in range(400)]
    stats = pipeline.stats()
    assert isinstance(stats, GraphStatistics)
    (figures,) = stats.joins
    assert figures.buffered == 0
    assert 1 <= figures.high_water_mark <= 400
    assert figures.dropped == 0


def test_a_key_that_never_completes_fails_the_run_by_default_naming_it() -> None:
    join: KeyJoin[Any] = KeyJoin(key_of, name="join")
    with pytest.raises(StageError) as caught:
        enrich(join, drop_right=True).build(batch_size=4).run(range(10))
    message = str(caught.value)
    assert message.startswith(
        "stage 'join' failed in flush() at the end of its input: worker 0: LookupError: key "
    )
    assert "from input 'prices' never met its partner from input 'lossy'" in message
    assert message.endswith("(the input ended)")


def test_the_drop_policy_counts_and_logs_keys_that_never_complete(
    caplog: pytest.LogCaptureFixture,
) -> None:
    join: KeyJoin[Any] = KeyJoin(key_of, incomplete="drop", name="join")
    pipeline = enrich(join, drop_right=True).build(batch_size=4)
    with caplog.at_level(logging.WARNING, logger="pipeline.graph.join"):
        outputs = pipeline.run(range(20))
    assert sorted(left[0] for left, _ in outputs) == [item for item in range(20) if item % 4]
    stats = pipeline.stats()
    assert isinstance(stats, GraphStatistics)
    assert stats.joins[0].dropped == 5
    assert len(caplog.records) == 1
    assert "dropped key" in caplog.records[0].getMessage()


def test_the_emit_policy_emits_unpaired_keys_with_missing_partners() -> None:
    join: KeyJoin[Any] = KeyJoin(key_of, incomplete="emit", name="join")
    outputs = enrich(join, drop_right=True).build(batch_size=4).run(range(8))
    unpaired = sorted(left[0] for left, right in outputs if right is MISSING)
    assert unpaired == [0, 4]
    assert len(outputs) == 8


def test_a_full_buffer_fails_the_run_naming_the_bound() -> None:
    # Left answers everything while right answers nothing: the buffer overflows.
    def hold(pair: tuple[int, str]) -> tuple[int, str]:
        stopping = current_stop_event()
        assert stopping is not None
        stopping.wait(WAIT)  # returns as soon as the run stops
        return pair

    join: KeyJoin[Any] = KeyJoin(key_of, max_pending=3, name="join")
    graph = (
        Graph()
        .add(FunctionStage(lambda item: (item, "x"), name="ids"))
        .add(FunctionStage(lambda pair: pair, name="left"), after="ids")
        .add(FunctionStage(hold, name="right"), after="ids")
        .add(join, after=["left", "right"])
    )
    with pytest.raises(StageError) as caught:
        graph.build(queue_size=16, batch_size=16).run(range(16))
    assert str(caught.value).endswith("(the buffer is full: max_pending=3)")


def never_partnered() -> Graph:
    """Left answers every id, right none: every key waits, until the buffer is full."""
    return (
        Graph()
        .add(FunctionStage(lambda item: item, name="ids"))
        .add(FunctionStage(lambda item: (item, "left"), name="left"), after="ids")
        .add(PredicateStage(lambda item: False, name="right"), after="ids")
    )


def combine_needing_a_partner(left: Any, right: Any) -> Any:
    if right is MISSING:
        raise Boom("no partner to combine with")
    return (left, right)


@pytest.mark.parametrize("incomplete", ["fail", "emit"])
def test_a_key_pushed_out_of_a_full_buffer_is_the_item_a_failure_names(incomplete: Any) -> None:
    join: KeyJoin[Any] = KeyJoin(
        key_of,
        max_pending=2,
        incomplete=incomplete,
        combine=combine_needing_a_partner,
        name="join",
    )
    graph = never_partnered().add(join, after=["left", "right"])
    with pytest.raises(StageError) as caught:
        graph.build(batch_size=1).run(range(5))
    assert caught.value.item == (0, "left")  # the oldest key, given up, not the arrival
    kind = LookupError if incomplete == "fail" else Boom
    assert isinstance(caught.value.__cause__, kind)


def test_a_key_seen_twice_on_one_input_is_an_error() -> None:
    join: KeyJoin[Any] = KeyJoin(lambda item: 1, name="join")
    graph = (
        Graph()
        .add(FunctionStage(lambda item: item, name="ids"))
        .add(FunctionStage(lambda item: item, name="left"), after="ids")
        .add(PredicateStage(lambda item: False, name="right"), after="ids")
        .add(join, after=["left", "right"])
    )
    with pytest.raises(StageError, match=r"key 1 came twice from input 'left' before its partner"):
        graph.build(batch_size=4).run(range(4))


class Unprintable:
    """A key whose repr() raises, as a half-built object's may."""

    def __repr__(self) -> str:
        raise RuntimeError("repr() of an unprintable key")


def test_an_unprintable_key_without_a_partner_still_names_the_join_and_the_inputs() -> None:
    join: KeyJoin[Any] = KeyJoin(lambda item: Unprintable(), name="join")
    graph = (
        Graph()
        .add(FunctionStage(lambda item: item, name="ids"))
        .add(FunctionStage(lambda item: item, name="left"), after="ids")
        .add(PredicateStage(lambda item: False, name="right"), after="ids")
        .add(join, after=["left", "right"])
    )
    with pytest.raises(StageError) as caught:
        graph.build().run(range(1))
    assert isinstance(caught.value.__cause__, LookupError)
    assert "key <Unprintable " in str(caught.value)
    assert "from input 'left' never met its partner from input 'right'" in str(caught.value)


def test_an_unprintable_key_seen_twice_still_says_so() -> None:
    key = Unprintable()
    join: KeyJoin[Any] = KeyJoin(lambda item: key, name="join")
    graph = (
        Graph()
        .add(FunctionStage(lambda item: item, name="ids"))
        .add(FunctionStage(lambda item: item, name="left"), after="ids")
        .add(PredicateStage(lambda item: False, name="right"), after="ids")
        .add(join, after=["left", "right"])
    )
    with pytest.raises(StageError, match=r"came twice from input 'left' before its partner"):
        graph.build(batch_size=4).run(range(4))


def test_dropping_an_unprintable_key_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    join: KeyJoin[Any] = KeyJoin(lambda item: Unprintable(), name="join", incomplete="drop")
    graph = (
        Graph()
        .add(FunctionStage(lambda item: item, name="ids"))
        .add(FunctionStage(lambda item: item, name="left"), after="ids")
        .add(PredicateStage(lambda item: False, name="right"), after="ids")
        .add(join, after=["left", "right"])
    )
    with caplog.at_level(logging.WARNING, logger="pipeline.graph.join"):
        assert graph.build().run(range(2)) == []
    (record,) = caplog.records
    assert "key join 'join' dropped key <Unprintable " in record.getMessage()


def test_a_failing_key_function_names_the_join_and_the_item() -> None:
    def key(pair: tuple[int, str]) -> int:
        if pair[0] == 2:
            raise Boom("no key")
        return pair[0]

    with pytest.raises(StageError) as caught:
        enrich(KeyJoin(key, name="join")).build(batch_size=1).run(range(5))
    assert caught.value.stage == "join"
    assert caught.value.item == (2, "prices-2") or caught.value.item == (2, "stock-2")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"key": 3}, TypeError, "^key must be callable, got int$"),
        ({"key": key_of, "incomplete": "wait"}, ValueError, "^incomplete must be 'fail', 'drop'"),
        ({"key": key_of, "max_pending": 0}, ValueError, "max_pending"),
    ],
)
def test_bad_key_join_arguments_are_rejected(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        KeyJoin(**arguments)


def test_a_stop_drops_the_keys_a_join_holds_without_failing_on_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    join: KeyJoin[Any] = KeyJoin(key_of, name="join")  # "fail": a key left would fail the run
    pipeline = enrich(join, drop_right=True).build(queue_size=1, batch_size=1)
    with caplog.at_level(logging.DEBUG):
        for _ in pipeline.stream(range(10_000)):
            break
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    stats = pipeline.stats()
    assert isinstance(stats, GraphStatistics)
    assert not stats.running
