"""ConsulDiscovery against a local server that speaks Consul's documented health API,
blocking queries included (a Consul agent cannot run here)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from prsm.sd import ConsulDiscovery, InstanceCache
from tests.support import local_app


def entry(service_id: str, port: int, *, address: str = "127.0.0.1", tags: list[str] | None = None,
          passing_weight: int = 1, node_address: str = "10.9.9.9") -> dict[str, Any]:  # fmt: skip
    """One element of `GET /v1/health/service/<name>`, as Consul documents it."""
    return {
        "Node": {"Node": "node-1", "Address": node_address, "Datacenter": "dc1"},
        "Service": {
            "ID": service_id,
            "Service": "prsm-api",
            "Address": address,
            "Port": port,
            "Tags": tags or [],
            "Weights": {"Passing": passing_weight, "Warning": 1},
        },
        "Checks": [{"Status": "passing", "CheckID": "serfHealth"}],
    }


class FakeConsul:
    """`/v1/health/service/<name>`: answers at once without `index`, and holds a request whose
    `index` is the current one until the instances change or `wait` passes."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.index = 10
        self.changed = asyncio.Condition()
        self.requests: list[dict[str, str]] = []
        self.failing = False
        self.url = ""

    async def set(self, entries: list[dict[str, Any]], *, index: int | None = None) -> None:
        async with self.changed:
            self.entries = entries
            self.index = index if index is not None else self.index + 1
            self.changed.notify_all()

    async def health(self, request: web.Request) -> web.Response:
        self.requests.append(
            dict(request.query) | {"token": request.headers.get("X-Consul-Token", "")}
        )
        if self.failing:
            return web.json_response({"error": "No cluster leader"}, status=500)
        assert request.query.get("passing") == "true"
        wanted = int(request.query.get("index", "0"))
        if wanted and wanted == self.index:
            wait = float(request.query.get("wait", "300s").rstrip("s"))
            async with self.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), wait)
        return web.json_response(self.entries, headers={"X-Consul-Index": str(self.index)})


@pytest.fixture
async def consul() -> AsyncIterator[FakeConsul]:
    fake = FakeConsul(
        [entry("api-1", 8001, tags=["weight=5", "v1"]), entry("api-2", 8002, address="")]
    )
    async with local_app("/v1/health/service/{name}", fake.health) as fake.url:
        yield fake


async def test_reads_passing_instances_with_weights_and_addresses(consul: FakeConsul) -> None:
    """Service address (or the node's when empty), port, id, tags; weight from `weight=` tags,
    else from Weights.Passing; the token goes in X-Consul-Token."""
    discovery = ConsulDiscovery("prsm-api", address=consul.url, token="t0ken", tag="v1")
    found = await discovery.fetch()
    await discovery.aclose()
    assert [(i.id, i.url, i.weight) for i in found] == [
        ("api-1", "http://127.0.0.1:8001", 5),
        ("api-2", "http://10.9.9.9:8002", 1),
    ]
    assert consul.requests[0] == {"passing": "true", "tag": "v1", "token": "t0ken"}


async def test_blocking_query_returns_as_soon_as_instances_change(consul: FakeConsul) -> None:
    """The second fetch sends the last X-Consul-Index and hangs until a change, not `wait`."""
    discovery = ConsulDiscovery("prsm-api", address=consul.url, wait_seconds=20)
    await discovery.fetch()
    pending = asyncio.create_task(discovery.fetch())
    await asyncio.sleep(0.2)
    assert not pending.done()
    started = time.monotonic()
    await consul.set([entry("api-3", 8003)])
    found = await asyncio.wait_for(pending, 5)
    assert time.monotonic() - started < 2
    assert [i.id for i in found] == ["api-3"]
    assert consul.requests[1]["index"] == "10"
    assert consul.requests[1]["wait"] == "20s"
    await discovery.aclose()


async def test_index_going_backwards_resets_to_zero(consul: FakeConsul) -> None:
    """After a restored snapshot (index lower than before) the next query starts afresh."""
    discovery = ConsulDiscovery("prsm-api", address=consul.url, wait_seconds=1)
    await discovery.fetch()
    await consul.set(consul.entries, index=3)
    await discovery.fetch()  # answered at once: our index 10 != 3
    await discovery.fetch()
    assert "index" not in consul.requests[-1]
    await discovery.aclose()


async def test_cache_follows_consul_at_once_and_survives_its_outage(consul: FakeConsul) -> None:
    """The instance cache long-polls: a change shows within a round trip; when Consul fails,
    the last good set stays."""
    cache = InstanceCache(
        "prsm-api", ConsulDiscovery("prsm-api", address=consul.url, wait_seconds=5)
    )
    await cache.start()
    assert len(cache.instances) == 2
    await consul.set([entry("api-9", 8009)])
    deadline = time.monotonic() + 3
    while [i.id for i in cache.instances] != ["api-9"]:
        assert time.monotonic() < deadline, "the cache did not follow Consul"
        await asyncio.sleep(0.02)
    consul.failing = True
    await consul.set(consul.entries)  # wake the pending long-poll, which now fails
    assert await cache.refresh() is False
    assert [i.id for i in cache.instances] == ["api-9"]
    await cache.aclose()
