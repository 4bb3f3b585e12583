"""Whether a failed call is retried, failed over to another target, or final: decided here once.

Every caller that can try again — the SDK (one URL), `ServiceClient`, the gateway, the job
worker and callback delivery — classifies a failure into one `Outcome` and asks `retryable` or
`fails_over`. What differs between them is only whether the request may be sent twice
(`idempotent`): a query through the SDK may not be (it is counted and published), a job or a
callback may (they are at least once, and carry an id to drop duplicates by).

    outcome        what happened                                  retry   fail over
    unsent         no connection, DNS, TLS refused after ...       yes     yes
                   breaker open: the request never left
    target_failed  502, 503, 504, 408: the target could not         yes     yes
                   serve it, another (or later) may
    slow_down      429: the caller must wait (Retry-After)         yes     no: the budget
                                                                           is the caller's
    uncertain      timeout or reset after sending, other 5xx:      only if only if
                   the target may have acted on it                 idempotent idempotent
    refused        any other 4xx, TLS certificate refused,         no      no
                   a usage error: trying again cannot help
"""

from __future__ import annotations

from enum import StrEnum

from prsm import errors
from prsm.resilience.breaker import CircuitOpenError


class Outcome(StrEnum):
    UNSENT = "unsent"
    TARGET_FAILED = "target_failed"
    SLOW_DOWN = "slow_down"
    UNCERTAIN = "uncertain"
    REFUSED = "refused"


_TARGET_FAILED_STATUSES = frozenset({408, 502, 503, 504})


def classify_status(status: int) -> Outcome:
    """The outcome an HTTP error status stands for (call it for statuses >= 400)."""
    if status in _TARGET_FAILED_STATUSES:
        return Outcome.TARGET_FAILED
    if status == 429:
        return Outcome.SLOW_DOWN
    if status >= 500:
        return Outcome.UNCERTAIN
    return Outcome.REFUSED


def classify(exc: BaseException) -> Outcome:
    """The outcome a PRSM error (or a bare timeout or connection error) stands for."""
    if isinstance(exc, errors.HTTPStatusError):
        return classify_status(exc.status_code)
    if isinstance(exc, errors.TLSError):
        return Outcome.REFUSED
    if isinstance(exc, errors.ConnectError | CircuitOpenError):
        return Outcome.UNSENT
    if isinstance(exc, TimeoutError | ConnectionError | errors.TransportError):
        return Outcome.UNCERTAIN
    return Outcome.REFUSED


def retryable(outcome: Outcome, *, idempotent: bool) -> bool:
    """Whether the same request may be sent again (to any target, after a wait)."""
    if outcome is Outcome.UNCERTAIN:
        return idempotent
    return outcome is not Outcome.REFUSED


def fails_over(outcome: Outcome, *, idempotent: bool) -> bool:
    """Whether another target should be tried at once: the failure was the target's."""
    if outcome is Outcome.UNCERTAIN:
        return idempotent
    return outcome in (Outcome.UNSENT, Outcome.TARGET_FAILED)


def target_failed(outcome: Outcome) -> bool:
    """Whether the outcome counts against the target (its breaker, its ejection)."""
    return outcome in (Outcome.UNSENT, Outcome.TARGET_FAILED)
