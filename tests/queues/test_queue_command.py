"""Tests for `python -m pipeline queue FILE status|peek|requeue-dead`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.queues.codecs import PICKLE
from pipeline.queues.durable import DurableQueue


@pytest.fixture
def queue_file(tmp_path: Path) -> str:
    path = str(tmp_path / "work.db")
    with DurableQueue[object](path, "jobs", max_attempts=1) as jobs:
        jobs.put_many([{"id": 1}, "two", [3]])
        jobs.put("urgent", priority=-1)
        jobs.nack(jobs.get(), "ValueError: broken")  # "urgent" goes to the dead letters
        jobs.get()  # {"id": 1} stays leased by this (running) process
    with DurableQueue[object](path, "blobs", codec=PICKLE) as blobs:
        blobs.put({1, 2})
    return path


def test_status_counts_every_queue(queue_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", queue_file, "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{queue_file}: 2 queue(s), ")
    assert lines[1].startswith("blobs: ready 1, leased 0, dead 0, oldest ready ")
    assert lines[2].startswith("jobs: ready 2, leased 1, dead 1, oldest ready ")
    assert lines[2].endswith("codec json")


def test_peek_shows_json_and_never_unpickles(
    queue_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["queue", queue_file, "peek", "-n", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "blobs:",
        "  #5 priority 0: <20 bytes, codec pickle: not decoded here>",
        "jobs:",
        '  #2 priority 0: "two"',
    ]


def test_requeue_dead_brings_dead_letters_back(
    queue_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["queue", queue_file, "requeue-dead", "--name", "jobs"]) == 0
    assert capsys.readouterr().out == "jobs: 1 dead item(s) back to ready\n"
    with DurableQueue[object](queue_file, "jobs") as jobs:
        assert jobs.get().item == "urgent"


def test_bad_files_and_names_are_usage_errors(
    queue_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.db")
    assert main(["queue", missing, "status"]) == 2
    assert capsys.readouterr().err == f"pipeline queue: error: no queue file at {missing!r}\n"
    assert not Path(missing).exists()  # looking never creates a file
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n" * 200)
    assert main(["queue", str(notes), "peek"]) == 2
    assert "is not a queue file: file is not a database" in capsys.readouterr().err
    assert main(["queue", queue_file, "status", "--name", "nope"]) == 2
    assert "no queue named 'nope'" in capsys.readouterr().err


def test_python_dash_m_runs_it(queue_file: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "queue", queue_file, "status", "--name", "blobs"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "blobs: ready 1" in result.stdout
