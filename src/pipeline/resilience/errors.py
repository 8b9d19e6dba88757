"""The errors that only the resilience extra raises, under the package's `PipelineError`."""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = ["CircuitOpen", "FailureBudgetExceeded", "ItemTimeout"]


class CircuitOpen(PipelineError):
    """Raised instead of a call while a circuit breaker is open (or half-open and busy)."""


class ItemTimeout(PipelineError, TimeoutError):
    """Raised when a stage with a per-item timeout gives no result for an item in time."""


class FailureBudgetExceeded(PipelineError):
    """Raised when skipped or dead-lettered items exceed a failure budget; names the budget."""
