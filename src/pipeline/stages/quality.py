"""Data quality: declarative rules, a stage that applies them, rejects, and a report.

Rules say what a good record is; a record is a mapping of field names to values:
- `Required(field)`: the field is present (completeness);
- `IsType(field, types)`, `InRange(field, minimum, maximum)`, `OneOf(field, allowed)`,
  `Matches(field, pattern)`: the value is right (accuracy);
- `Consistent(name, predicate, fields)`: fields agree with each other, and
  `Unique(field, window)`: no two records share a key within the last `window` keys
  (consistency).

NaN (a float or `Decimal` NaN) lies in no range: it fails every `InRange`, and a NaN
bound is refused. A `Unique` key that cannot be remembered (unhashable, or NaN, which
equals nothing) fails that rule rather than the run.

A value is missing when the field is absent, None, or a string of whitespace only. A
missing value fails `Required` and nothing else: the other rules check only records
whose fields they read are all present, so one gap is reported once, as a gap.

`QualityStage(rules)` applies every rule to every record. A record that passes them all
goes on; one that fails any goes to `rejects` (a `Rejects` sink) as a `Rejected`,
naming every rule it failed and why, and is counted as dead-lettered in the stage's
statistics; nothing is dropped silently: records in = passed + rejected. `Unique`
rules run last, and only on records that passed everything else, so a rejected record
never claims a key. With several workers, which of two duplicates counts as the first
depends on timing: use one worker where that matters.

The stage's `report` (a `QualityReport`, shared by its workers, updated once per batch)
gives per rule how many records it checked and how many failed, and per field its
completeness (the share of records where it was present) and accuracy (the share of
present values no accuracy or consistency rule rejected), as a table or JSON.
"""

from __future__ import annotations

import json
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from pipeline._checks import non_empty_str, positive_int
from pipeline.errors import short_repr
from pipeline.stage import PipelineStage
from pipeline.worker import current_worker_counters

__all__ = [
    "DEFAULT_UNIQUE_WINDOW",
    "Consistent",
    "FieldFigures",
    "InRange",
    "IsType",
    "Matches",
    "OneOf",
    "QualityReport",
    "QualityStage",
    "QualitySummary",
    "Rejected",
    "Rejects",
    "Required",
    "Rule",
    "RuleFailure",
    "RuleFigures",
    "Unique",
    "is_missing",
]

DEFAULT_UNIQUE_WINDOW: Final = 100_000

Kind = Literal["completeness", "accuracy", "consistency"]
Record = Mapping[str, Any]


def is_missing(value: object) -> bool:
    """Return whether `value` counts as missing: None, or a string of whitespace only."""
    return value is None or (isinstance(value, str) and not value.strip())


