"""The worker's HTTP endpoints, on `jobs.metrics_port`: `/metrics` (Prometheus), `/health`
(the process answers) and `/ready` (Redis answers a PING and every queue is being consumed).

Kubernetes keeps a worker whose Redis is unreachable, or which is shutting down, out of
readiness (its `/ready` is 503 naming the failing check, as the API's is) without restarting
it; liveness asks only `/health`, so a Redis outage never restarts every worker at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from prsm import metrics

PING_TIMEOUT_SECONDS = 2.0


class WorkerProbes:
    """`/metrics`, `/health` and `/ready` for a worker consuming with `redis` while
    `consuming()` says so."""

    def __init__(self, redis: Redis, consuming: Callable[[], bool]) -> None:
        self._redis = redis
        self._consuming = consuming
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        """Serve on `host:port` (0: any free port)."""
        app = web.Application()
        app.router.add_get("/metrics", _metrics)
        app.router.add_get("/health", _health)
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def checks(self) -> dict[str, dict[str, Any]]:
        """Each check's result: Redis reachable, queues consumed."""
        redis: dict[str, Any] = {"ok": True}
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                await self._redis.ping()
        except Exception as exc:  # any failure to answer is "not reachable"
            redis = {"ok": False, "detail": f"Redis did not answer a PING: {exc}"}
        consuming = {"ok": True} if self._consuming() else {
            "ok": False, "detail": "not consuming: starting or shutting down"
        }  # fmt: skip
        return {"redis": redis, "queues": consuming}

    async def _ready(self, _: web.Request) -> web.Response:
        checks = await self.checks()
        ready = all(check["ok"] for check in checks.values())
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return _json(body, 200 if ready else 503)


async def _metrics(_: web.Request) -> web.Response:
    payload, content_type = metrics.render()
    return web.Response(body=payload, headers={"Content-Type": content_type})


async def _health(_: web.Request) -> web.Response:
    return _json({"status": "healthy"}, 200)


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")
