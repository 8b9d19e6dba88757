"""Resilience: error policies, retries, circuit breakers and per-item timeouts for any stage.

`ResilientStage` wraps a stage and applies, per item: a timeout, retries with backoff,
a circuit breaker, and an error policy (raise, skip, or collect into dead letters)
within a failure budget. Standard library only.
"""

from pipeline.resilience.breaker import BreakerState, CircuitBreaker, StateChange
from pipeline.resilience.errors import CircuitOpen, FailureBudgetExceeded, ItemTimeout
from pipeline.resilience.policy import DeadLetter, DeadLetters, ErrorPolicy, FailureBudget
from pipeline.resilience.resilient import ResilienceStatistics, ResilientStage
from pipeline.resilience.retry import TRANSIENT_ERRORS, RetryPolicy

__all__ = [
    "TRANSIENT_ERRORS",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "DeadLetter",
    "DeadLetters",
    "ErrorPolicy",
    "FailureBudget",
    "FailureBudgetExceeded",
    "ItemTimeout",
    "ResilienceStatistics",
    "ResilientStage",
    "RetryPolicy",
    "StateChange",
]