class Rule(ABC):
    """One check on a record: a name, the fields it reads, its kind, and `check`."""

    kind: Kind = "accuracy"
    stateful = False  # a stateful rule remembers records: it runs last, on good records only

    def __init__(self, name: str, fields: Sequence[str]) -> None:
        self.name = non_empty_str("name", name)
        self.fields = tuple(non_empty_str("field", field) for field in fields)

    @abstractmethod
    def check(self, record: Record) -> str | None:
        """Return why `record` fails this rule, or None if it passes; may run in any worker."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Required(Rule):
    """The field is present: not absent, not None, not blank."""

    kind: Kind = "completeness"

    def __init__(self, field: str, *, name: str | None = None) -> None:
        super().__init__(name or f"required({field})", [field])
        self.field = field

    def check(self, record: Record) -> str | None:
        return "missing" if is_missing(record.get(self.field)) else None


class IsType(Rule):
    """The value is an instance of `types` (a bool is not an int here)."""

    def __init__(
        self, field: str, types: type | tuple[type, ...], *, name: str | None = None
    ) -> None:
        self.types = types if isinstance(types, tuple) else (types,)
        if not self.types or not all(isinstance(kind, type) for kind in self.types):
            raise TypeError(f"types must be a type or a tuple of types, got {types!r}")
        wanted = " | ".join(kind.__name__ for kind in self.types)
        super().__init__(name or f"type({field}: {wanted})", [field])
        self.field = field
        self._wanted = wanted

    def check(self, record: Record) -> str | None:
        value = record[self.field]
        if isinstance(value, self.types) and not (
            isinstance(value, bool) and bool not in self.types
        ):
            return None
        return f"expected {self._wanted}, got {type(value).__name__} {short_repr(value)}"


class InRange(Rule):
    """The value lies in [minimum, maximum]; either bound may be None (unbounded).

    NaN lies in no range, so it always fails; a NaN bound is refused (ValueError), and
    bounds that cannot be compared with each other too (TypeError).
    """

    def __init__(
        self,
        field: str,
        minimum: Any = None,
        maximum: Any = None,
        *,
        name: str | None = None,
    ) -> None:
        if minimum is None and maximum is None:
            raise ValueError("InRange needs a minimum, a maximum, or both")
        for bound_name, bound in (("minimum", minimum), ("maximum", maximum)):
            if _is_nan(bound):
                raise ValueError(
                    f"{bound_name} must not be NaN: no value lies beyond it, "
                    "so it would check nothing"
                )
        if minimum is not None and maximum is not None:
            try:
                reversed_bounds = bool(minimum > maximum)
            except (TypeError, ArithmeticError) as exc:
                raise TypeError(
                    f"minimum ({minimum!r}) and maximum ({maximum!r}) cannot be compared "
                    "with each other"
                ) from exc
            if reversed_bounds:
                raise ValueError(f"minimum ({minimum!r}) must not exceed maximum ({maximum!r})")
        low = "" if minimum is None else repr(minimum)
        high = "" if maximum is None else repr(maximum)
        super().__init__(name or f"range({field}: {low}..{high})", [field])
        self.field = field
        self.minimum = minimum
        self.maximum = maximum

    def check(self, record: Record) -> str | None:
        value = record[self.field]
        if _is_nan(value):  # NaN compares false with everything, so it passed both bounds
            return f"{short_repr(value)} is outside every range"
        try:
            if self.minimum is not None and value < self.minimum:
                return f"{short_repr(value)} is below the minimum {self.minimum!r}"
            if self.maximum is not None and value > self.maximum:
                return f"{short_repr(value)} is above the maximum {self.maximum!r}"
        except (TypeError, ArithmeticError):  # ArithmeticError: a Decimal that refuses
            return f"{short_repr(value)} cannot be compared with the bounds"
        return None


class OneOf(Rule):
    """The value is one of `allowed`."""

    def __init__(self, field: str, allowed: Iterable[Any], *, name: str | None = None) -> None:
        values = list(allowed)
        for value in values:
            try:
                hash(value)
            except TypeError as exc:
                raise TypeError(
                    f"allowed must hold hashable values; {short_repr(value)} is an unhashable "
                    f"{type(value).__name__}"
                ) from exc
        self.allowed = frozenset(values)
        if not self.allowed:
            raise ValueError("allowed must not be empty")
        super().__init__(name or f"one_of({field})", [field])
        self.field = field

    def check(self, record: Record) -> str | None:
        value = record[self.field]
        try:
            if value in self.allowed:
                return None
        except TypeError:  # an unhashable value is not one of them
            pass
        return f"{short_repr(value)} is not an allowed value"


class Matches(Rule):
    """The value is a string matching `pattern` entirely (`re.fullmatch`)."""

    def __init__(
        self, field: str, pattern: str | re.Pattern[str], *, name: str | None = None
    ) -> None:
        if not isinstance(pattern, str | re.Pattern):
            raise TypeError(
                f"pattern must be a str or a compiled pattern, got {type(pattern).__name__}"
            )
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"pattern {short_repr(pattern)} is not a regular expression: {exc}"
            ) from exc
        super().__init__(name or f"matches({field})", [field])
        self.field = field

    def check(self, record: Record) -> str | None:
        value = record[self.field]
        if isinstance(value, str) and self.pattern.fullmatch(value):
            return None
        return f"{short_repr(value)} does not match {self.pattern.pattern!r}"


class Consistent(Rule):
    """`predicate(record)` holds: fields agree with each other (checked when all present)."""

    kind: Kind = "consistency"

    def __init__(
        self,
        name: str,
        predicate: Callable[[Record], bool],
        fields: Sequence[str],
        *,
        message: str | None = None,
    ) -> None:
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
        if isinstance(fields, str) or not fields:
            raise ValueError("fields must be a non-empty sequence of field names")
        super().__init__(name, fields)
        self.predicate = predicate
        self.message = message or f"fails {name}"

    def check(self, record: Record) -> str | None:
        return None if self.predicate(record) else self.message


class Unique(Rule):
    """No two records share `field` among the last `window` keys accepted.

    Remembers at most `window` keys (the oldest forgotten first), so memory is bounded;
    a lock makes it safe for a stage with several workers.
    """

    kind: Kind = "consistency"
    stateful = True

    def __init__(
        self, field: str, *, window: int = DEFAULT_UNIQUE_WINDOW, name: str | None = None
    ) -> None:
        super().__init__(name or f"unique({field})", [field])
        self.field = field
        self.window = positive_int("window", window)
        # Guards _seen: the last `window` keys accepted, oldest first.
        self._lock = threading.Lock()
        self._seen: OrderedDict[Any, None] = OrderedDict()

    def check(self, record: Record) -> str | None:
        key = record[self.field]
        if _is_nan(key):  # a NaN key would never match another, so never count as seen
            return f"{short_repr(key)} cannot be a key: NaN equals nothing, itself included"
        try:
            hash(key)
        except TypeError:
            return f"{short_repr(key)} cannot be a key: unhashable type {type(key).__name__}"
        with self._lock:
            if key in self._seen:
                return f"{short_repr(key)} was seen before"
            self._seen[key] = None
            if len(self._seen) > self.window:
                self._seen.popitem(last=False)
        return None

    def reset(self) -> None:
        """Forget every key seen (for a new run over the same data)."""
        with self._lock:
            self._seen.clear()


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """One rule a record failed, and why."""

    rule: str
    fields: tuple[str, ...]
    message: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that failed quality rules: every failure, the first one first."""

    stage: str
    record: Any
    failures: tuple[RuleFailure, ...]

    @property
    def rule(self) -> str:
        """The name of the first rule the record failed."""
        return self.failures[0].rule


