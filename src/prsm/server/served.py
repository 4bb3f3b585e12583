"""`ServedModels`: the models one API instance serves, each with its own engine and admission,
found by the id or alias a request names.

A request that names no model gets the first model of its kind (generation or embeddings);
one that names a model this instance does not serve is 404 `unknown_model` listing those it
does; one that names a model of the other kind (embeddings of a chat model) is 422
`wrong_model_kind`. An alias reaches its model, and the answer names the model by its id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from prsm import metrics
from prsm.config import Serves
from prsm.contracts import CheckResult
from prsm.errors import HTTPStatusError, NotFoundError, ServiceUnavailableError
from prsm.events import EventSink
from prsm.resilience.outcomes import classify, fails_over
from prsm.server.readiness import ReadinessCheck
from prsm.server.service import QueryService, serves_not

log = logging.getLogger("prsm.query")


FALLBACK_HEADER = "x-prsm-fallback-from"
"""On an answer a fallback gave: the model the request named, which could not take it."""


def may_fall_back(error: HTTPStatusError) -> bool:
    """Whether a model's refusal lets the next model try: by the rule every caller that tries
    again follows (`prsm.resilience.outcomes`), for a query, which may not be sent twice —
    only when it provably did not run (overloaded, not ready; never a caller's own error, a
    budget, a time limit)."""
    return fails_over(classify(error), idempotent=False)


class ServedModels:
    """Every model of the instance, the readiness checks they share and their event sink."""

    def __init__(
        self,
        services: list[QueryService],
        checks: dict[str, ReadinessCheck] | None = None,
        events: EventSink | None = None,
    ) -> None:
        self.services = services
        self._checks = checks or {}
        self._events = events

    def __iter__(self) -> Iterator[QueryService]:
        return iter(self.services)

    def find(self, name: str | None, serves: Serves = "generation") -> QueryService:
        """The model a request names (`None`: the first that `serves`); 422
        `wrong_model_kind` if it serves the other kind."""
        if name is None:
            for service in self.services:
                if service.spec.serves == serves:
                    return service
            raise self._unknown(f"no model that serves {serves} is served here")
        service = self.named(name)
        if service.spec.serves != serves:
            raise serves_not(serves, name, service.spec.serves)
        return service

    def named(self, name: str) -> QueryService:
        """The model `name` is the id or an alias of; 404 `unknown_model` if none, 503
        `not_ready` while a model that takes its name from its engine loads."""
        for service in self.services:
            if name in service.names:
                return service
        for service in self.services:
            if service.name is None:
                service.loaded()
        raise self._unknown(f"model {name!r} is not served here")

    def chain(self, service: QueryService) -> list[QueryService]:
        """`service`, then its fallbacks in order (each once; an alias names its model)."""
        chain = [service]
        for name in service.spec.fallbacks:
            fallback = self.named(name)
            if fallback not in chain:
                chain.append(fallback)
        return chain

    def fell_back(self, failed: QueryService, to: QueryService, error: HTTPStatusError) -> None:
        """Count (and log) a query passed from `failed` to `to`."""
        source, target = failed.name or "none", to.name or "none"
        metrics.MODEL_FALLBACKS.labels(failed.settings.service_name, source, target).inc()
        log.info("model fallback", extra={"model": source, "to": target, "code": error.code})

    def _unknown(self, message: str) -> NotFoundError:
        ids = ", ".join(repr(n) for n in self.ids())
        return NotFoundError(
            f"{message}; this instance serves {ids or 'no model yet'}",
            code="unknown_model",
            param="model",
        )

    def ids(self) -> list[str]:
        """Every id and alias a request may name, each model's id first."""
        return [name for service in self.services for name in service.names]

    @property
    def default(self) -> QueryService:
        """The first model: the one the direct routes and `/started` speak for."""
        return self.services[0]

    async def start(self) -> None:
        """Start the event sink, and load every engine in the background."""
        if self._events is not None:
            await self._events.start()
        for service in self.services:
            service.start()

    async def wait_loaded(self) -> None:
        """Wait until every engine has loaded (or failed to)."""
        await asyncio.gather(*(service.wait_loaded() for service in self.services))

    async def stop(self) -> None:
        """Close every engine, then flush the events."""
        await asyncio.gather(*(service.stop() for service in self.services))
        if self._events is not None:
            await self._events.aclose()

    def report_kv_cells(self) -> None:
        """Set every KV-cache engine's gauges (`prsm_engine_kv_cells_used` and the rest)."""
        for service in self.services:
            service.report_kv_cells()

    def engine_checks(self) -> dict[str, CheckResult]:
        """Each engine's state: `engine:<name>` for a named model, `engine` for the first
        model when it takes its name from its engine (`engine:<index>` for another)."""
        checks = {}
        for i, service in enumerate(self.services):
            name = service.spec.name
            key = f"engine:{name}" if name is not None else f"engine:{i}" if i else "engine"
            checks[key] = service.engine_check()
        return checks

    async def readiness(self) -> dict[str, CheckResult]:
        """Every engine's state and every shared check (Redis, the drain)."""
        results = self.engine_checks()
        for name, check in self._checks.items():
            results[name] = await check()
        return results

    # -- what a drain closes and waits for: every model's admission --

    @property
    def in_flight(self) -> int:
        """Queries now running, on every model."""
        return sum(service.admission.in_flight for service in self.services)

    def close(self, error: ServiceUnavailableError) -> None:
        """Refuse new queries on every model."""
        for service in self.services:
            service.admission.close(error)

    async def idle(self) -> None:
        """Return once no model has a query left."""
        await asyncio.gather(*(service.admission.idle() for service in self.services))

    def refuse_waiting(self, error: ServiceUnavailableError) -> None:
        """Answer the queries still waiting for any model with `error`."""
        for service in self.services:
            service.admission.refuse_waiting(error)
