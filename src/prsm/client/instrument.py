"""The client's instrumentation as middlewares over `ServiceClient`'s pipeline: the
specification's `prsm.query` span (`traced`) and its client metrics (`measured`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prsm import metrics, tracing
from prsm.errors import HTTPStatusError
from prsm.resilience.handler import Handler, Middleware

if TYPE_CHECKING:
    from prsm.client._async import AsyncPRSMClient


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One call through `ServiceClient`'s pipeline: what to do with the chosen instance's
    client (`send`), and for a query, what it asks (its span records them)."""

    send: Callable[[AsyncPRSMClient], Awaitable[Any]]
    prompt: str = ""
    user_id: str = ""


def traced(service: str) -> Middleware[ServiceCall, Any]:
    """The specification's `prsm.query` span around each query, failovers included: its
    attributes, `query.start` / `query.complete` events, or the error."""

    def wrap(handler: Handler[ServiceCall, Any]) -> Handler[ServiceCall, Any]:
        async def in_span(call: ServiceCall) -> Any:
            with tracing.query_span(call.prompt, call.user_id, service) as span:
                result = await handler(call)
                span.answered(result.usage.tokens, result.confidence)
                return result

        return in_span

    return wrap


def measured(service: str, user_tier: str) -> Middleware[ServiceCall, Any]:
    """The specification's client metrics for each query: `prsm_query_duration_seconds`,
    `prsm_queries_total` (status `200`, the error's status, or `error` without one) and
    `prsm_tokens_used_total`."""

    def wrap(handler: Handler[ServiceCall, Any]) -> Handler[ServiceCall, Any]:
        async def recorded(call: ServiceCall) -> Any:
            started = time.perf_counter()
            status, tokens, model = "error", 0, "unknown"
            try:
                result = await handler(call)
            except HTTPStatusError as exc:
                status = str(exc.status_code)
                raise
            else:
                status, tokens, model = "200", result.usage.tokens, result.model or "unknown"
                return result
            finally:
                metrics.record_query(
                    service=service,
                    method="query",
                    status=status,
                    user_tier=user_tier,
                    duration=time.perf_counter() - started,
                    tokens=tokens,
                    model=model,
                )

        return recorded

    return wrap
