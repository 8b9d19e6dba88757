"""Run every program in examples/ as a subprocess: each must exit 0, quickly, and show its point.

Each example prints what it shows; the lines below are the ones that prove it taught
its idea (exact where the output is deterministic, a pattern where it holds a time or
a process id). An example that starts threads or processes must leave none: the
interpreter has exited when `subprocess.run` returns, and the tests below check the
examples that report on their own threads and processes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DOCS = ROOT / "docs"
TIMEOUT = 30  # seconds; each example takes a few at most

# Patterns each example's output must match (re.search, multiline), to show it taught
# what it is about.
EXPECTED: dict[str, list[str]] = {
    "async_fetch.py": [
        r"^100 requests of 50 ms, 20 at a time$",
        r"^took [\d.]+ s; one at a time they would take 5\.0 s$",
        r"^first and last: 'page 0', 'page 99'$",
    ],
    "dashboard.py": [
        r"^open http://127\.0\.0\.1:\d+/ in a browser while the run goes on$",
        r"^halfway, from /stats: running=True, \d+ records delivered so far$",
        r"^at the end, from /stats: 980 records delivered, 20 rejected$",
        r'^pipeline_items_delivered_total\{pipeline="dashboard example"\} 980\.0$',
    ],
    "failure.py": [r"^error:  stage 'ParseRecord' failed on item 'grace,eighty-five'"],
    "graph.py": [
        r"^  n3\{\"invoice<br/>sequence join\"\}$",
        r"^800 invoices for 1200 orders, in order: \['order 0: apple at 0\.50', 'order 2: plum",
        r"^the join held at most \d+ parts; 400 orders dropped$",
    ],
    "processes.py": [
        r"^20,000 numbers, in input order; the longest: 17647 \(278 steps\)$",
        r"^counted in worker processes \[\d+(, \d+)?\], not in this one \(\d+\)$",
    ],
    "progress.py": [r"^1500 records stored in [\d.]+ s; enrich busy \d+%$"],
    "resumable.py": [
        r"^  committed batch 4: 400 inputs acked so far\n"
        r"the child was killed \(SIGKILL\) on item 450: 400 outputs stored,$",
        r"^600 inputs still in the queue",
        r"^resumed: ResumableRun\(batches=6, items_in=600, items_out=600, exactly_once=True\)$",
        r"^1000 outputs for 1000 inputs: 0 lost, 0 twice$",
    ],
    "retries.py": [
        r"^19 records, in input order: \['record-0', 'record-1', 'record-2'\] \.\.\.$",
        r"^retries: 10 \(keys \[0, 4, 8, 12, 16\] failed twice, then answered\)$",
        r"^dead letter: 13 after 1 attempt: ValueError\('key 13 is malformed'\)$",
        r"^20 keys in = 19 records \+ 1 dead letter$",
    ],
    "slow_io.py": [r"^speed-up:"],
    "timeline.py": [r"^bottleneck: ", r"^saved the timeline to "],
    "word_count.py": [r"words in 3000 lines"],
}
# What an example may write to stderr (the rest write nothing there).
STDERR: dict[str, str] = {"progress.py": r"enrich: 100%\|"}
# The chapter of the docs that links each example.
CHAPTERS = {
    "async_fetch.py": "beyond-threads.md",
    "dashboard.py": "observability.md",
    "failure.py": "failure.md",
    "graph.py": "graphs.md",
    "processes.py": "beyond-threads.md",
    "progress.py": "observability.md",
    "resumable.py": "queues.md",
    "retries.py": "failure.md",
    "slow_io.py": "tutorial.md",
    "timeline.py": "observability.md",
    "word_count.py": "tutorial.md",
}


def run_example(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_every_example_has_expected_lines_and_a_chapter() -> None:
    names = [path.name for path in EXAMPLES]
    assert sorted(EXPECTED) == names
    assert sorted(CHAPTERS) == names


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(path: Path) -> None:
    result = run_example(path)
    assert result.returncode == 0, result.stderr
    for pattern in EXPECTED[path.name]:
        assert re.search(pattern, result.stdout, re.MULTILINE), (pattern, result.stdout)
    if path.name in STDERR:
        assert re.search(STDERR[path.name], result.stderr), result.stderr
    else:
        assert result.stderr == ""


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_each_example_is_linked_from_its_chapter(name: str) -> None:
    chapter = (DOCS / CHAPTERS[name]).read_text(encoding="utf-8")
    assert f"](../examples/{name})" in chapter, f"{CHAPTERS[name]} should link examples/{name}"


def test_failure_example_leaves_no_thread_running() -> None:
    result = run_example(ROOT / "examples" / "failure.py")
    assert result.returncode == 0, result.stderr
    assert "threads still running: ['MainThread']" in result.stdout
    assert "teardown ran in pipeline-ParseRecord-0" in result.stdout