class Rejects:
    """A thread-safe sink of rejected records, readable during a run and after it."""

    def __init__(self) -> None:
        # Guards _records and _total (every record ever appended, drained or not).
        self._lock = threading.Lock()
        self._records: list[Rejected] = []
        self._total = 0

    def extend(self, rejected: Iterable[Rejected]) -> None:
        """Add rejected records; called from a stage's worker threads."""
        with self._lock:
            before = len(self._records)
            self._records.extend(rejected)
            self._total += len(self._records) - before

    def snapshot(self) -> list[Rejected]:
        """Return a copy of the records held now, oldest first."""
        with self._lock:
            return list(self._records)

    def drain(self) -> list[Rejected]:
        """Remove and return the records held now, oldest first."""
        with self._lock:
            records, self._records = self._records, []
            return records

    @property
    def total(self) -> int:
        """How many records were ever rejected into this sink, drained or not."""
        with self._lock:
            return self._total

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


@dataclass(frozen=True, slots=True)
class RuleFigures:
    """How one rule fared: records it checked, and how many failed it."""

    name: str
    kind: Kind
    fields: tuple[str, ...]
    checked: int
    failed: int

    @property
    def pass_rate(self) -> float:
        """The share of checked records that passed; 1.0 when none was checked."""
        return 1.0 - self.failed / self.checked if self.checked else 1.0


@dataclass(frozen=True, slots=True)
class FieldFigures:
    """How one field fared over the records seen.

    `missing`: records without it; `invalid`: records where it was present but a rule
    reading it (other than `Required`) failed.
    """

    name: str
    records: int
    missing: int
    invalid: int

    @property
    def completeness(self) -> float:
        """The share of records where the field was present; 1.0 before any record."""
        return 1.0 - self.missing / self.records if self.records else 1.0

    @property
    def accuracy(self) -> float:
        """The share of present values no rule rejected; 1.0 when none was present."""
        present = self.records - self.missing
        return 1.0 - self.invalid / present if present else 1.0


