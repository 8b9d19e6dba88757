"""The batch-size policy: how many items a thread takes in one handoff.

A thread (a stage's worker or the source reader) starts by taking one item, then
doubles its take while a batch takes less than `TARGET_BATCH_SECONDS` to process, and
halves it when a batch takes much longer. Fast stages reach the full batch size within
a few batches, so handoffs stay cheap; slow stages take few items at a time, so latency
stays low and the items spread over all workers.
"""

from __future__ import annotations

from typing import Final

__all__ = ["TARGET_BATCH_SECONDS", "next_batch_size"]

TARGET_BATCH_SECONDS: Final = 0.002


def next_batch_size(size: int, taken: int, elapsed: float, max_size: int) -> int:
    """Return the next take size, given that `taken` items (of `size` asked) took `elapsed` s."""
    if elapsed > 2 * TARGET_BATCH_SECONDS:
        return max(1, size // 2)
    if taken == size and elapsed < TARGET_BATCH_SECONDS:
        return min(max_size, size * 2)
    return size
