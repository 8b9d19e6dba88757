"""Tests of the ETL demo end to end, its stream mode, Ctrl-C, and its command line."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support import WAIT

from pipeline.cli import main
from pipeline.demos.etl import (
    DEFAULT_MALFORMED_SHARE,
    DEFAULT_ROWS,
    MALFORMED,
    generate_csv,
    run,
    run_stream,
)

ROOT = Path(__file__).resolve().parents[2]
ROWS = 3000


@pytest.mark.parametrize("sequential", [False, True], ids=["pipeline", "sequential"])
def test_every_valid_row_is_loaded_once_and_every_invalid_one_rejected_with_its_rule(
    tmp_path: Path, sequential: bool
) -> None:
    generated = generate_csv(tmp_path / "orders.csv", ROWS, seed=3, malformed=0.1)
    assert {rule for _, rule in MALFORMED} == set(generated.expected_rejects.values())
    out = io.StringIO()
    result = run(
        input_csv=generated.path,
        workdir=tmp_path,
        sequential=sequential,
        io_latency=0.0001,
        quality_json=tmp_path / "quality.json",
        out=out,
    )
    assert result.rows_read == ROWS
    assert result.rejects_by_line == generated.expected_rejects
    assert result.rejected == len(generated.expected_rejects)
    assert result.loaded == ROWS - result.rejected
    assert result.reconciled
    # closing(): a connection used as a context manager commits but stays open.
    with contextlib.closing(sqlite3.connect(result.database)) as connection:
        ids = [row[0] for row in connection.execute("SELECT order_id FROM orders")]
        totals = connection.execute("SELECT SUM(orders) FROM category_totals").fetchone()[0]
        countries = {row[0] for row in connection.execute("SELECT DISTINCT country FROM orders")}
        emails = [row[0] for row in connection.execute("SELECT email FROM orders")]
    assert len(ids) == len(set(ids)) == result.loaded
    assert totals == result.loaded
    assert countries <= {"FR", "DE", "ES", "GB", "US", "CA", "BR", "JP", "IN"}  # cleaned
    assert all(email == email.strip().lower() for email in emails)
    report = json.loads((tmp_path / "quality.json").read_text())
    assert (report["records"], report["rejected"]) == (ROWS, result.rejected)
    text = out.getvalue()
    expected_totals = (
        f"totals: {ROWS:,} rows read = {result.loaded:,} loaded + "
        f"{result.rejected:,} rejected: reconciled"
    )
    assert expected_totals in text
    assert "quality report" in text
    assert "where the time went" in text
    assert ("per-stage report" in text) is not sequential
    if not sequential:
        assert "bottleneck:" in text


def test_the_command_line_runs_the_etl_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["etl", "--rows", "500", "--io-latency", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "rows read = " in out
    assert ": reconciled" in out


def test_the_stream_prints_a_line_per_window_with_its_anomalies(tmp_path: Path) -> None:
    out = io.StringIO()
    picture = tmp_path / "windows.png"
    result = run_stream(rate=200, readings=2000, paced=False, plot=picture, out=out)
    lines = out.getvalue().splitlines()
    window_lines = [line for line in lines if line.startswith("[")]
    assert len(window_lines) == result.windows == 10  # the last closed by Watermark(inf)
    assert result.readings == 2000
    assert result.anomalies == sum(len(r.anomalies.anomalies) for r in result.kept) > 0
    assert sum(report.summary.count for report in result.kept) == 2000 - result.late
    for report in result.kept:
        for anomaly in report.anomalies.anomalies:
            assert abs(anomaly.value - report.summary.mean) > 3 * report.summary.std
    assert picture.stat().st_size > 10_000
    assert lines[-2] == (
        f"2,000 readings, 10 windows, {result.anomalies} anomalies, "
        f"{result.late} late readings dropped"
    )


def test_the_stream_stops_cleanly_on_a_real_ctrl_c() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run_etl_example.py"),
            "--stream",
            "--rate",
            "2000",
            "--window",
            "0.05",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("streaming sensor readings")
        assert process.stdout.readline().startswith("[    0.00,     0.05) n=")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=WAIT)
    finally:
        process.kill()
        process.wait(WAIT)
    assert process.returncode == 130
    assert stderr.endswith("pipeline: interrupted\n")
    assert "Traceback" not in stderr
    assert " late readings dropped" in stdout.splitlines()[-1]


def test_a_csv_with_another_header_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.csv"
    other.write_text("id,name\n1,ann\n", encoding="utf-8")
    assert main(["etl", "--input", str(other), "--workdir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"pipeline etl: error: {other}: the header must be order_id,order_day,ship_day,email,"
        "country,category,quantity,unit_price, got id,name\n"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--stream", "--rate", "0"], "argument --rate: must be a finite number > 0, got 0"),
        (["--window", "x"], "argument --window: not a number: 'x'"),
        (["--rows", "0"], "argument --rows: must be >= 1, got 0"),
        (["--io-latency", "-1"], "argument --io-latency: must be a finite number >= 0, got -1"),
    ],
)
def test_bad_options_are_usage_errors(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["etl", *arguments])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(f"pipeline etl: error: {message}\n")


def test_the_totals_the_etl_page_shows_are_those_of_the_default_job(tmp_path: Path) -> None:
    """The page prints the totals line of `pipeline etl` with its defaults: the generated
    file is seeded, so the rows it rejects, and the line, are always the same."""
    page = (ROOT / "docs" / "etl.md").read_text(encoding="utf-8")
    shown = [line for line in page.splitlines() if line.startswith("totals: ")]
    generated = generate_csv(
        tmp_path / "orders.csv", DEFAULT_ROWS, seed=1, malformed=DEFAULT_MALFORMED_SHARE
    )
    rejected = len(generated.expected_rejects)
    assert shown == [
        f"totals: {DEFAULT_ROWS:,} rows read = {DEFAULT_ROWS - rejected:,} loaded + "
        f"{rejected:,} rejected: reconciled"
    ]
