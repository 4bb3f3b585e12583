"""Whether a failed call is retried, failed over to another target, or final: decided here once.

Every caller that can try again — the SDK (one URL), `ServiceClient`, the gateway, the job
worker and callback delivery — classifies a failure into one `Outcome` and asks `retryable`,
`fails_over` or `target_failed`; none of them decides by itself. What differs between them is
only whether the request may be sent twice (`idempotent`): a GET may; so may a job submission
or a query carrying an `Idempotency-Key` the API deduplicates, a job run or a callback (they
are at least once, and carry an id to drop duplicates by); a query without one may not — it
is charged to a budget, counted and published. The rule is one for every caller, the SDK and
the gateway alike: a request that is not idempotent is sent again only when it provably did
not run — it never left, or the answer says it was refused before anything acted on it (408;
a 503 marked `X-PRSM-Not-Run`, as PRSM marks a draining or saturated instance, an engine not
ready). A 5xx marked `X-PRSM-Shared-Outage` says a dependency every instance shares is down
(Redis): another instance would answer the same, so it is neither failed over nor held against
the instance — an outage every instance's breaker counted would open them all. Errors of lower
libraries (aiohttp, httpx, sockets) are mapped into `prsm.errors` at each boundary first, so
the table below is all there is.

    outcome        what happened                                  retry   fail over
    unsent         no connection, DNS, breaker open: the           yes     yes
                   request never left
    not_run        408, or an answer marked X-PRSM-Not-Run:        yes     yes
                   refused before anything acted on it
    target_failed  502, 503, 504, engine backend down: the         only if only if
                   target could not serve it, perhaps after        idempotent idempotent
                   acting (an engine timeout spent tokens)
    slow_down      429: the caller must wait (Retry-After)         yes     no: the budget
                                                                           is the caller's
    outage         a 5xx marked X-PRSM-Shared-Outage: what         only if no: all say
                   every instance shares is down (Redis)           idempotent the same
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
    NOT_RUN = "not_run"
    TARGET_FAILED = "target_failed"
    SLOW_DOWN = "slow_down"
    OUTAGE = "outage"
    UNCERTAIN = "uncertain"
    REFUSED = "refused"


_TARGET_FAILED_STATUSES = frozenset({502, 503, 504})
_TRANSIENT = (
    builtins.TimeoutError,
    ConnectionError,
    RedisConnectionError,
    RedisTimeoutError,
    errors.TransportError,
)
"""Errors that say a dependency did not answer, after it may have acted."""


def classify_status(status: int, *, not_run: bool = False, shared: bool = False) -> Outcome:
    """The outcome an HTTP error status stands for (call it for statuses >= 300); `not_run`:
    the answer says the request was refused before anything acted on it; `shared`: its cause
    is shared by every instance."""
    if shared and status >= 500:
        return Outcome.OUTAGE
    if status == 408 or (not_run and status >= 500):
        return Outcome.NOT_RUN
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
        return classify_status(exc.status_code, not_run=exc.not_run, shared=exc.shared)
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
    if outcome in (Outcome.TARGET_FAILED, Outcome.UNCERTAIN, Outcome.OUTAGE):
        return idempotent
    return outcome is not Outcome.REFUSED


def fails_over(outcome: Outcome, *, idempotent: bool) -> bool:
    """Whether another target should be tried at once: the failure was the target's."""
    if outcome in (Outcome.TARGET_FAILED, Outcome.UNCERTAIN):
        return idempotent
    return outcome in (Outcome.UNSENT, Outcome.NOT_RUN)


def target_failed(outcome: Outcome) -> bool:
    """Whether the outcome counts against the target (its breaker, its ejection): it was
    unreachable, could not serve, answered 5xx, or went silent or dropped the connection."""
    return outcome in (Outcome.UNSENT, Outcome.NOT_RUN, Outcome.TARGET_FAILED, Outcome.UNCERTAIN)


def counts_against_target(exc: BaseException) -> bool:
    """`target_failed(classify(exc))`: the one definition of failure breakers and outlier
    ejection use."""
    return target_failed(classify(exc))
