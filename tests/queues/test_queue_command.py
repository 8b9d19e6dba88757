"""Tests for `python -m pipeline queue FILE status|peek|requeue-dead`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.queues.codecs import PICKLE
from pipeline.queues.durable import DurableQueue

SRC = str(Path(__file__).resolve().parents[2] / "src")


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
    assert lines[1].startswith("blobs: ready 1, delayed 0, leased 0, dead 0, oldest ready ")
    assert lines[2].startswith("jobs: ready 2, delayed 0, leased 1, dead 1, oldest ready ")
    assert lines[2].endswith("codec json")


def test_status_counts_delayed_retries_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "work.db")
    with DurableQueue[str](path, "jobs") as jobs:
        jobs.put("call the service")
        jobs.nack(jobs.get(), "service down", delay=3600)
    assert main(["queue", path, "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "jobs: ready 0, delayed 1, leased 0, dead 0, oldest ready -, codec json"


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


class Hostile:
    """A codec whose name would retitle the terminal, clear it and rewrite its line."""

    name = "json\x1b]0;owned\x07\x1b[2J\r"

    def encode(self, item: object) -> bytes:
        return json.dumps(item).encode()

    def decode(self, data: bytes) -> object:
        return json.loads(data)


def test_control_characters_from_the_file_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "hostile.db")
    evil = "jobs\x1b[1A\rready 999\x9b"
    with DurableQueue[object](path, evil, codec=Hostile(), max_attempts=1) as queue:
        queue.put_many(["\x1b]0;title\x07", "next"])
        queue.nack(queue.get(), "boom\x1b[2K\rall fine")
    for action in ("status", "peek", "dead"):
        assert main(["queue", path, action]) == 0
        out = capsys.readouterr().out
        assert all(char.isprintable() for char in out.replace("\n", "")), (action, out)
    assert main(["queue", path, "dead"]) == 0
    out = capsys.readouterr().out
    assert "jobs\\x1b[1A\\rready 999\\x9b:" in out
    assert "boom\\x1b[2K\\rall fine" in out


def test_dead_lists_the_dead_letters_with_their_error_and_attempts(
    queue_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["queue", queue_file, "dead"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "blobs: 0 dead item(s)",
        "jobs: 1 dead item(s)",
        '  #4 priority -1, attempts 1: "urgent"',
        "    error: ValueError: broken",
    ]


def test_the_help_names_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["queue", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "see above" not in text
    for action in ("status:", "peek:", "dead:", "requeue-dead:"):
        assert action in text


def files_beside(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


def test_looking_changes_nothing_on_disk(
    queue_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(queue_file)
    before = (files_beside(path), path.read_bytes())
    for action in ("status", "peek", "dead"):
        assert main(["queue", queue_file, action]) == 0
        assert (files_beside(path), path.read_bytes()) == before
    capsys.readouterr()


def test_a_damaged_file_gives_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.db"
    with DurableQueue[str](path) as queue:
        queue.put_many(["x" * 3000] * 200)
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)
    before = (files_beside(path), path.read_bytes())
    for action in ("status", "peek", "dead"):
        assert main(["queue", str(path), action]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "Traceback" not in err
        assert err.startswith(f"pipeline queue: error: {str(path)!r} is damaged (")
        assert (files_beside(path), path.read_bytes()) == before


READ_ONLY_LOOK = """
import os, sys
sys.path.insert(0, {src!r})
from pipeline.cli import build_parser, main
import pipeline.queues.command, pipeline.queues.durable
import urllib.parse  # Path.as_uri() imports it on first use (3.13), from where nobody may read
build_parser().parse_args(["queue", {path!r}, "status"])  # imports all before giving up root
if os.geteuid() == 0:  # root may write anything: look as nobody
    os.setgid(65534)
    os.setuid(65534)
for action in ("status", "dead", "requeue-dead"):
    print("exit", main(["queue", {path!r}, action, "--name", "jobs"]), flush=True)
"""


def test_status_and_dead_open_a_read_only_file_read_only(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        path = folder / "queue.db"
        with DurableQueue[int](path, "jobs", max_attempts=1) as jobs:
            jobs.put_many([1, 2])
            jobs.nack(jobs.get(), "ValueError: broken")
        path.chmod(0o444)
        folder.chmod(0o555)
        child = subprocess.run(
            [sys.executable, "-c", READ_ONLY_LOOK.format(src=SRC, path=str(path))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = child.stdout.splitlines()
        assert lines[1].startswith("jobs: ready 1, delayed 0, leased 0, dead 1, ")
        assert lines[2:6] == [
            "exit 0",
            "jobs: 1 dead item(s)",
            "  #1 priority 0, attempts 1: 1",
            "    error: ValueError: broken",
        ]
        assert lines[6:] == ["exit 0", "exit 1"]
        assert child.stderr.startswith(f"pipeline queue: error: {str(path)!r} is read-only")
        assert child.stderr.count("\n") == 1
        assert files_beside(path) == ["queue.db"]
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)
        shutil.rmtree(folder)
