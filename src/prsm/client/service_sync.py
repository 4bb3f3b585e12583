"""`SyncServiceClient`: `ServiceClient` for blocking code.

The very same pipeline (discovery, balancing, ejection, failover, breakers, metrics) runs on a
private event loop in one background thread; the blocking methods hand their call to that loop
and wait for its answer. Any number of threads may call at once.

>>> with SyncServiceClient(StaticDiscovery(["http://a:8000", "http://b:8000"]),
...                        api_key="...") as prsm:                       # doctest: +SKIP
...     print(prsm.query("What is the capital of France?", user_id="u1").answer)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar, Unpack

from prsm.client._core import HealthStatus, QueryOptions, QueryResult, StreamChunk
from prsm.client.service import ServiceClient
from prsm.sd import Discovery, Instance

T = TypeVar("T")


class SyncServiceClient:
    """Arguments as for `ServiceClient`. Discovery starts when the client is created."""

    def __init__(self, discovery: Discovery, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="prsm-service-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._client: ServiceClient = self._run(self._open(discovery, options))
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _open(discovery: Discovery, options: dict[str, Any]) -> ServiceClient:
        client = ServiceClient(discovery, **options)
        await client.start()
        return client

    @property
    def service(self) -> str:
        """The name of the service called (metrics and traces)."""
        return self._client.service

    @property
    def instances(self) -> list[Instance]:
        """The instances the pool currently knows."""
        return self._client.instances

    def query(
        self,
        prompt: str,
        *,
        user_id: str,
        **options: Unpack[QueryOptions],
    ) -> QueryResult:
        """Ask one instance, failing over to others; raises a `prsm.PRSMError` subclass."""
        return self._run(
            self._client.query(
                prompt,
                user_id=user_id,
                **options,
            )
        )

    def stream(
        self,
        prompt: str,
        *,
        user_id: str,
        **options: Unpack[QueryOptions],
    ) -> Iterator[StreamChunk]:
        """The answer as it is generated, failing over until it has begun (`ServiceClient`)."""
        chunks = self._client.stream(
            prompt,
            user_id=user_id,
            **options,
        )
        try:
            while True:
                try:
                    yield self._run(_next(chunks))
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(chunks.aclose())

    def health(self) -> HealthStatus:
        """`GET /health` from one instance, through the same failover and breakers."""
        return self._run(self._client.health())

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            call.close()
            raise RuntimeError("this SyncServiceClient is closed")
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def close(self) -> None:
        """Close the client and stop its background event loop."""
        if self._closed:
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _next(chunks: AsyncIterator[StreamChunk]) -> StreamChunk:
    return await anext(chunks)
