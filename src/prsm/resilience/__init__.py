"""Resilience pieces shared by the SDK, the gateway, the worker and callbacks, each in one
shape (`handler`): a `Handler` takes a request and returns a response, a `Middleware` wraps one.

- `outcomes` decides, for every caller, what is retried, failed over or final;
- `failover` tries a request on different instances; `retry` tries it again after a wait;
- `breaker` stops calling what keeps failing; `handler.time_limit` bounds a call.
"""

from prsm.errors import CircuitOpenError
from prsm.resilience.breaker import BreakerConfig, BreakerStats, CircuitBreaker, State
from prsm.resilience.clock import ManualClock, SystemClock
from prsm.resilience.failover import failover
from prsm.resilience.handler import Handler, Middleware, chain, time_limit
from prsm.resilience.outcomes import Outcome, classify
from prsm.resilience.retry import RetryPolicy, retrying

__all__ = [
    "BreakerConfig",
    "BreakerStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "Handler",
    "ManualClock",
    "Middleware",
    "Outcome",
    "RetryPolicy",
    "State",
    "SystemClock",
    "chain",
    "classify",
    "failover",
    "retrying",
    "time_limit",
]
