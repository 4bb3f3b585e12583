"""KubernetesDiscovery against a local server that speaks the Kubernetes API's EndpointSlice
list and watch (an API server cannot run here)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from prsm.errors import ConfigError
from prsm.sd import InstanceCache, KubernetesDiscovery
from tests.support import local_app

TOKEN = "sa-token-1"
PATH = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"


def endpoint_slice(name: str, *endpoints: tuple[str, bool | None], version: int, port: int = 8000,
                   weight: str | None = None) -> dict[str, Any]:  # fmt: skip
    labels = {"kubernetes.io/service-name": "prsm-api"} | (
        {"prsm.io/weight": weight} if weight else {}
    )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": labels, "resourceVersion": str(version)},
        "addressType": "IPv4",
        "ports": [{"name": "metrics", "port": 9100}, {"name": "http", "port": port}],
        "endpoints": [
            {"addresses": [ip], "targetRef": {"kind": "Pod", "name": f"pod-{ip}"}}
            | ({} if ready is None else {"conditions": {"ready": ready}})
            for ip, ready in endpoints
        ],
    }


class FakeApiServer:
    def __init__(self) -> None:
        self.slices = {
            "s1": endpoint_slice("s1", ("10.0.0.1", True), ("10.0.0.2", False), version=5)
        }
        self.version = 5
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.expired_below = 0
        self.requests: list[dict[str, str]] = []
        self.url = ""

    async def endpointslices(self, request: web.Request) -> web.StreamResponse:
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}"
        assert request.query["labelSelector"] == "kubernetes.io/service-name=prsm-api"
        self.requests.append(dict(request.query))
        if request.query.get("watch") != "true":
            return web.json_response(
                {
                    "kind": "EndpointSliceList",
                    "metadata": {"resourceVersion": str(self.version)},
                    "items": list(self.slices.values()),
                }
            )
        if int(request.query["resourceVersion"]) < self.expired_below:
            return web.json_response(
                {"kind": "Status", "code": 410, "reason": "Expired"}, status=410
            )
        stream = web.StreamResponse()
        await stream.prepare(request)
        try:
            async with asyncio.timeout(float(request.query["timeoutSeconds"])):
                while True:
                    event = await self.events.get()
                    await stream.write(json.dumps(event).encode() + b"\n")
        except TimeoutError:
            pass
        return stream

    def change(self, kind: str, item: dict[str, Any]) -> None:
        self.version += 1
        item["metadata"]["resourceVersion"] = str(self.version)
        if kind == "DELETED":
            self.slices.pop(item["metadata"]["name"], None)
        else:
            self.slices[item["metadata"]["name"]] = item
        self.events.put_nowait({"type": kind, "object": item})


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[FakeApiServer]:
    fake = FakeApiServer()
    async with local_app(PATH, fake.endpointslices) as fake.url:
        yield fake


def discovery(api: FakeApiServer, tmp_path: Path, **options: Any) -> KubernetesDiscovery:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    # Short watches: the fake server's watch handlers end with them.
    options.setdefault("watch_seconds", 2)
    return KubernetesDiscovery(
        "prsm-api", namespace="prod", api_url=api.url, token_file=token, **options
    )


async def test_lists_ready_endpoints_on_the_named_port(api: FakeApiServer, tmp_path: Path) -> None:
    """Ready (or unknown) endpoints of every slice, on the `http` port; not-ready ones left out;
    the slice's weight label applies."""
    api.slices["s2"] = endpoint_slice("s2", ("10.0.1.9", None), version=5, port=8080, weight="3")
    found = await discovery(api, tmp_path).fetch()
    assert [(i.url, i.weight, i.id) for i in found] == [
        ("http://10.0.0.1:8000", 1, "pod-10.0.0.1:8000"),
        ("http://10.0.1.9:8080", 3, "pod-10.0.1.9:8080"),
    ]


async def test_watch_delivers_changes_as_they_happen(api: FakeApiServer, tmp_path: Path) -> None:
    """The cache follows the watch: an endpoint turning ready, then a slice deleted."""
    cache = InstanceCache("prsm-api", discovery(api, tmp_path))
    await cache.start()
    assert [i.url for i in cache.instances] == ["http://10.0.0.1:8000"]

    async def until(urls: list[str]) -> None:
        deadline = time.monotonic() + 3
        while [i.url for i in cache.instances] != urls:
            assert time.monotonic() < deadline, [i.url for i in cache.instances]
            await asyncio.sleep(0.02)

    api.change("MODIFIED", endpoint_slice("s1", ("10.0.0.1", True), ("10.0.0.2", True), version=0))
    await until(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])
    api.change("ADDED", endpoint_slice("s2", ("10.0.5.5", True), version=0))
    await until(["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.5.5:8000"])
    api.change("DELETED", dict(api.slices["s1"]))
    await until(["http://10.0.5.5:8000"])
    watches = [r for r in api.requests if r.get("watch") == "true"]
    assert watches[0]["resourceVersion"] == "5"
    assert watches[0]["allowWatchBookmarks"] == "true"
    await cache.aclose()


async def test_expired_resource_version_lists_again(api: FakeApiServer, tmp_path: Path) -> None:
    """410 Gone on the watch: the discovery lists afresh and carries on."""
    source = discovery(api, tmp_path, watch_seconds=1)
    await source.fetch()
    api.expired_below = 100
    api.slices["s3"] = endpoint_slice("s3", ("10.0.9.9", True), version=101)
    api.version = 101
    found = await source.fetch()
    assert "http://10.0.9.9:8000" in [i.url for i in found]
    assert [r.get("watch") for r in api.requests] == [None, "true", None]
    await source.aclose()


def test_in_cluster_uses_the_service_account(tmp_path: Path) -> None:
    """API server from the environment, namespace, token and CA from the account directory."""
    (tmp_path / "namespace").write_text("payments\n")
    (tmp_path / "token").write_text(TOKEN)
    source = KubernetesDiscovery.in_cluster(
        "prsm-api",
        account=tmp_path,
        environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
        ca_file=None,
    )
    assert source.namespace == "payments"
    assert source._url == (
        "https://10.96.0.1:443/apis/discovery.k8s.io/v1/namespaces/payments/endpointslices"
    )
    with pytest.raises(ConfigError, match="not in a Kubernetes pod"):
        KubernetesDiscovery.in_cluster("prsm-api", account=tmp_path, environ={})
