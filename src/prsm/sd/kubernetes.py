"""Kubernetes: the ready endpoints of a Service, from its EndpointSlices, listed then watched.

In a pod, `KubernetesDiscovery.in_cluster("prsm-api")` uses the service account: the API
server from `KUBERNETES_SERVICE_HOST/PORT`, its CA, the (rotating) token, re-read for every
request, and the pod's namespace. Needs `get`, `list` and `watch` on
`endpointslices.discovery.k8s.io`.

Endpoints whose `ready` condition is false are left out (an absent condition means ready, as the
API says). A slice label `prsm.io/weight=<n>` sets the weight of its endpoints. After the first
list, `fetch` follows a watch and returns as soon as a change arrives; an expired
resourceVersion (410 Gone) starts over with a list.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from prsm.errors import ConfigError
from prsm.sd.base import Instance

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WEIGHT_LABEL = "prsm.io/weight"
SERVICE_LABEL = "kubernetes.io/service-name"


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubernetesDiscovery:
    """Instances from a Kubernetes Service's EndpointSlices: listed, then watched, ready
    endpoints only; a `prsm.io/weight` label sets weights."""

    blocking = True
    """`fetch` waits on a watch: the instance cache calls it again at once."""

    def __init__(
        self,
        service: str,
        *,
        namespace: str,
        api_url: str,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        port_name: str | None = "http",
        scheme: str = "http",
        watch_seconds: int = 60,
    ) -> None:
        self.service = service
        self.namespace = namespace
        self._url = (
            f"{api_url.rstrip('/')}/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        )
        self._token_file = token_file
        self._ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._port_name = port_name
        self._scheme = scheme
        self._watch_seconds = watch_seconds
        self._slices: dict[str, dict[str, Any]] = {}
        self._version: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._watch: aiohttp.ClientResponse | None = None

    @classmethod
    def in_cluster(
        cls,
        service: str,
        *,
        account: Path = SERVICE_ACCOUNT,
        environ: Mapping[str, str] = os.environ,
        **options: Any,
    ) -> KubernetesDiscovery:
        """Discovery through the pod's service account."""
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise ConfigError("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST is unset")
        try:
            namespace = (account / "namespace").read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the service account at {account}: {exc}") from None
        host = f"[{host}]" if ":" in host else host
        options.setdefault("namespace", namespace)
        options.setdefault("token_file", account / "token")
        options.setdefault("ca_file", account / "ca.crt")
        return cls(service, api_url=f"https://{host}:{port}", **options)

    async def fetch(self) -> list[Instance]:
        """The ready endpoints, after waiting for the watch to report a change."""
        if self._version is None:
            await self._list()
            return self._instances()
        try:
            await self._next_change()
        except _Expired:
            await self._close_watch()
            await self._list()
        return self._instances()

    async def _list(self) -> None:
        async with self._http().get(self._url, params=self._params(), **self._request()) as reply:
            reply.raise_for_status()
            listing = await reply.json()
        self._slices = {item["metadata"]["name"]: item for item in listing.get("items", [])}
        self._version = listing["metadata"]["resourceVersion"]

    async def _next_change(self) -> None:
        """Read watch events until one changes a slice (or the watch times out)."""
        if self._watch is None:
            params = self._params() | {
                "watch": "true",
                "resourceVersion": str(self._version),
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(self._watch_seconds),
            }
            timeout = aiohttp.ClientTimeout(total=None, sock_read=self._watch_seconds + 30)
            self._watch = await self._http().get(
                self._url, params=params, timeout=timeout, **self._request()
            )
            if self._watch.status == 410:
                raise _Expired
            self._watch.raise_for_status()
        async for line in self._watch.content:
            if not line.strip():
                continue
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired
                raise aiohttp.ClientError(f"watch error: {obj.get('message')}")
            self._version = obj.get("metadata", {}).get("resourceVersion", self._version)
            if kind in ("ADDED", "MODIFIED"):
                self._slices[obj["metadata"]["name"]] = obj
                return
            if kind == "DELETED":
                self._slices.pop(obj["metadata"]["name"], None)
                return
            # BOOKMARK: only the resourceVersion moves on.
        await self._close_watch()  # the server ended the watch (timeoutSeconds): open anew

    def _instances(self) -> list[Instance]:
        instances = []
        for name in sorted(self._slices):
            item = self._slices[name]
            port = self._port(item.get("ports") or [])
            if port is None:
                continue
            labels = item.get("metadata", {}).get("labels") or {}
            weight = int(labels.get(WEIGHT_LABEL, "1"))
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                address = endpoint["addresses"][0]
                host = f"[{address}]" if ":" in address else address
                target = (endpoint.get("targetRef") or {}).get("name") or address
                instances.append(
                    Instance(
                        f"{self._scheme}://{host}:{port}", weight=weight, id=f"{target}:{port}"
                    )
                )
        return instances

    def _port(self, ports: list[dict[str, Any]]) -> int | None:
        for port in ports:
            if self._port_name is None or port.get("name") == self._port_name:
                return int(port["port"])
        return None

    def _params(self) -> dict[str, str]:
        return {"labelSelector": f"{SERVICE_LABEL}={self.service}"}

    def _request(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self._token_file is not None:
            # Projected tokens rotate: read the file for every request.
            token = self._token_file.read_text().strip()
            options["headers"] = {"Authorization": f"Bearer {token}"}
        if self._ssl is not None:
            options["ssl"] = self._ssl
        return options

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    async def aclose(self) -> None:
        """Stop watching and close the HTTP session."""
        await self._close_watch()
        if self._session is not None:
            await self._session.close()
            self._session = None
