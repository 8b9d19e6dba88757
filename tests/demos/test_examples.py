"""Run every program in examples/ as a subprocess: each must exit 0, quickly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 30  # seconds; each example takes well under one

# A line each example must print, to show it taught what it is about.
EXPECTED = {
    "failure.py": "error:  stage 'ParseRecord' failed on item 'grace,eighty-five'",
    "slow_io.py": "speed-up:",
    "timeline.py": "saved the timeline to",
    "word_count.py": "words in 3000 lines",
}


def test_every_example_has_an_expected_line() -> None:
    assert sorted(EXPECTED) == [path.name for path in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert EXPECTED[path.name] in result.stdout
    assert result.stderr == ""


def test_failure_example_leaves_no_thread_running() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "failure.py")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert "threads still running: ['MainThread']" in result.stdout
    assert "teardown ran in pipeline-ParseRecord-0" in result.stdout
