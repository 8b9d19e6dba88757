"""Tests for the data example, `pipeline.demos.sensors`, called as the command line calls it."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from pipeline.demos import sensors
from pipeline.native.reference import transform_reference


@pytest.mark.c_stage
def test_data_example_writes_the_results_and_compares_with_the_reference(
    tmp_path: Path,
) -> None:
    output = tmp_path / "results.csv"
    report = io.StringIO()
    assert sensors.run(count=3000, threads=2, output=output, out=report) == 0
    assert "3,000 sensor readings generated (seed 42)" in report.getvalue()
    assert "results identical bit for bit: yes" in report.getvalue()
    expected, _ = transform_reference(sensors.generate_readings(3000, 42))
    rows = output.read_text().splitlines()
    assert rows[0] == "result"
    assert [float(row) for row in rows[1:]] == expected.tolist()


@pytest.mark.c_stage
def test_data_example_reads_readings_from_a_csv_column(tmp_path: Path) -> None:
    readings = tmp_path / "readings.csv"
    readings.write_text("time,value\n1,16\n2,-1\n3,nan\n4,-inf\n5,25\n")
    output = tmp_path / "results.csv"
    report = io.StringIO()
    assert sensors.run(input_path=readings, output=output, out=report) == 0
    assert output.read_text().splitlines() == ["result", "8.0", "10.0"]
    assert re.search(r"invalid \(NaN/Inf\)\s+2\s+2", report.getvalue())


@pytest.mark.c_stage
def test_data_example_with_no_readings_reports_zeros(tmp_path: Path) -> None:
    report = io.StringIO()
    assert sensors.run(count=0, output=tmp_path / "results.csv", out=report) == 0
    assert "0 sensor readings generated" in report.getvalue()
    assert "results identical bit for bit: yes" in report.getvalue()


def test_data_example_names_the_line_of_a_cell_that_is_not_a_number(tmp_path: Path) -> None:
    readings = tmp_path / "readings.csv"
    readings.write_text("value\n1.5\nabc\n")
    with pytest.raises(ValueError, match=r"readings.csv, line 3: 'abc' is not a number$"):
        sensors.read_readings(readings, "value")


def test_data_example_checks_its_arguments_before_generating_anything(tmp_path: Path) -> None:
    def generate(count: int, seed: int) -> object:
        raise AssertionError("readings generated before the arguments were checked")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sensors, "generate_readings", generate)
        with pytest.raises(ValueError, match="thread_count must be >= 1, got 0"):
            sensors.run(threads=0, output=tmp_path / "results.csv")
