"""A Ctrl-C during a claim: the caller gets the KeyboardInterrupt and no item stays leased."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from pipeline.queues import DurableQueue


def test_a_ctrl_c_just_after_a_claim_commits_leaves_nothing_leased(tmp_path: Path) -> None:
    """The press lands as the claim's transaction has committed, before the leases reach
    the caller: before, they stayed leased, unseen by anyone, until their timeout."""
    queue: DurableQueue[int] = DurableQueue(tmp_path / "queue.db")
    pressed: list[FrameType] = []

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        caller = frame.f_back
        if (
            event == "return"
            and not pressed
            and frame.f_code.co_name == "__exit__"
            and caller is not None
            and caller.f_code.co_name == "_claim"
        ):
            pressed.append(frame)
            handler = signal.getsignal(signal.SIGINT)
            assert callable(handler)
            handler(signal.SIGINT, frame)  # as the interpreter calls it at a press
        return tracer

    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        queue.put_many([1, 2, 3])
        sys.settrace(tracer)
        try:
            with pytest.raises(KeyboardInterrupt):
                queue.get_many(3, block=False)
        finally:
            sys.settrace(None)
        assert pressed
        assert queue.counts().leased == 0
        assert [leased.item for leased in queue.get_many(3, block=False)] == [1, 2, 3]
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        queue.close()
