"""Whether a failed call is retried, failed over to another target, or final: decided here once.

Every caller that can try again — the SDK (one URL), `ServiceClient`, the gateway, the job
worker and callback delivery — classifies a failure into one `Outcome` and asks `retryable`,
`fails_over` or `target_failed`; none of them decides by itself. What differs between them is
only whether the request may be sent twice (`idempotent`): a query through the SDK may not be
(it is counted and published), a job or a callback may (they are at least once, and carry an
id to drop duplicates by). Errors of lower libraries (aiohttp, httpx, sockets) are mapped into
`prsm.errors` at each boundary first, so the table below is all there is.

    outcome        what happened                                  retry   fail over
    unsent         no connection, DNS, breaker open: the           yes     yes
                   request never left
    target_failed  502, 503, 504, 408, engine backend down:        yes     yes
                   the target could not serve it, another
                   (or later) may
    slow_down      429: the caller must wait (Retry-After)         yes     no: the budget
                                                                           is the caller's
    uncertain      timeout, connection lost after sending,         only if only if
                   other 5xx, a dependency's connection error:     idempotent idempotent
                   the target may have acted on it
    refused        any other status, TLS certificate refused,      no      no
                   usage errors, a bug: trying again cannot help

>>> classify(errors.ConnectError("refused"))
<Outcome.UNSENT: 'unsent'>
>>> fails_over(classify(errors.ConnectionLostError("reset")), idempotent=False)
False
"""

from __future__ import annotations

import builtins
import ssl
from enum import StrEnum

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from prsm import errors


class Outcome(StrEnum):
    """What a failure means for trying again (the table in this module's docstring)."""

    UNSENT = "unsent"
    TARGET_FAILED = "target_failed"
    SLOW_DOWN = "slow_down"
    UNCERTAIN = "uncertain"
    REFUSED = "refused"


_TARGET_FAILED_STATUSES = frozenset({408, 502, 503, 504})
_TRANSIENT = (
    builtins.TimeoutError,
    ConnectionError,
    RedisConnectionError,
    RedisTimeoutError,
    errors.TransportError,
)
"""Errors that say a dependency did not answer, after it may have acted."""


def classify_status(status: int) -> Outcome:
    """The outcome an HTTP error status stands for (call it for statuses >= 300)."""
    if status in _TARGET_FAILED_STATUSES:
        return Outcome.TARGET_FAILED
    if status == 429:
        return Outcome.SLOW_DOWN
    if status >= 500:
        return Outcome.UNCERTAIN
    return Outcome.REFUSED


def classify(exc: BaseException) -> Outcome:
    """The outcome an error stands for: PRSM's own, or a bare timeout or connection error."""
    if isinstance(exc, errors.HTTPStatusError):
        return classify_status(exc.status_code)
    if isinstance(exc, errors.TLSError | ssl.CertificateError):
        return Outcome.REFUSED
    if isinstance(exc, errors.ConnectError | errors.CircuitOpenError):
        return Outcome.UNSENT
    if isinstance(exc, errors.EngineUnavailableError):
        return Outcome.TARGET_FAILED
    if isinstance(exc, _TRANSIENT):
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
    """Whether the outcome counts against the target (its breaker, its ejection): it was
    unreachable, could not serve, answered 5xx, or went silent or dropped the connection."""
    return outcome in (Outcome.UNSENT, Outcome.TARGET_FAILED, Outcome.UNCERTAIN)


def counts_against_target(exc: BaseException) -> bool:
    """`target_failed(classify(exc))`: the one definition of failure breakers and outlier
    ejection use."""
    return target_failed(classify(exc))
