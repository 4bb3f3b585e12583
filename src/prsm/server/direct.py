"""`DirectRoutes`: the API's plain routes served without FastAPI's per-request machinery.

FastAPI documents every route and serves the ones with path parameters; a route whose endpoint
takes nothing but the `Request` (or nothing) — the query, the OpenAI routes, job submission,
the probes — is dispatched here by method and path, straight to that same endpoint function.
The answers are the same (the endpoint builds its own `Response`, errors go through the same
`error_response`, the server span is made as FastAPI's telemetry would); what is skipped is
FastAPI's dependency solving, its exit stack and its router walk: a third of a query's time
with the fixed engine (bench/api_throughput.py: 3,300 → 4,900 requests/s).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from prsm import tracing
from prsm.server.errors import error_response

Endpoint = Callable[[Request], Awaitable[Response]]
_FASTAPI_SPAN = "fastapi.telemetry"
"""Where FastAPI's native telemetry keeps a request's span state in the ASGI scope."""


class DirectRoutes:
    """Pure-ASGI middleware: `routes[(method, path)]` answers those requests; the rest go on."""

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a direct route's request, or pass the scope on."""
        if scope["type"] == "http":
            endpoint = self.routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                if not tracing.active():
                    await _serve(endpoint, scope, receive, send)
                    return
                method, path = scope["method"], scope["path"]
                if scope.get(_FASTAPI_SPAN) is not None:
                    # FastAPI's telemetry has begun this request's server span: it needs only
                    # the route's name, as FastAPI gives it for the routes it serves.
                    tracing.name_server_span(method, path)
                    await _serve(endpoint, scope, receive, send)
                    return
                # Otherwise the server span FastAPI's telemetry would have made.
                with tracing.server_span(method, path, scope["headers"]) as span:
                    status = await _serve(endpoint, scope, receive, send)
                    span.set_attribute("http.response.status_code", status)
                return
        await self.app(scope, receive, send)


async def _serve(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> int:
    try:
        response = await endpoint(Request(scope, receive))
    except Exception as exc:
        response = error_response(exc, scope["path"])
    await response(scope, receive, send)
    return response.status_code


def direct_routes(routers: Iterable[APIRouter]) -> dict[tuple[str, str], Endpoint]:
    """The routers' routes that can be served directly: no path parameters, and an endpoint
    that takes only the request (or nothing) and returns its own `Response`."""
    found: dict[tuple[str, str], Endpoint] = {}
    for route in (route for router in routers for route in router.routes):
        if not isinstance(route, APIRoute) or route.param_convertors:
            continue
        endpoint = _direct(route.endpoint)
        if endpoint is None:
            continue
        for method in route.methods or ():
            found[(method, route.path)] = endpoint
    return found


def _direct(endpoint: Callable[..., Any]) -> Endpoint | None:
    if not inspect.iscoroutinefunction(endpoint):
        return None
    parameters = list(inspect.signature(endpoint).parameters.values())
    if not parameters:
        return lambda _request: endpoint()
    if len(parameters) == 1 and parameters[0].annotation in (Request, "Request"):
        return endpoint
    return None
