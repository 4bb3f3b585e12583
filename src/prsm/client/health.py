"""The specification's health checks: shallow (`/health` and how fast it answers) and deep
(a real test query).

>>> report = await check_health(client)          # doctest: +SKIP
>>> report.status                                # "healthy", "degraded" or "unhealthy"
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from prsm.client._async import AsyncPRSMClient
from prsm.errors import PRSMError

HealthState = Literal["healthy", "degraded", "unhealthy"]
DEGRADED_AFTER_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What a health check found: the instance's state, when, how fast, and what it said."""

    status: HealthState
    timestamp: datetime
    response_time_ms: float | None = None
    details: dict[str, Any] | None = None
    error: str | None = None
    functional_test: Literal["passed", "failed"] | None = None
    test_response: dict[str, Any] | None = None


async def check_health(
    client: AsyncPRSMClient, *, degraded_after: float = DEGRADED_AFTER_SECONDS
) -> HealthReport:
    """`healthy` when `/health` says so within `degraded_after` seconds, `degraded` when it
    is slow or says otherwise, `unhealthy` when it cannot be reached."""
    started = time.perf_counter()
    try:
        health = await client.health()
    except PRSMError as exc:
        return HealthReport(status="unhealthy", timestamp=datetime.now(UTC), error=str(exc))
    elapsed = time.perf_counter() - started
    healthy = health.status == "healthy" and elapsed < degraded_after
    return HealthReport(
        status="healthy" if healthy else "degraded",
        timestamp=datetime.now(UTC),
        response_time_ms=round(elapsed * 1000, 2),
        details={"status": health.status, "version": health.version},
    )


async def deep_health_check(
    client: AsyncPRSMClient, *, degraded_after: float = DEGRADED_AFTER_SECONDS
) -> HealthReport:
    """`check_health`, then a real test query (as user `health-check`): a failing query makes
    a healthy instance `degraded`."""
    report = await check_health(client, degraded_after=degraded_after)
    if report.status != "healthy":
        return report
    try:
        result = await client.query(
            "Health check test query",
            user_id="health-check",
            context={"healthCheck": True},
            max_tokens=4,
        )
    except PRSMError as exc:
        return replace(report, status="degraded", functional_test="failed", error=str(exc))
    return replace(
        report,
        functional_test="passed",
        test_response={
            "answer": result.answer,
            "model": result.model,
            "tokens": result.usage.tokens,
        },
    )
