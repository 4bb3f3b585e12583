"""Retry with backoff: the policy (`RetryPolicy`) and its middleware (`retrying`).

What may be retried is `prsm.resilience.outcomes`' decision, never the policy's: the policy
only says how often and how long to wait. tenacity does the waiting and stays private here.

>>> policy = RetryPolicy(retries=2, backoff_initial=0.05)
>>> answer = await policy.run(lambda: client.query("hi", user_id="u1"))   # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity

from prsm.errors import HTTPStatusError, UsageError
from prsm.resilience.handler import Handler, Middleware, Req, Resp
from prsm.resilience.outcomes import classify, retryable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    Retried: what `prsm.resilience.outcomes` says may be retried — for a request that must not
    be sent twice, what provably did not run (connection failures, 408, a 503 marked
    `X-PRSM-Not-Run`) and 429; never another 4xx, and never a request that may have run (an
    unmarked 502, 503 or 504, or a timeout or a connection lost after it was sent: the server
    may still be working on it). Waits grow exponentially with full jitter from `backoff_initial`
    up to `backoff_max`; a server's `Retry-After` is honoured instead, unless it exceeds
    `max_retry_after`, in which case the error is raised at once.

    >>> policy = RetryPolicy(retries=5, backoff_initial=0.05)
    >>> policy.backoff_max, policy.max_retry_after
    (5.0, 30.0)
    """

    retries: int = 3
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    max_retry_after: float = 30.0
    raise_at_once: frozenset[str] = frozenset()
    """Error codes never retried, whatever their status (a job worker hands a spent budget,
    `budget_exceeded`, back to its queue rather than wait in a job's slot)."""
    on_retry: Callable[[BaseException, float], None] | None = field(
        default=None, repr=False, compare=False
    )
    """Called before each wait with the error and the seconds to wait (log it, count it)."""

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise UsageError("retries must be 0 or more")

    def should_retry(self, exc: BaseException, *, idempotent: bool = False) -> bool:
        """Whether `exc` may be followed by another try, and its `Retry-After` is not too long."""
        if not retryable(classify(exc), idempotent=idempotent):
            return False
        if isinstance(exc, HTTPStatusError) and exc.code in self.raise_at_once:
            return False
        retry_after = exc.retry_after if isinstance(exc, HTTPStatusError) else None
        return retry_after is None or retry_after <= self.max_retry_after

    async def run(self, attempt: Callable[[], Awaitable[T]], *, idempotent: bool = False) -> T:
        """`await attempt()`, tried again as the policy allows; the last error is raised."""
        if self.retries == 0:  # no retry machinery for a single attempt
            return await attempt()
        async for state in tenacity.AsyncRetrying(**self._options(idempotent)):
            with state:
                return await attempt()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def run_sync(self, attempt: Callable[[], T], *, idempotent: bool = False) -> T:
        """`run` for blocking code."""
        if self.retries == 0:
            return attempt()
        for state in tenacity.Retrying(**self._options(idempotent)):
            with state:
                return attempt()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def delay(self, exc: BaseException | None, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1): the error's
        `Retry-After` if it has one, else a random wait up to `backoff_initial * 2^(attempt-1)`,
        capped at `backoff_max` (full jitter, so callers that failed together spread out)."""
        if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
            return exc.retry_after
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - spreading retries, not a secret

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return self.delay(exc, state.attempt_number)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        if self.on_retry is not None and state.outcome is not None:
            error = state.outcome.exception()
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            if error is not None:
                self.on_retry(error, wait)

    def _options(self, idempotent: bool) -> dict[str, Any]:
        return {
            "before_sleep": self._before_sleep,
            "stop": tenacity.stop_after_attempt(self.retries + 1),
            "wait": self._wait,
            "retry": tenacity.retry_if_exception(
                lambda exc: self.should_retry(exc, idempotent=idempotent)
            ),
            "reraise": True,
        }


def retrying(policy: RetryPolicy, *, idempotent: bool = False) -> Middleware[Req, Resp]:
    """The policy as a middleware: each request is tried again as `policy.run` would."""

    def wrap(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        async def retried(request: Req) -> Resp:
            return await policy.run(lambda: handler(request), idempotent=idempotent)

        return retried

    return wrap
