"""Ctrl-C reaches an asyncio stage: its coroutines are cancelled and their finally runs."""

from __future__ import annotations

from pathlib import Path

from support import interrupt_when_ready

SCRIPT = Path(__file__).with_name("ctrl_c_async.py")


def test_ctrl_c_cancels_the_coroutines_runs_their_finally_and_leaves_no_thread() -> None:
    returncode, stdout, stderr = interrupt_when_ready([str(SCRIPT)], ready="ready")
    assert returncode == 0, stderr
    assert stdout.strip() == "interrupted; finally ran 4 times; threads left: 0"


def test_ctrl_c_cancels_an_async_source_waiting_for_its_next_item() -> None:
    script = Path(__file__).with_name("ctrl_c_async_source.py")
    returncode, stdout, stderr = interrupt_when_ready([str(script)], ready="ready")
    assert returncode == 0, stderr
    assert stdout.strip() == "interrupted; finally ran in ['pipeline-source']; threads left: 0"
