"""Resilience pieces shared by the SDK and the gateway: circuit breaking, with more to come."""

from prsm.resilience.breaker import (
    BreakerConfig,
    BreakerStats,
    CircuitBreaker,
    CircuitOpenError,
    State,
)
from prsm.resilience.clock import ManualClock, SystemClock

__all__ = [
    "BreakerConfig",
    "BreakerStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "ManualClock",
    "State",
    "SystemClock",
]
