"""`RetryPolicy`: what it tries again (the classifier's decision) and how long it waits."""

from __future__ import annotations

import pytest

from prsm.errors import (
    ConnectError,
    ConnectionLostError,
    TimeoutError,
    UsageError,
    error_for_status,
)
from prsm.resilience.retry import RetryPolicy, retrying


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectError("refused"), True),
        (error_for_status(503, "draining", not_run=True), True),
        (error_for_status(408, "too slow to send"), True),
        (error_for_status(502, "bad gateway"), False),
        (error_for_status(503, "busy"), False),
        (error_for_status(504, "slow"), False),
        (error_for_status(429, "slow down"), True),
        (error_for_status(429, "slow down", retry_after=3600), False),
        (error_for_status(400, "bad"), False),
        (error_for_status(401, "who"), False),
        (error_for_status(422, "invalid"), False),
        (error_for_status(500, "bug"), False),
        (TimeoutError("read timeout"), False),
        (ConnectionLostError("reset after sending"), False),
        (UsageError("wrong call"), False),
    ],
)
def test_what_is_retried(error: Exception, retried: bool) -> None:
    """Connection errors, 502/503/504 and 429 are retried; other 4xx, 500 and timeouts not."""
    assert RetryPolicy().should_retry(error) is retried


def test_codes_raised_at_once_are_not_retried() -> None:
    """A code in `raise_at_once` is raised at once; the same status with another code is not."""
    policy = RetryPolicy(raise_at_once=frozenset({"budget_exceeded"}))
    spent = error_for_status(429, "spent", code="budget_exceeded", retry_after=1)
    assert policy.should_retry(spent) is False
    assert policy.should_retry(error_for_status(429, "slow", retry_after=1)) is True


def test_wait_honours_retry_after() -> None:
    """A Retry-After from the server is the wait, whatever the attempt."""
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=1)
    assert policy.delay(error_for_status(503, "busy", retry_after=7), 1) == 7


def test_wait_backs_off_exponentially_with_jitter_and_cap() -> None:
    """Without Retry-After, waits stay under initial * 2^n and under the cap."""
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=0.5)
    for attempt in range(1, 8):
        wait = policy.delay(ConnectError("x"), attempt)
        assert 0 <= wait <= min(0.5, 0.1 * 2 ** (attempt - 1))


def test_negative_retries_are_a_usage_error() -> None:
    """retries=-1 is refused when the client is made."""
    with pytest.raises(UsageError):
        RetryPolicy(retries=-1)


async def test_idempotent_requests_are_retried_after_an_uncertain_failure() -> None:
    """A timeout after sending ends a query at once, but an idempotent request (a job, a
    callback) is tried again: the same policy, the classifier's two answers."""
    calls = 0

    async def times_out_once(request: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("read timeout")
        return request

    policy = RetryPolicy(retries=2, backoff_initial=0.001)
    with pytest.raises(TimeoutError):
        await retrying(policy)(times_out_once)("q")
    assert await retrying(policy, idempotent=True)(times_out_once)("q") == "q"
    assert calls == 2
