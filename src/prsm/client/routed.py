"""`ModelServiceClient`: PRSM's models where each runs, for a service that calls them directly.

Where each model has instances of its own (a Deployment per model), a service that skips the
gateway routes by model itself: each query goes to the instances of the model it names
(`model=`; unset, the first route's). Models that share a `Discovery` share one
`ServiceClient` — one balancer, one set of breakers and connections for those instances.

>>> routes = {"small": StaticDiscovery(["http://small:8000"]),
...           "big": StaticDiscovery(["http://big-0:8000", "http://big-1:8000"])}
>>> async with ModelServiceClient(routes, api_key="...") as prsm:  # doctest: +SKIP
...     await prsm.query("Summarise this.", user_id="u1", model="big")
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Unpack

from prsm.client._core import QueryOptions, QueryResult, StreamChunk
from prsm.client.service import ServiceClient
from prsm.errors import UsageError
from prsm.sd import Discovery


class ModelServiceClient:
    """`routes`: model id (or alias) → the discovery of its instances; `options` are
    `ServiceClient`'s, for every route."""

    def __init__(self, routes: Mapping[str, Discovery], **options: Any) -> None:
        if not routes:
            raise UsageError("ModelServiceClient needs a route for at least one model")
        shared: dict[int, ServiceClient] = {}
        self._routes: dict[str, ServiceClient] = {}
        for model, discovery in routes.items():
            client = shared.get(id(discovery))
            if client is None:
                client = shared[id(discovery)] = ServiceClient(discovery, **options)
            self._routes[model] = client
        self._clients = list(shared.values())
        self._default = next(iter(routes))

    def client_for(self, model: str | None) -> ServiceClient:
        """The `ServiceClient` of `model`'s instances (None: the first route's); a model with
        no route is a `UsageError`, before anything is sent."""
        client = self._routes.get(model or self._default)
        if client is None:
            known = ", ".join(repr(name) for name in self._routes)
            raise UsageError(f"no route for model {model!r}; the routes are {known}")
        return client

    async def query(
        self, prompt: str, *, user_id: str, **options: Unpack[QueryOptions]
    ) -> QueryResult:
        """`ServiceClient.query` on the instances of the model `options` names."""
        client = self.client_for(options.get("model"))
        return await client.query(prompt, user_id=user_id, **options)

    async def stream(
        self, prompt: str, *, user_id: str, **options: Unpack[QueryOptions]
    ) -> AsyncGenerator[StreamChunk]:
        """`ServiceClient.stream` on the instances of the model `options` names."""
        client = self.client_for(options.get("model"))
        async for chunk in client.stream(prompt, user_id=user_id, **options):
            yield chunk

    async def start(self) -> None:
        """Start every route's discovery; `async with` does it."""
        for client in self._clients:
            await client.start()

    async def aclose(self) -> None:
        """Close every route's client; `async with` does it."""
        for client in self._clients:
            await client.aclose()

    async def __aenter__(self) -> ModelServiceClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
