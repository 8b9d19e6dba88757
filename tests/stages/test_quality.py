"""Tests of the data-quality rules, the quality stage, its rejects and its report."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest

from pipeline import Pipeline, StageError
from pipeline.stages.quality import (
    Consistent,
    InRange,
    IsType,
    Matches,
    OneOf,
    QualityStage,
    Rejects,
    Required,
    Rule,
    Unique,
    is_missing,
)

Record = Mapping[str, Any]


def failures_of(rule: Rule, record: Record) -> list[str]:
    stage = QualityStage([rule])
    stage.process_batch([record])
    return [
        failure.message for rejected in stage.rejects.snapshot() for failure in rejected.failures
    ]


@pytest.mark.parametrize("value", [None, "", "   ", "\t"])
def test_missing_values(value: object) -> None:
    assert is_missing(value)
    assert failures_of(Required("a"), {"a": value}) == ["missing"]


@pytest.mark.parametrize("value", [0, 0.0, False, "x", [], "0"])
def test_present_values(value: object) -> None:
    assert not is_missing(value)
    assert failures_of(Required("a"), {"a": value}) == []


def test_an_absent_field_is_missing() -> None:
    assert failures_of(Required("a"), {}) == ["missing"]


@pytest.mark.parametrize(
    ("rule", "value", "message"),
    [
        (IsType("a", int), "3", "expected int, got str '3'"),
        (IsType("a", int), True, "expected int, got bool True"),
        (IsType("a", (int, float)), 2.5, None),
        (IsType("a", bool), True, None),
        (InRange("a", 1, 10), 0, "0 is below the minimum 1"),
        (InRange("a", 1, 10), 11, "11 is above the maximum 10"),
        (InRange("a", 1, 10), 10, None),
        (InRange("a", maximum=10), -5, None),
        (InRange("a", 1, 10), "5", "'5' cannot be compared with the bounds"),
        (InRange("a", 0, 100), math.nan, "nan is outside every range"),
        (InRange("a", minimum=0), math.nan, "nan is outside every range"),
        (InRange("a", maximum=0), Decimal("NaN"), "Decimal('NaN') is outside every range"),
        (InRange("a", 0, 1), Decimal("sNaN"), "Decimal('sNaN') is outside every range"),
        (InRange("a", 0), math.inf, None),
        (InRange("a", 0, 100), math.inf, "inf is above the maximum 100"),
        (OneOf("a", {"FR", "DE"}), "FR", None),
        (OneOf("a", {"FR", "DE"}), "fr", "'fr' is not an allowed value"),
        (OneOf("a", {"FR"}), ["FR"], "['FR'] is not an allowed value"),
        (Matches("a", r"[a-z]+@[a-z]+\.com"), "ann@example.com", None),
        (Matches("a", r"[a-z]+"), "ann2", "'ann2' does not match '[a-z]+'"),
        (Matches("a", r"[0-9]+"), 12, "12 does not match '[0-9]+'"),
    ],
)
def test_each_value_rule(rule: Rule, value: object, message: str | None) -> None:
    assert failures_of(rule, {"a": value}) == ([] if message is None else [message])


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __hash__(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (IsType("a", int), "expected int, got _Unprintable {}"),
        (InRange("a", 0, 1), "{} cannot be compared with the bounds"),
        (OneOf("a", [1]), "{} is not an allowed value"),
        (Matches("a", "x"), "{} does not match 'x'"),
    ],
)
def test_a_value_whose_repr_raises_is_rejected_not_the_run(rule: Rule, message: str) -> None:
    # Before, the rule's message called repr() and the whole stage failed with it.
    value = _Unprintable()
    shown = f"<_Unprintable instance at {id(value):#x}>"
    assert failures_of(rule, {"a": value}) == [message.format(shown)]


def test_a_long_value_is_cut_short_in_the_message() -> None:
    (message,) = failures_of(Matches("a", "x"), {"a": "y" * 1000})
    assert len(message) < 100
    assert message.endswith(" does not match 'x'")


def test_value_rules_skip_missing_values() -> None:
    for rule in [IsType("a", int), InRange("a", 1), OneOf("a", [1]), Matches("a", "x")]:
        assert failures_of(rule, {"a": None}) == []


def test_cross_field_consistency() -> None:
    rule = Consistent(
        "shipped after ordered",
        lambda record: record["shipped"] >= record["ordered"],
        ["ordered", "shipped"],
    )
    assert failures_of(rule, {"ordered": 3, "shipped": 5}) == []
    assert failures_of(rule, {"ordered": 5, "shipped": 3}) == ["fails shipped after ordered"]
    assert failures_of(rule, {"ordered": 5}) == []  # not checked: a field is missing


def test_uniqueness_within_a_window_of_keys() -> None:
    stage = QualityStage([Unique("id", window=2)])
    passed = stage.process_batch([{"id": key} for key in [1, 2, 1, 3, 1, 3]])
    # 1 seen, 2 seen, 1 duplicate, 3 pushes 1 out of the window, 1 new again, 3 duplicate
    assert [record["id"] for record in passed] == [1, 2, 3, 1]
    assert [rejected.record["id"] for rejected in stage.rejects.snapshot()] == [1, 3]
    assert stage.rejects.snapshot()[0].failures[0].message == "1 was seen before"


def test_a_key_that_cannot_be_remembered_fails_uniqueness_instead_of_the_run() -> None:
    stage = QualityStage([Unique("id")])
    records: list[Record] = [{"id": [1]}, {"id": math.nan}, {"id": math.nan}, {"id": 1}]
    assert stage.process_batch(records) == [{"id": 1}]
    messages = [rejected.failures[0].message for rejected in stage.rejects.snapshot()]
    assert messages == [
        "[1] cannot be a key: unhashable type list",
        "nan cannot be a key: NaN equals nothing, itself included",
        "nan cannot be a key: NaN equals nothing, itself included",
    ]


def test_a_rejected_record_never_claims_a_key() -> None:
    stage = QualityStage([Unique("id"), InRange("n", 0)])
    passed = stage.process_batch([{"id": 1, "n": -1}, {"id": 1, "n": 1}])
    assert passed == [{"id": 1, "n": 1}]
    (rejected,) = stage.rejects.snapshot()
    assert rejected.rule == "range(n: 0..)"
    assert [failure.rule for failure in rejected.failures] == ["range(n: 0..)"]


def rules() -> list[Rule]:
    return [
        Required("id"),
        Required("email"),
        IsType("age", int),
        InRange("age", 0, 130),
        Matches("email", r"[^@\s]+@[^@\s]+"),
        Unique("id"),
    ]


RECORDS: list[Record] = [
    {"id": 1, "email": "a@x", "age": 30},  # good
    {"id": 2, "email": "", "age": 40},  # email missing
    {"id": 3, "email": "nope", "age": 200},  # email invalid, age out of range
    {"id": 1, "email": "b@x", "age": 20},  # duplicate id
    {"id": 4, "email": "c@x", "age": "9"},  # age not an int: the range rule fails too
    {"id": 5, "email": "d@x"},  # age absent: no rule requires it
]


def test_a_pipeline_passes_good_records_and_rejects_the_others_with_every_rule() -> None:
    stage = QualityStage(rules())
    passed = Pipeline(stage).run(RECORDS)
    assert [record["id"] for record in passed] == [1, 5]
    rejected = {rejected.record["id"]: rejected for rejected in stage.rejects.snapshot()}
    assert len(stage.rejects) == 4
    assert rejected[2].rule == "required(email)"
    assert [failure.rule for failure in rejected[3].failures] == [
        "range(age: 0..130)",
        "matches(email)",
    ]
    assert rejected[1].failures[0].message == "1 was seen before"
    assert [failure.rule for failure in rejected[4].failures] == [
        "type(age: int)",
        "range(age: 0..130)",
    ]


def test_the_report_counts_each_rule_and_each_field() -> None:
    stage = QualityStage(rules())
    Pipeline(stage).run(RECORDS)
    summary = stage.report.summary()
    assert (summary.records, summary.passed, summary.rejected) == (6, 2, 4)
    by_rule = {rule.name: (rule.checked, rule.failed) for rule in summary.rules}
    assert by_rule == {
        "required(id)": (6, 0),
        "required(email)": (6, 1),
        "type(age: int)": (5, 1),  # the record without an age is not checked
        "range(age: 0..130)": (5, 2),
        "matches(email)": (5, 1),
        "unique(id)": (3, 1),  # only records that passed everything else
    }
    by_field = {field.name: field for field in summary.fields}
    assert (by_field["email"].missing, by_field["email"].invalid) == (1, 1)
    assert by_field["email"].completeness == pytest.approx(5 / 6)
    assert by_field["email"].accuracy == pytest.approx(4 / 5)
    assert by_field["age"].completeness == pytest.approx(5 / 6)
    assert by_field["age"].accuracy == pytest.approx(3 / 5)  # 200 and "9", counted once each
    assert by_field["id"].accuracy == pytest.approx(5 / 6)  # the duplicate
    assert next(r for r in summary.rules if r.name == "range(age: 0..130)").pass_rate == 0.6


def test_the_report_as_json_and_as_a_table() -> None:
    stage = QualityStage(rules())
    stage.process_batch(RECORDS)
    summary = stage.report.summary()
    data = json.loads(summary.to_json())
    assert data["rejected"] == 4
    assert data["rules"][1] == {
        "name": "required(email)",
        "kind": "completeness",
        "fields": ["email"],
        "checked": 6,
        "failed": 1,
        "pass_rate": pytest.approx(5 / 6),
    }
    table = summary.table()
    assert table.splitlines()[0] == "6 records checked: 2 passed, 4 rejected"
    assert re.search(r"range\(age: 0\.\.130\)\s+accuracy\s+5\s+2\s+60\.00%", table)
    assert re.search(r"email\s+1\s+1\s+83\.33%\s+80\.00%", table)


def test_records_in_equal_passed_plus_rejected_with_several_workers() -> None:
    rejects = Rejects()
    stage = QualityStage([InRange("n", 0, 99)], rejects=rejects, workers=3)
    pipeline = Pipeline(stage)
    passed = pipeline.run({"n": n} for n in range(-500, 500))
    assert len(passed) == 100
    assert rejects.total == 900
    stats = pipeline.stats()
    assert stats is not None
    assert stats.stage("QualityStage").extra["dead_lettered"] == 900
    assert len(rejects.drain()) == 900
    assert len(rejects) == 0
    assert rejects.total == 900


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: QualityStage([]), ValueError, "rules must not be empty"),
        (lambda: QualityStage(["x"]), TypeError, "rules must be Rule instances, got str"),  # type: ignore[list-item]
        (
            lambda: QualityStage([Required("a"), Required("a")]),
            ValueError,
            "rule names must be unique; repeated: ['required(a)']",
        ),
        (lambda: Required(""), ValueError, "field must not be empty"),
        (lambda: InRange("a"), ValueError, "InRange needs a minimum, a maximum, or both"),
        (lambda: InRange("a", 5, 1), ValueError, "minimum (5) must not exceed maximum (1)"),
        (
            lambda: InRange("a", math.nan, 100),
            ValueError,
            "minimum must not be NaN: no value lies beyond it, so it would check nothing",
        ),
        (
            lambda: InRange("a", maximum=Decimal("NaN")),
            ValueError,
            "maximum must not be NaN: no value lies beyond it, so it would check nothing",
        ),
        (
            lambda: InRange("a", "a", 5),
            TypeError,
            "minimum ('a') and maximum (5) cannot be compared with each other",
        ),
        (lambda: OneOf("a", []), ValueError, "allowed must not be empty"),
        (
            lambda: OneOf("a", [[1], 2]),
            TypeError,
            "allowed must hold hashable values; [1] is an unhashable list",
        ),
        (
            lambda: Matches("a", "("),
            ValueError,
            "pattern '(' is not a regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            lambda: Matches("a", 5),  # type: ignore[arg-type]
            TypeError,
            "pattern must be a str or a compiled pattern, got int",
        ),
        (
            lambda: IsType("a", "int"),  # type: ignore[arg-type]
            TypeError,
            "types must be a type or a tuple of types, got 'int'",
        ),
        (lambda: Unique("a", window=0), ValueError, "window must be >= 1, got 0"),
        (
            lambda: Consistent("c", lambda r: True, "ab"),
            ValueError,
            "fields must be a non-empty sequence of field names",
        ),
    ],
)
def test_bad_arguments_are_named(make: Callable[[], object], error: type, message: str) -> None:
    with pytest.raises(error) as caught:
        make()
    assert str(caught.value) == message


def test_a_second_run_sees_the_first_runs_keys_until_reset() -> None:
    stage = QualityStage([Unique("id")])
    pipeline = Pipeline(stage)
    assert len(pipeline.run([{"id": 1}, {"id": 2}])) == 2
    assert pipeline.run([{"id": 2}, {"id": 3}]) == [{"id": 3}]
    assert stage.report.summary().records == 4
    stage.reset()
    assert len(pipeline.run([{"id": 1}, {"id": 2}])) == 2
    assert (stage.report.summary().records, len(stage.rejects)) == (2, 0)


class _NoMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def test_a_predicate_that_raises_stops_the_run_naming_the_stage_with_its_cause() -> None:
    def broken(record: Record) -> bool:
        raise _NoMessage

    stage = QualityStage([Consistent("broken", broken, ["a"])], name="validate")
    with pytest.raises(StageError) as caught:
        Pipeline(stage).run([{"a": 1}])
    assert isinstance(caught.value.__cause__, _NoMessage)
    assert str(caught.value) == (
        "stage 'validate' failed in process_batch(): _NoMessage: <str() failed>"
    )