@dataclass(frozen=True, slots=True)
class QualitySummary:
    """A snapshot of a `QualityReport`: totals, then figures per rule and per field."""

    records: int
    passed: int
    rejected: int
    rules: tuple[RuleFigures, ...]
    fields: tuple[FieldFigures, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain data, rates included, ready for `json.dumps`."""
        return {
            "records": self.records,
            "passed": self.passed,
            "rejected": self.rejected,
            "rules": [
                {**asdict(rule), "fields": list(rule.fields), "pass_rate": rule.pass_rate}
                for rule in self.rules
            ],
            "fields": [
                {**asdict(field), "completeness": field.completeness, "accuracy": field.accuracy}
                for field in self.fields
            ],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """Return `to_dict()` as JSON."""
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """Return the summary as two aligned text tables: rules, then fields."""
        lines = [
            f"{self.records:,} records checked: {self.passed:,} passed, {self.rejected:,} rejected",
            "",
        ]
        rule_rows = [("rule", "kind", "checked", "failed", "pass rate")]
        rule_rows += [
            (
                rule.name,
                rule.kind,
                f"{rule.checked:,}",
                f"{rule.failed:,}",
                f"{rule.pass_rate:.2%}",
            )
            for rule in self.rules
        ]
        lines += _aligned(rule_rows)
        lines.append("")
        field_rows = [("field", "missing", "invalid", "completeness", "accuracy")]
        field_rows += [
            (
                field.name,
                f"{field.missing:,}",
                f"{field.invalid:,}",
                f"{field.completeness:.2%}",
                f"{field.accuracy:.2%}",
            )
            for field in self.fields
        ]
        lines += _aligned(field_rows)
        return "\n".join(lines)


class QualityReport:
    """Counts of what a `QualityStage` checked, shared by its workers; read any time."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.field_names = tuple(dict.fromkeys(field for rule in rules for field in rule.fields))
        # Guards every count below; workers add a batch's counts at once.
        self._lock = threading.Lock()
        self._records = 0
        self._rejected = 0
        self._checked = [0] * len(self.rules)
        self._failed = [0] * len(self.rules)
        self._missing = dict.fromkeys(self.field_names, 0)
        self._invalid = dict.fromkeys(self.field_names, 0)

    def add(self, counts: _BatchCounts) -> None:
        """Add one batch's counts; called by the stage's workers."""
        with self._lock:
            self._records += counts.records
            self._rejected += counts.rejected
            for index in range(len(self.rules)):
                self._checked[index] += counts.checked[index]
                self._failed[index] += counts.failed[index]
            for field in self.field_names:
                self._missing[field] += counts.missing[field]
                self._invalid[field] += counts.invalid[field]

    def to_dict(self) -> dict[str, Any]:
        """Return `summary().to_dict()`: the figures so far as plain data.

        A dashboard panel as it is: `Dashboard(pipeline, panels={"quality":
        stage.report.to_dict})` shows the report live while the stage runs.
        """
        return self.summary().to_dict()

    def summary(self) -> QualitySummary:
        """Return a consistent snapshot of the counts so far."""
        with self._lock:
            return QualitySummary(
                records=self._records,
                passed=self._records - self._rejected,
                rejected=self._rejected,
                rules=tuple(
                    RuleFigures(rule.name, rule.kind, rule.fields, checked, failed)
                    for rule, checked, failed in zip(
                        self.rules, self._checked, self._failed, strict=True
                    )
                ),
                fields=tuple(
                    FieldFigures(field, self._records, self._missing[field], self._invalid[field])
                    for field in self.field_names
                ),
            )


class _BatchCounts:
    """One worker's counts for one batch, added to the report in one step."""

    def __init__(self, report: QualityReport) -> None:
        self.records = 0
        self.rejected = 0
        self.checked = [0] * len(report.rules)
        self.failed = [0] * len(report.rules)
        self.missing = dict.fromkeys(report.field_names, 0)
        self.invalid = dict.fromkeys(report.field_names, 0)


class QualityStage(PipelineStage[Record, Record]):
    """Pass on the records that meet every rule; reject the others, naming the rules.

    Args:
        rules: the rules, applied in order (`Unique` rules last, to good records only).
        rejects: where rejected records go; a new `Rejects` by default (`self.rejects`).
        name, workers: as for any stage.

    The report, the rejects and the keys `Unique` rules remember carry over from one
    run of the stage to the next (a stream processed in several runs stays checked as
    one); call `reset()` between runs over unrelated data.

    Raises:
        TypeError, ValueError: no rules, a rule that is not a `Rule`, or two rules with
            the same name.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        rejects: Rejects | None = None,
        name: str | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(name, workers=workers)
        checked_rules = list(rules)
        if not checked_rules:
            raise ValueError("rules must not be empty")
        for rule in checked_rules:
            if not isinstance(rule, Rule):
                raise TypeError(f"rules must be Rule instances, got {type(rule).__name__}")
        names = [rule.name for rule in checked_rules]
        duplicates = sorted({rule for rule in names if names.count(rule) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {duplicates}")
        if rejects is not None and not isinstance(rejects, Rejects):
            raise TypeError(f"rejects must be a Rejects or None, got {type(rejects).__name__}")
        self.rules = tuple(checked_rules)
        self.rejects = Rejects() if rejects is None else rejects
        self.report = QualityReport(self.rules)
        order = sorted(range(len(self.rules)), key=lambda index: self.rules[index].stateful)
        # (index, rule, the field of a Required rule (answered from the gaps already
        # found) or None, is it a completeness rule, is it stateful), stateful rules last.
        self._plan = tuple(
            (
                index,
                self.rules[index],
                _required_field(self.rules[index]),
                self.rules[index].kind == "completeness",
                self.rules[index].stateful,
            )
            for index in order
        )

    def reset(self) -> None:
        """Start afresh: a new report, no rejects, no keys remembered; not during a run."""
        self.report = QualityReport(self.rules)
        self.rejects.drain()
        for rule in self.rules:
            if isinstance(rule, Unique):
                rule.reset()

    def process_batch(self, items: list[Record]) -> list[Record]:
        counts = _BatchCounts(self.report)
        checked, failed = counts.checked, counts.failed
        fields = self.report.field_names
        passed: list[Record] = []
        rejected: list[Rejected] = []
        for record in items:
            get = record.get
            absent = {field for field in fields if is_missing(get(field))}
            failures: list[RuleFailure] = []
            invalid: set[str] = set()
            for index, rule, required, completeness, stateful in self._plan:
                if absent and not completeness and not absent.isdisjoint(rule.fields):
                    continue  # a gap is reported once, by Required
                if stateful and failures:
                    continue  # a rejected record never claims a key
                checked[index] += 1
                if required is not None:
                    message = "missing" if required in absent else None
                else:
                    message = rule.check(record)
                if message is not None:
                    failed[index] += 1
                    failures.append(RuleFailure(rule.name, rule.fields, message))
                    if not completeness:
                        invalid.update(rule.fields)
            for field in absent:
                counts.missing[field] += 1
            for field in invalid:
                counts.invalid[field] += 1
            counts.records += 1
            if failures:
                rejected.append(Rejected(self.name, record, tuple(failures)))
            else:
                passed.append(record)
        counts.rejected = len(rejected)
        self.report.add(counts)
        if rejected:
            self.rejects.extend(rejected)
            worker = current_worker_counters()
            if worker is not None:
                worker.count("dead_lettered", len(rejected))
        return passed


def _is_nan(value: object) -> bool:
    """Return whether `value` is a NaN of any kind: float, Decimal, or one not equal to itself."""
    try:
        return bool(value != value)
    except (TypeError, ValueError, ArithmeticError):  # a signalling Decimal NaN refuses
        return isinstance(value, Decimal) and value.is_nan()


def _required_field(rule: Rule) -> str | None:
    """Return the field a `Required` rule (not a subclass, which may check more) checks."""
    return rule.field if type(rule) is Required and isinstance(rule, Required) else None


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        name, *figures = row
        cells = [name.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(figures, widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines
