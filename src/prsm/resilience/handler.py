"""The one shape every resilience piece has: a `Handler` takes a request and returns a
response; a `Middleware` wraps a handler in another; `chain` composes them (go-kit's
`Endpoint`, `Middleware` and `Chain`).

The SDK's `ServiceClient` and the gateway build their pipelines from the same pieces, in
go-kit's order: discovery → balancer → failover (`prsm.resilience.failover`) → a breaker per
instance (`CircuitBreaker` is a middleware) → timeout → the transport.

>>> async def echo(request: str) -> str:
...     return request
>>> def shout(next: Handler[str, str]) -> Handler[str, str]:
...     async def handle(request: str) -> str:
...         return (await next(request)).upper()
...     return handle
>>> import asyncio
>>> asyncio.run(chain(shout)(echo)("hi"))
'HI'
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")

Handler = Callable[[Req], Awaitable[Resp]]
"""Takes a request, returns its response (or raises a `prsm.errors.PRSMError`)."""
Middleware = Callable[[Handler[Req, Resp]], Handler[Req, Resp]]
"""Wraps a handler: does something before, after or around each call."""


def chain(outer: Middleware[Req, Resp], *others: Middleware[Req, Resp]) -> Middleware[Req, Resp]:
    """One middleware made of several; the first is outermost, as in go-kit's `Chain`."""

    def wrap(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        for middleware in reversed(others):
            handler = middleware(handler)
        return outer(handler)

    return wrap


def time_limit(seconds: float, error: Callable[[], Exception]) -> Middleware[Req, Resp]:
    """Cancel a call still running after `seconds` and raise `error()` instead (from None:
    the cancellation is ours, not the callee's)."""

    def wrap(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def limited(request: Req) -> Resp:
            scope = asyncio.timeout(seconds)
            try:
                async with scope:
                    return await handler(request)
            except TimeoutError:
                if not scope.expired():  # the callee's own timeout, not ours
                    raise
                raise error() from None

        return limited

    return wrap
