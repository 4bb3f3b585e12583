"""`/health`, `/ready`, `/started` and `/metrics`: what orchestrators and Prometheus ask."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from prsm import metrics
from prsm._version import __version__
from prsm.contracts import HealthResponse, ReadyResponse
from prsm.server.services import ApiServices

_NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": ReadyResponse}}


def probe_routes(services: ApiServices) -> APIRouter:
    """The router with the probes and the metrics endpoint (open: no auth)."""
    router = APIRouter(tags=["probes"])
    ready_gauge = metrics.READY.labels(services.settings.service_name)  # 0 until /ready says

    @router.get("/health", response_model=HealthResponse)
    async def health() -> Response:
        """Liveness: the process answers."""
        uptime = time.monotonic() - services.started
        return JSONResponse(HealthResponse(version=__version__, uptime_seconds=uptime).to_wire())

    @router.get("/ready", response_model=ReadyResponse, responses=_NOT_READY)
    async def ready() -> Response:
        """Readiness: 200 when every check passes, else 503 naming the failing ones."""
        checks = await services.models.readiness()
        ok = all(check.ok for check in checks.values())
        ready_gauge.set(1 if ok else 0)
        body = ReadyResponse(status="ready" if ok else "not_ready", checks=checks)
        return JSONResponse(body.to_wire(), status_code=200 if ok else 503)

    @router.get("/started", response_model=ReadyResponse, responses=_NOT_READY)
    async def started_probe() -> Response:
        """Start-up: 200 once every engine has loaded, whatever the other checks say (a startup
        probe that covers model loading, and no more: a Redis outage must not restart pods)."""
        engines = services.models.engine_checks()
        ok = all(check.ok for check in engines.values())
        body = ReadyResponse(status="started" if ok else "starting", checks=engines)
        return JSONResponse(body.to_wire(), status_code=200 if ok else 503)

    @router.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus exposition text (the KV-cache gauges read now)."""
        services.models.report_kv_cells()
        text, content_type = metrics.render()
        return Response(text, media_type=content_type)

    return router
