"""The PRSM API as an ASGI app: `create_app` wires the services (`prsm.server.services`), the
routes (`prsm.server.routes`), the middleware and the life cycle.

`create_app(settings)` for code and tests; `create_app_from_env()` is the factory that
`prsm serve` hands uvicorn, so that every worker process builds its own app.
"""

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from prsm import metrics, tracing
from prsm._version import __version__
from prsm.config import Settings, load_settings
from prsm.edge.body_limit import BodyLimitMiddleware
from prsm.edge.collector import freeze_startup_heap, tune_for_requests
from prsm.edge.correlation import CorrelationMiddleware
from prsm.engines import Engine
from prsm.events import EventSink
from prsm.logs import configure_logging
from prsm.server.direct import DirectRoutes, direct_routes
from prsm.server.errors import install_error_handlers
from prsm.server.response_store import ResponseStore
from prsm.server.responses_api import responses_routes
from prsm.server.routes.embeddings import embedding_routes
from prsm.server.routes.jobs import job_routes
from prsm.server.routes.models import model_routes
from prsm.server.routes.openai import openai_routes
from prsm.server.routes.openapi import customise_openapi
from prsm.server.routes.probes import probe_routes
from prsm.server.routes.query import query_routes
from prsm.server.services import ApiServices, build_services


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    events: EventSink | None = None,
    *,
    handle_signals: bool = False,
) -> FastAPI:
    """The API app.

    With `engine`, it serves that engine instead of loading the configured one. With
    `settings.redis_url`, it publishes query events to Redis (or to `events`, when given) and
    its readiness checks Redis. With `handle_signals` (under `prsm serve`), SIGTERM drains it
    (`prsm.edge.drain`).
    """
    services = build_services(settings, engine, events)
    # Swagger UI and ReDoc from the fastapi-offline wheel, not a CDN: /docs works offline.
    app = FastAPIOffline(
        title="PRSM API",
        version=__version__,
        summary="AI queries for microservices.",
        lifespan=_lifespan(services, handle_signals),
    )
    app.state.models = services.models
    install_error_handlers(app)
    customise_openapi(app)
    routers = [
        query_routes(services),
        job_routes(services),
        probe_routes(services),
        openai_routes(services),
        model_routes(services),
        embedding_routes(services),
        responses_routes(services, stored_responses(services)),
    ]
    for router in routers:
        app.include_router(router)
    app.add_middleware(DirectRoutes, routes=direct_routes(routers))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(CorrelationMiddleware)
    return app


def stored_responses(services: ApiServices) -> ResponseStore | None:
    """Where Responses API responses are kept: Redis, when the instance has it."""
    if services.redis is None:
        return None
    return ResponseStore(services.redis, services.settings.responses.ttl_seconds)


def _lifespan(
    services: ApiServices, handle_signals: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the services with the app (and take SIGTERM under `prsm serve`), stop them after."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await services.start()
        if handle_signals:
            services.drain.install()
        try:
            yield
        finally:
            await services.stop()
            metrics.mark_process_dead(os.getpid())
            tracing.shutdown()

    return lifespan


def create_app_from_env() -> FastAPI:
    """uvicorn's factory: settings from the environment and `PRSM_CONFIG`."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure(settings.service_name)
    app = create_app(settings, handle_signals=True)
    tune_for_requests()
    freeze_startup_heap()
    return app
