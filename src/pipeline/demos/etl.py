"""The ETL demo: orders from a CSV file into SQLite, and a sensor stream in windows.

`run()` is the batch job. It generates a CSV of orders (or reads one), some rows
malformed on purpose, and runs them through a pipeline:

    parse -> clean -> validate -> lookup -> convert        then, in the caller's thread,
                                                            aggregate and load (SQLite)

- parse: a CSV row into a record, numbers and dates converted where they parse;
- clean: strip blanks, upper-case country codes, lower-case emails (before validation,
  so " fr " is as good as "FR");
- validate: the quality rules (`pipeline.stages.quality`); failing rows go to the
  rejects, naming every rule they failed;
- lookup: a country's region and currency, from a reference SQLite database, through a
  connection each worker opens in `setup()` (a connection belongs to its thread);
- convert: amounts into euros through a (simulated) remote rate service, one request
  per batch taking `io_latency` plus 40 us a row: I/O-bound, so several workers;
- aggregate and load: the caller's thread totals each category and writes the rows to
  SQLite in transactions sized by an `AdaptiveBatcher` toward `write_target` seconds.

It prints the quality report, the totals per category, the per-stage report, where
the time went, and the reconciliation: rows read = loaded + rejected. With
`sequential=True` the same steps run one after the other in the caller's thread,
for comparison (`benchmarks/bench_etl.py`).

`run_stream()` is the stream job: an endless simulated sensor stream (or `readings`
of it) in tumbling event-time windows, one line per window with its statistics and
anomalies (values more than 3 standard deviations from the window's mean), until
Ctrl-C. Standard library only (`--plot` needs matplotlib).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import math
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from pipeline.batching import AdaptiveBatcher, BatcherStatistics
from pipeline.observe.report import format_report
from pipeline.pipeline import Pipeline
from pipeline.stage import PipelineStage
from pipeline.stages.functions import FunctionStage
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
)

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

from pipeline.stages.windows import (
    TimeWindows,
    Watermark,
    Window,
    WindowAnomalies,
    WindowSummary,
    anomalies,
    summarize,
)

__all__ = [
    "COLUMNS",
    "EtlResult",
    "GeneratedCsv",
    "Reading",
    "StreamResult",
    "generate_csv",
    "quality_rules",
    "run",
    "run_stream",
    "sensor_readings",
]

COLUMNS: Final = (
    "order_id",
    "order_day",
    "ship_day",
    "email",
    "country",
    "category",
    "quantity",
    "unit_price",
)
CATEGORIES: Final = ("books", "games", "garden", "kitchen", "music", "toys")
# country -> (region, currency)
COUNTRIES: Final = {
    "FR": ("Europe", "EUR"),
    "DE": ("Europe", "EUR"),
    "ES": ("Europe", "EUR"),
    "GB": ("Europe", "GBP"),
    "US": ("Americas", "USD"),
    "CA": ("Americas", "CAD"),
    "BR": ("Americas", "BRL"),
    "JP": ("Asia", "JPY"),
    "IN": ("Asia", "INR"),
}
EUROS_PER_UNIT: Final = {
    "EUR": 1.0,
    "GBP": 1.17,
    "USD": 0.92,
    "CAD": 0.68,
    "BRL": 0.18,
    "JPY": 0.0062,
    "INR": 0.011,
}
EMAIL_PATTERN: Final = r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}"
MALFORMED: Final = (  # what generate_csv breaks on purpose, and the rule that must catch it
    ("missing email", "required(email)"),
    ("quantity not a number", "type(quantity: int)"),
    ("quantity out of range", "range(quantity: 1..1000)"),
    ("unknown country", "one_of(country)"),
    ("malformed email", "matches(email)"),
    ("shipped before ordered", "shipped on or after ordered"),
    ("duplicate order id", "unique(order_id)"),
    ("row cut short", "required(quantity)"),
)
DEFAULT_ROWS: Final = 100_000
DEFAULT_MALFORMED_SHARE: Final = 0.03
DEFAULT_IO_WORKERS: Final = 8
DEFAULT_IO_LATENCY: Final = 0.0005
IO_SECONDS_PER_ROW: Final = 40e-6
DEFAULT_WRITE_TARGET: Final = 0.01
SHOWN_ANOMALIES: Final = 3  # per window line
DEFAULT_RATE: Final = 200.0
SEQUENTIAL_CHUNK: Final = 256  # rows per step in sequential mode, a batch's worth


# generating the input


@dataclass(frozen=True, slots=True)
class GeneratedCsv:
    """A generated CSV file: its rows, and the first rule each malformed line must fail."""

    path: Path
    rows: int
    expected_rejects: dict[int, str]  # line number (the header is line 1) -> rule


def generate_csv(
    path: Path, rows: int = DEFAULT_ROWS, *, seed: int = 1, malformed: float = 0.03
) -> GeneratedCsv:
    """Write `rows` orders to `path`, a share `malformed` of them broken (see MALFORMED).

    Some good rows are dirty but valid (blanks around values, upper-case emails, lower-
    case countries), for the clean step to fix.
    """
    rng = random.Random(seed)
    expected: dict[int, str] = {}
    good_ids: list[int] = []
    start = datetime.date(2026, 1, 1)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for index in range(rows):
            line = index + 2
            order_id = 100_000 + index
            ordered = start + datetime.timedelta(days=rng.randrange(365))
            country = rng.choice(tuple(COUNTRIES))
            name = f"{rng.choice(('ann', 'bob', 'chen', 'dana', 'eve'))}{rng.randrange(1000)}"
            row: list[str] = [
                str(order_id),
                ordered.isoformat(),
                (ordered + datetime.timedelta(days=rng.randrange(6))).isoformat(),
                f"{name}@example.com",
                country,
                rng.choice(CATEGORIES),
                str(rng.randint(1, 20)),
                f"{rng.uniform(1, 200):.2f}",
            ]
            if rng.random() < 0.05:  # dirty but valid
                row[3] = f" {row[3].upper()} "
                row[4] = f"{row[4].lower()} "
            if rng.random() < malformed:
                kind = rng.randrange(len(MALFORMED))
                if kind == 6 and not good_ids:
                    kind = 0
                _break(row, kind, rng, ordered, good_ids)
                expected[line] = MALFORMED[kind][1]
                if kind == 7:
                    row = row[:6]
            else:
                good_ids.append(order_id)
                del good_ids[:-1000]
            writer.writerow(row)
    return GeneratedCsv(path, rows, expected)


def _break(
    row: list[str], kind: int, rng: random.Random, ordered: datetime.date, good_ids: list[int]
) -> None:
    """Spoil `row` in the way MALFORMED[kind] describes (a cut-short row is cut later)."""
    if kind == 0:
        row[3] = ""
    elif kind == 1:
        row[6] = rng.choice(("three", "4.5", "n/a"))
    elif kind == 2:
        row[6] = str(rng.choice((0, -2, 5000)))
    elif kind == 3:
        row[4] = "XX"
    elif kind == 4:
        row[3] = row[3].replace("@", " at ")
    elif kind == 5:
        row[2] = (ordered - datetime.timedelta(days=1 + rng.randrange(5))).isoformat()
    elif kind == 6:
        row[0] = str(rng.choice(good_ids))


def check_header(path: Path) -> None:
    """Check that the CSV file at `path` starts with the header of COLUMNS.

    Raises:
        ValueError: it does not (naming the file and both headers).
        OSError: the file cannot be read.
    """
    with path.open(newline="", encoding="utf-8") as file:
        header = next(csv.reader(file), [])
    if tuple(name.strip() for name in header) != COLUMNS:
        raise ValueError(
            f"{path}: the header must be {','.join(COLUMNS)}, got {','.join(header) or 'nothing'}"
        )


def read_csv(path: Path, counter: list[int]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for every data row of `path`; count them in `counter[0]`."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        next(reader, None)  # the header
        for fields in reader:
            counter[0] += 1
            yield reader.line_num, fields


# the steps


def parse(row: tuple[int, list[str]]) -> dict[str, Any]:
    """Turn (line, fields) into a record; convert the values that parse, keep the rest."""
    line, fields = row
    record: dict[str, Any] = dict(zip(COLUMNS, fields, strict=False))
    record["line"] = line
    for name, convert in (("order_id", int), ("quantity", int), ("unit_price", float)):
        with contextlib.suppress(KeyError, ValueError):
            record[name] = convert(record[name].strip())
    for name in ("order_day", "ship_day"):
        with contextlib.suppress(KeyError, ValueError):
            record[name] = datetime.date.fromisoformat(record[name].strip())
    return record


def clean(record: dict[str, Any]) -> dict[str, Any]:
    """Strip blanks, upper-case the country code and lower-case the email."""
    for name in ("email", "country", "category"):
        value = record.get(name)
        if isinstance(value, str):
            record[name] = value.strip()
    if isinstance(record.get("country"), str):
        record["country"] = record["country"].upper()
    if isinstance(record.get("email"), str):
        record["email"] = record["email"].lower()
    return record


def quality_rules() -> list[Rule]:
    """Return the rules an order must meet."""
    return [
        *(Required(name) for name in COLUMNS),
        IsType("order_id", int),
        IsType("quantity", int),
        InRange("quantity", 1, 1000),
        IsType("unit_price", float),
        InRange("unit_price", 0.01, 100_000.0),
        IsType("order_day", datetime.date),
        IsType("ship_day", datetime.date),
        OneOf("country", COUNTRIES),
        OneOf("category", CATEGORIES),
        Matches("email", EMAIL_PATTERN),
        Consistent(
            "shipped on or after ordered",
            _shipped_after_ordered,
            ["order_day", "ship_day"],
            message="ship_day is before order_day",
        ),
        Unique("order_id"),
    ]


def _shipped_after_ordered(record: Mapping[str, Any]) -> bool:
    ordered, shipped = record["order_day"], record["ship_day"]
    return (
        not isinstance(ordered, datetime.date)
        or not isinstance(shipped, datetime.date)
        or shipped >= ordered
    )


class RegionLookup(PipelineStage[dict[str, Any], dict[str, Any]]):
    """Add the region and currency of a record's country, from a reference database.

    Each worker opens its own connection in `setup()` (an sqlite3 connection belongs to
    the thread that made it) and keeps a small cache of the codes it has looked up.
    """

    def __init__(self, reference: Path, *, name: str = "lookup", workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.reference = reference

    def setup(self) -> None:
        self.local.connection = sqlite3.connect(self.reference)
        self.local.cache = {}

    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        cache: dict[str, tuple[str, str]] = self.local.cache
        country = item["country"]
        found = cache.get(country)
        if found is None:
            row = self.local.connection.execute(
                "SELECT region, currency FROM countries WHERE code = ?", (country,)
            ).fetchone()
            if row is None:
                raise LookupError(f"no country {country!r} in the reference data")
            found = cache[country] = (row[0], row[1])
        item["region"], item["currency"] = found
        return item

    def teardown(self) -> None:
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            connection.close()


class ConvertToEuros(PipelineStage[dict[str, Any], dict[str, Any]]):
    """Add `amount_eur`, asking a remote rate service once per batch (simulated I/O)."""

    def __init__(
        self, latency: float, *, name: str = "convert", workers: int = DEFAULT_IO_WORKERS
    ) -> None:
        super().__init__(name, workers=workers)
        self.latency = latency
        self._network = threading.Event()  # never set: waiting on it stands in for I/O

    def process_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rates = self.fetch_rates({item["currency"] for item in items}, len(items))
        for item in items:
            item["amount_eur"] = round(
                item["quantity"] * item["unit_price"] * rates[item["currency"]], 2
            )
        return items

    def fetch_rates(self, currencies: set[str], rows: int) -> dict[str, float]:
        """Return euros per unit of each currency: one request, `latency` + 40 us a row."""
        self._network.wait(self.latency + IO_SECONDS_PER_ROW * rows)
        return {currency: EUROS_PER_UNIT[currency] for currency in currencies}


# loading


class Loader:
    """Write rows to SQLite in transactions sized by an `AdaptiveBatcher`; total categories.

    Used in one thread (the caller's): a connection belongs to its thread.
    """

    def __init__(self, database: Path, write_target: float) -> None:
        self.connection = sqlite3.connect(database, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute(
            "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, order_day TEXT, ship_day TEXT,"
            " email TEXT, country TEXT, region TEXT, category TEXT, quantity INTEGER,"
            " unit_price REAL, currency TEXT, amount_eur REAL)"
        )
        self.connection.execute(
            "CREATE TABLE category_totals (category TEXT PRIMARY KEY, orders INTEGER,"
            " quantity INTEGER, amount_eur REAL)"
        )
        self.batcher = AdaptiveBatcher(write_target, initial=64)
        self.pending: list[tuple[Any, ...]] = []
        self.totals: dict[str, list[float]] = {}
        self.write_seconds = 0.0
        self.writes = 0

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        """Total `records` per category and write whole batches of them."""
        for record in records:
            total = self.totals.setdefault(record["category"], [0, 0, 0.0])
            total[0] += 1
            total[1] += record["quantity"]
            total[2] += record["amount_eur"]
            self.pending.append(
                (
                    record["order_id"],
                    record["order_day"].isoformat(),
                    record["ship_day"].isoformat(),
                    record["email"],
                    record["country"],
                    record["region"],
                    record["category"],
                    record["quantity"],
                    record["unit_price"],
                    record["currency"],
                    record["amount_eur"],
                )
            )
        while len(self.pending) >= self.batcher.size:
            self._write(self.batcher.plan_batch(len(self.pending)))

    def finish(self) -> int:
        """Write what is pending and the category totals; return the rows in the table."""
        while self.pending:
            self._write(self.batcher.plan_batch(len(self.pending)))
        with self._transaction():
            self.connection.executemany(
                "INSERT INTO category_totals VALUES (?, ?, ?, ?)",
                [(name, *total) for name, total in sorted(self.totals.items())],
            )
        (loaded,) = self.connection.execute("SELECT COUNT(*) FROM orders").fetchone()
        return int(loaded)

    def _write(self, size: int) -> None:
        started = time.perf_counter()
        with self._transaction():
            self.connection.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.pending[:size]
            )
        elapsed = time.perf_counter() - started
        del self.pending[:size]
        self.batcher.record_batch(size, elapsed)
        self.write_seconds += elapsed
        self.writes += 1

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")


def make_reference(path: Path) -> None:
    """Create the reference database of countries the lookup stage reads."""
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("CREATE TABLE countries (code TEXT PRIMARY KEY, region, currency)")
        connection.executemany(
            "INSERT INTO countries VALUES (?, ?, ?)",
            [(code, region, currency) for code, (region, currency) in COUNTRIES.items()],
        )


# the batch job


@dataclass(frozen=True, slots=True)
class EtlResult:
    """What an ETL run did; `rows_read == loaded + rejected` when nothing was lost."""

    mode: str
    rows_read: int
    loaded: int
    rejected: int
    rejected_by_rule: dict[str, int]
    rejects_by_line: dict[int, str]  # line -> first failed rule
    categories: dict[str, tuple[int, int, float]]
    seconds: float  # from the first row read to the last row committed
    write_seconds: float
    writes: int
    writer: BatcherStatistics
    database: Path

    @property
    def reconciled(self) -> bool:
        """Whether every row read was either loaded or rejected."""
        return self.rows_read == self.loaded + self.rejected


def run(
    rows: int = DEFAULT_ROWS,
    *,
    input_csv: Path | None = None,
    workdir: Path | None = None,
    sequential: bool = False,
    io_workers: int = DEFAULT_IO_WORKERS,
    io_latency: float = DEFAULT_IO_LATENCY,
    write_target: float = DEFAULT_WRITE_TARGET,
    seed: int = 1,
    malformed: float = DEFAULT_MALFORMED_SHARE,
    quality_json: Path | None = None,
    out: TextIO | None = None,
) -> EtlResult:
    """Run the ETL job and print its reports to `out` (default: standard output).

    Args:
        rows: how many rows to generate (ignored with `input_csv`).
        input_csv: read this CSV file (with the header of COLUMNS) instead.
        workdir: where the CSV, the reference data and `etl.db` go; a temporary
            directory, removed afterwards, by default.
        sequential: run the steps one after the other in this thread.
        io_workers: workers of the I/O-bound conversion stage.
        io_latency: seconds each request to the rate service takes, plus 40 us a row.
        write_target: the latency objective of one write transaction, in seconds.
        seed, malformed: of the generated CSV.
        quality_json: also write the quality report there, as JSON.

    Raises:
        StageError: a stage failed (a bug: bad rows are rejected, not raised).
    """
    out = sys.stdout if out is None else out
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="etl-")))
        workdir.mkdir(parents=True, exist_ok=True)
        generate_seconds = 0.0
        if input_csv is None:
            started = time.perf_counter()
            input_csv = workdir / "orders.csv"
            generate_csv(input_csv, rows, seed=seed, malformed=malformed)
            generate_seconds = time.perf_counter() - started
        check_header(input_csv)
        reference = workdir / "reference.db"
        database = workdir / "etl.db"
        for stale in (reference, database):
            stale.unlink(missing_ok=True)
        make_reference(reference)
        mode = "sequential" if sequential else f"pipeline, {io_workers} conversion workers"
        out.write(f"ETL: {input_csv} -> {database} ({mode})\n\n")
        validate = QualityStage(quality_rules(), name="validate")
        steps: list[PipelineStage[Any, Any]] = [
            FunctionStage(parse, name="parse"),
            FunctionStage(clean, name="clean"),
            validate,
            RegionLookup(reference),
            ConvertToEuros(io_latency, workers=io_workers),
        ]
        loader = Loader(database, write_target)
        stack.callback(loader.connection.close)  # closing twice is harmless
        counter = [0]
        started = time.perf_counter()
        if sequential:
            step_seconds = _run_sequentially(steps, read_csv(input_csv, counter), loader)
            pipeline = None
        else:
            pipeline = Pipeline(steps)
            # closing(): a failure in this thread (or Ctrl-C) stops and joins the run now.
            with contextlib.closing(pipeline.stream(read_csv(input_csv, counter))) as rows_out:
                for batch in _batches(rows_out):
                    loader.add(batch)
            step_seconds = {}
        loaded = loader.finish()
        seconds = time.perf_counter() - started
        result = _result(mode, counter[0], loaded, validate.rejects, loader, seconds, database)
        summary = validate.report.summary()
        if quality_json is not None:
            quality_json.write_text(summary.to_json(), encoding="utf-8")
        _print_report(out, result, summary.table(), pipeline, step_seconds, generate_seconds)
    return result


def _batches(items: Iterator[dict[str, Any]], size: int = 512) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run_sequentially(
    steps: list[PipelineStage[Any, Any]], rows: Iterator[tuple[int, list[str]]], loader: Loader
) -> dict[str, float]:
    """Run every step on chunks of rows in this thread; return the seconds per step."""
    seconds = dict.fromkeys([step.name for step in steps] + ["load"], 0.0)
    for step in steps:
        step.setup()
    try:
        while chunk := [row for _, row in zip(range(SEQUENTIAL_CHUNK), rows, strict=False)]:
            items: list[Any] = chunk
            for step in steps:
                started = time.perf_counter()
                items = step.process_batch(items)
                seconds[step.name] += time.perf_counter() - started
            started = time.perf_counter()
            loader.add(items)
            seconds["load"] += time.perf_counter() - started
    finally:
        for step in steps:
            step.teardown()
    return seconds


def _result(
    mode: str,
    rows_read: int,
    loaded: int,
    rejects: Rejects,
    loader: Loader,
    seconds: float,
    database: Path,
) -> EtlResult:
    rejected = rejects.snapshot()
    by_line = {rejection.record["line"]: rejection.rule for rejection in rejected}
    return EtlResult(
        mode=mode,
        rows_read=rows_read,
        loaded=loaded,
        rejected=len(rejected),
        rejected_by_rule=dict(Counter(rejection.rule for rejection in rejected).most_common()),
        rejects_by_line=by_line,
        categories={
            name: (int(total[0]), int(total[1]), round(total[2], 2))
            for name, total in sorted(loader.totals.items())
        },
        seconds=seconds,
        write_seconds=loader.write_seconds,
        writes=loader.writes,
        writer=loader.batcher.statistics(),
        database=database,
    )


def _print_report(
    out: TextIO,
    result: EtlResult,
    quality_table: str,
    pipeline: Pipeline[Any, Any] | None,
    step_seconds: dict[str, float],
    generate_seconds: float,
) -> None:
    say = out.write
    say(f"quality report\n{quality_table}\n\n")
    say("rejected rows by the first rule they failed\n")
    for rule, count in result.rejected_by_rule.items():
        say(f"  {rule:<32} {count:>7,}\n")
    say("\ntotals per category (loaded rows)\n")
    say(f"  {'category':<10} {'orders':>8} {'quantity':>9} {'amount (EUR)':>15}\n")
    for name, (orders, quantity, amount) in result.categories.items():
        say(f"  {name:<10} {orders:>8,} {quantity:>9,} {amount:>15,.2f}\n")
    if pipeline is not None:
        stats = pipeline.stats()
        if stats is not None:
            say(f"\nper-stage report\n{format_report(stats)}\n")
    writer = result.writer
    say("\nwhere the time went\n")
    if generate_seconds:
        say(f"  generating the CSV           {generate_seconds:8.3f} s (not in the run)\n")
    say(f"  the run, read to committed   {result.seconds:8.3f} s ({result.mode})\n")
    for name, seconds in step_seconds.items():
        if name != "load":
            say(f"    {name:<26} {seconds:8.3f} s\n")
    say(
        f"    writing to SQLite          {result.write_seconds:8.3f} s in {result.writes:,} "
        f"transactions (last {writer.window}: mean {writer.mean_size:,.0f} rows, "
        f"{writer.mean_latency * 1e3:.1f} ms, {writer.over_target:.0%} over the objective)\n"
    )
    verdict = "reconciled" if result.reconciled else "DO NOT RECONCILE"
    say(
        f"\ntotals: {result.rows_read:,} rows read = {result.loaded:,} loaded + "
        f"{result.rejected:,} rejected: {verdict}\n"
    )


# the stream job


@dataclass(frozen=True, slots=True)
class Reading:
    """One sensor reading: when it was taken (event time, seconds), where, and its value."""

    time: float
    sensor: str
    value: float


def sensor_readings(
    rate: float, *, seed: int = 1, limit: int | None = None, paced: bool = True
) -> Iterator[Reading | Watermark]:
    """Yield readings at `rate` a second (paced on the clock unless `paced=False`).

    Values wander around 20 with uniform noise (never 3 standard deviations out on its
    own); about 1 in 400 is a spike 4 to 8 away (an anomaly); about
    1 in 50 arrives up to 0.1 s late (within the allowed lateness), 1 in 2000 arrives
    2 s late (after its window closed). With `limit`, the stream ends after that many
    readings with `Watermark(inf)`, which closes its last windows.
    """
    rng = random.Random(seed)
    held: list[Reading] = []
    clock_started = time.monotonic()
    index = 0
    while limit is None or index < limit:
        at = index / rate
        if paced:
            ahead = clock_started + at - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        value = 20 + 2 * math.sin(at / 5) + rng.uniform(-1, 1)
        if rng.random() < 1 / 400:
            value += rng.choice((-1, 1)) * rng.uniform(4, 8)
        reading = Reading(at, f"s{index % 3}", value)
        draw = rng.random()
        if draw < 1 / 2000:
            reading = Reading(max(0.0, at - 2.0), reading.sensor, value)
        elif draw < 1 / 50:
            held.append(Reading(max(0.0, at - rng.uniform(0, 0.1)), reading.sensor, value))
            index += 1
            continue
        yield reading
        while held and held[0].time <= at - 0.05:
            yield held.pop(0)
        index += 1
    yield from held
    yield Watermark(math.inf)


@dataclass(frozen=True, slots=True)
class WindowReport:
    """One window of the stream: its statistics, its anomalies, and (to plot) its points."""

    summary: WindowSummary
    anomalies: WindowAnomalies
    points: tuple[tuple[float, float], ...] = ()


@dataclass(slots=True)
class StreamResult:
    """What a stream run saw. `kept` holds every window's report only when plotting,
    so an endless run keeps counts, not windows."""

    readings: int = 0
    windows: int = 0
    anomalies: int = 0
    late: int = 0
    kept: list[WindowReport] = field(default_factory=list)


def run_stream(
    *,
    rate: float = DEFAULT_RATE,
    window: float = 1.0,
    readings: int | None = None,
    seed: int = 1,
    paced: bool = True,
    plot: Path | None = None,
    out: TextIO | None = None,
) -> StreamResult:
    """Print one line per window of the sensor stream until it ends or Ctrl-C.

    On Ctrl-C the run stops (every thread joined), a summary is printed, and the
    KeyboardInterrupt is raised again for the caller.

    Raises:
        ImportError: `plot` is given and matplotlib is not installed; said before the
            stream starts, not after it has run.
    """
    if plot is not None:
        _plotting()
    out = sys.stdout if out is None else out
    detect = anomalies(_value, k=3.0)
    describe = summarize(_value, percentiles=(50, 99), key=_sensor)

    def report(window_: Window[Reading]) -> WindowReport:
        points = tuple((item.time, item.value) for item in window_.items) if plot else ()
        return WindowReport(describe(window_), detect(window_), points)

    stage = TimeWindows(report, window, event_time=_time, allowed_lateness=0.2, name="windows")
    pipeline: Pipeline[Any, WindowReport] = Pipeline(stage)
    result = StreamResult()
    source = _counted(sensor_readings(rate, seed=seed, limit=readings, paced=paced), result)
    out.write(
        f"streaming sensor readings, {rate:g} a second, in {window:g} s windows (Ctrl-C to stop)\n"
    )
    out.flush()
    try:
        with contextlib.closing(pipeline.stream(source)) as windows:
            for line in windows:
                result.windows += 1
                result.anomalies += len(line.anomalies.anomalies)
                if plot is not None:
                    result.kept.append(line)
                out.write(_window_line(line) + "\n")
                out.flush()
    finally:
        result.late = stage.late_items
        out.write(
            f"{result.readings:,} readings, {result.windows:,} windows, "
            f"{result.anomalies:,} anomalies, {result.late:,} late readings dropped\n"
        )
        out.flush()
    if plot is not None:
        plot_windows(result.kept, plot)
        out.write(f"saved the plot to {plot}\n")
    return result


def _value(reading: Reading) -> float:
    return reading.value


def _sensor(reading: Reading) -> str:
    return reading.sensor


def _time(reading: Reading) -> float:
    return reading.time


def _counted(
    readings: Iterator[Reading | Watermark], result: StreamResult
) -> Iterator[Reading | Watermark]:
    for reading in readings:
        if isinstance(reading, Reading):
            result.readings += 1
        yield reading


def _window_line(report: WindowReport) -> str:
    summary = report.summary
    found = report.anomalies.anomalies
    flagged = ", ".join(
        f"{anomaly.item.sensor}={anomaly.value:.1f} ({anomaly.deviations:+.1f} sd)"
        for anomaly in found[:SHOWN_ANOMALIES]
    )
    if len(found) > SHOWN_ANOMALIES:
        flagged += f", +{len(found) - SHOWN_ANOMALIES} more"
    return (
        f"[{summary.start:8.2f}, {summary.end:8.2f}) n={summary.count:<5} "
        f"mean={summary.mean:6.2f} std={summary.std:5.2f} min={summary.min:6.2f} "
        f"max={summary.max:6.2f} p50={summary.percentiles[50]:6.2f} "
        f"p99={summary.percentiles[99]:6.2f} anomalies={len(found)}"
        + (f": {flagged}" if flagged else "")
    )


def plot_windows(reports: Sequence[WindowReport], path: Path) -> None:
    """Draw each window's mean with its +-3 std band and mark the anomalies (matplotlib).

    Raises:
        ImportError: matplotlib is not installed (`pip install 'threaded-pipeline[plot]'`).
    """
    figure_class, canvas_class = _plotting()
    from pipeline.observe.plot import COLOURS

    figure = figure_class(figsize=(11, 4.2), layout="constrained")
    canvas_class(figure)
    axes = figure.subplots()
    edges = [report.summary.start for report in reports]
    edges.append(reports[-1].summary.end if reports else 0.0)
    means = [report.summary.mean for report in reports]
    lows = [report.summary.mean - 3 * report.summary.std for report in reports]
    highs = [report.summary.mean + 3 * report.summary.std for report in reports]
    points = [point for report in reports for point in report.points]
    axes.scatter(
        [at for at, _ in points],
        [value for _, value in points],
        s=2,
        color="#999999",
        label="reading",
        zorder=1,
    )
    axes.stairs(
        highs,
        edges,
        baseline=lows,
        fill=True,
        color=COLOURS["starved"],
        alpha=0.5,
        label="window mean +- 3 std",
        zorder=2,
    )
    axes.stairs(
        means,
        edges,
        baseline=None,
        color=COLOURS["busy"],
        linewidth=2,
        label="window mean",
        zorder=3,
    )
    found = [anomaly for report in reports for anomaly in report.anomalies.anomalies]
    axes.scatter(
        [anomaly.item.time for anomaly in found],
        [anomaly.value for anomaly in found],
        s=60,
        color=COLOURS["blocked"],
        marker="x",
        zorder=4,
        label="anomaly (> 3 std)",
    )
    size = reports[0].summary.end - reports[0].summary.start if reports else 0.0
    axes.set_xlabel("event time (s)")
    axes.set_ylabel("reading")
    axes.set_title(f"a sensor stream in {size:g} s tumbling windows, anomalies marked")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    figure.savefig(path, dpi=100)


def _plotting() -> tuple[type[Figure], type[FigureCanvasAgg]]:
    """Return matplotlib's `Figure` and Agg canvas classes, or say how to install them.

    Raises:
        ImportError: matplotlib is not installed; the message names the extra.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib: pip install 'threaded-pipeline[plot]'"
        ) from exc
    return Figure, FigureCanvasAgg
