"""The one retry classifier: what each outcome is, and what may follow it."""

from __future__ import annotations

import ssl

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from prsm.errors import (
    CircuitOpenError,
    ConnectError,
    ConnectionLostError,
    EngineUnavailableError,
    PromptTooLongError,
    TimeoutError,
    TLSError,
    UsageError,
    error_for_status,
)
from prsm.resilience.outcomes import Outcome, classify, fails_over, retryable, target_failed


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ConnectError("refused"), Outcome.UNSENT),
        (CircuitOpenError("svc", 1.0), Outcome.UNSENT),
        (error_for_status(502, "x"), Outcome.TARGET_FAILED),
        (error_for_status(503, "x"), Outcome.TARGET_FAILED),
        (error_for_status(504, "x"), Outcome.TARGET_FAILED),
        (error_for_status(408, "x"), Outcome.NOT_RUN),
        (error_for_status(503, "x", not_run=True), Outcome.NOT_RUN),
        (error_for_status(429, "x"), Outcome.SLOW_DOWN),
        (error_for_status(503, "x", not_run=True, shared=True), Outcome.OUTAGE),
        (error_for_status(429, "x", shared=True), Outcome.SLOW_DOWN),
        (error_for_status(500, "x"), Outcome.UNCERTAIN),
        (TimeoutError("read"), Outcome.UNCERTAIN),
        (ConnectionLostError("reset after sending"), Outcome.UNCERTAIN),
        (RedisConnectionError("redis went away"), Outcome.UNCERTAIN),
        (ConnectionResetError("reset"), Outcome.UNCERTAIN),
        (EngineUnavailableError("backend down"), Outcome.TARGET_FAILED),
        (error_for_status(307, "redirect"), Outcome.REFUSED),
        (ssl.SSLCertVerificationError("untrusted"), Outcome.REFUSED),
        (PromptTooLongError("too long"), Outcome.REFUSED),
        (KeyError("a bug"), Outcome.REFUSED),
        (error_for_status(400, "x"), Outcome.REFUSED),
        (error_for_status(401, "x"), Outcome.REFUSED),
        (error_for_status(422, "x"), Outcome.REFUSED),
        (TLSError("bad cert"), Outcome.REFUSED),
        (UsageError("wrong call"), Outcome.REFUSED),
    ],
)
def test_each_failure_has_one_outcome(error: Exception, outcome: Outcome) -> None:
    """Every failure maps to exactly the outcome the README's table gives it."""
    assert classify(error) is outcome


def test_what_may_follow_each_outcome() -> None:
    """What may have run (a target's failure, an uncertain end) is retried or failed over only
    for idempotent requests; what provably did not run is, always; a 429 is retried but never
    failed over; an outage every instance shares is retried only when idempotent and never
    failed over or held against the instance; refusals are final."""
    for idempotent in (False, True):
        for did_not_run in (Outcome.UNSENT, Outcome.NOT_RUN):
            assert retryable(did_not_run, idempotent=idempotent)
            assert fails_over(did_not_run, idempotent=idempotent)
        for may_have_run in (Outcome.TARGET_FAILED, Outcome.UNCERTAIN):
            assert retryable(may_have_run, idempotent=idempotent) is idempotent
            assert fails_over(may_have_run, idempotent=idempotent) is idempotent
        assert retryable(Outcome.SLOW_DOWN, idempotent=idempotent)
        assert not fails_over(Outcome.SLOW_DOWN, idempotent=idempotent)
        assert retryable(Outcome.OUTAGE, idempotent=idempotent) is idempotent
        assert not fails_over(Outcome.OUTAGE, idempotent=idempotent)
        assert not retryable(Outcome.REFUSED, idempotent=idempotent)
    against_target = [o for o in Outcome if target_failed(o)]
    assert against_target == [
        Outcome.UNSENT, Outcome.NOT_RUN, Outcome.TARGET_FAILED, Outcome.UNCERTAIN
    ]  # fmt: skip
