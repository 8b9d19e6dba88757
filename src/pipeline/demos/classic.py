"""The classic demo trio: multiply by 2, add 10, keep the even results.

The classic stages override `process_batch` with a list comprehension that inlines
their work, the fastest batch loop Python has; their `process` (or `keep`) shows the
same work one item at a time, and a subclass that overrides it gets the per-item path
instead. With debug logging on, they log what happened to every item.
"""

from __future__ import annotations

import logging

from pipeline.stage import FilteringStage, PipelineStage, item_failure

__all__ = ["AddStage", "FilterStage", "MultiplyStage"]

logger = logging.getLogger(__name__)


class MultiplyStage(PipelineStage[int, int]):
    """The classic first stage: multiply each item by `factor` (2)."""

    def __init__(self, factor: int = 2, *, name: str | None = None, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.factor = factor

    def process(self, item: int) -> int:
        return item * self.factor

    def process_batch(self, items: list[int]) -> list[int]:
        if type(self).process is not MultiplyStage.process:
            return super().process_batch(items)  # a subclass changed what one item does
        factor = self.factor
        pending = iter(items)
        try:
            outputs = [item * factor for item in pending]
        except Exception as exc:
            raise item_failure(items, pending) from exc
        _log_pairs(self.name, items, outputs)
        return outputs


class AddStage(PipelineStage[int, int]):
    """The classic second stage: add `amount` (10) to each item."""

    def __init__(self, amount: int = 10, *, name: str | None = None, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.amount = amount

    def process(self, item: int) -> int:
        return item + self.amount

    def process_batch(self, items: list[int]) -> list[int]:
        if type(self).process is not AddStage.process:
            return super().process_batch(items)  # a subclass changed what one item does
        amount = self.amount
        pending = iter(items)
        try:
            outputs = [item + amount for item in pending]
        except Exception as exc:
            raise item_failure(items, pending) from exc
        _log_pairs(self.name, items, outputs)
        return outputs


class FilterStage(FilteringStage[int]):
    """The classic third stage: keep the even items."""

    def keep(self, item: int) -> bool:
        return item % 2 == 0

    def process_batch(self, items: list[int]) -> list[int]:
        if type(self).keep is not FilterStage.keep:
            return super().process_batch(items)  # a subclass changed what is kept
        pending = iter(items)
        try:
            outputs = [item for item in pending if item % 2 == 0]
        except Exception as exc:
            raise item_failure(items, pending) from exc
        if logger.isEnabledFor(logging.DEBUG):
            for item in items:
                logger.debug("%s: %r %s", self.name, item, "kept" if item % 2 == 0 else "dropped")
        return outputs


def _log_pairs(stage: str, items: list[int], outputs: list[int]) -> None:
    """Log which stage turned which item into what, when debug logging is on."""
    if logger.isEnabledFor(logging.DEBUG):
        for item, output in zip(items, outputs, strict=True):
            logger.debug("%s: %r -> %r", stage, item, output)
