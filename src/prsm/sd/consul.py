"""Consul: the passing instances of a service, from the health API, kept current with
blocking queries.

`GET /v1/health/service/<name>?passing=true&index=<X-Consul-Index>&wait=<s>s` hangs until
the service's instances change (or `wait` passes), so a change reaches the client within a
round trip rather than at the next poll. The weight comes from a `weight=<n>` tag, else from
Consul's own `Weights.Passing`.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from prsm.sd.base import Instance

WEIGHT_TAG = "weight="


class ConsulDiscovery:
    """Instances from Consul: the passing ones of a service, followed with blocking queries;
    weights from a `weight=<n>` tag or Consul's `Weights.Passing`."""

    blocking = True
    """`fetch` long-polls: the instance cache calls it again at once, not on a timer."""

    def __init__(
        self,
        service: str,
        *,
        address: str = "http://127.0.0.1:8500",
        token: str | None = None,
        tag: str | None = None,
        datacenter: str | None = None,
        wait_seconds: int = 30,
        scheme: str = "http",
    ) -> None:
        self.service = service
        self._address = address.rstrip("/")
        self._headers = {"X-Consul-Token": token} if token else {}
        self._tag = tag
        self._datacenter = datacenter
        self._wait = wait_seconds
        self._scheme = scheme
        self._index = 0
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self) -> list[Instance]:
        """The passing instances, after waiting (a blocking query) for the set to change."""
        params = {"passing": "true"}
        if self._tag:
            params["tag"] = self._tag
        if self._datacenter:
            params["dc"] = self._datacenter
        if self._index:
            params |= {"index": str(self._index), "wait": f"{self._wait}s"}
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        url = f"{self._address}/v1/health/service/{self.service}"
        timeout = aiohttp.ClientTimeout(total=self._wait + 15)  # Consul adds up to wait/16
        async with self._session.get(url, params=params, timeout=timeout) as response:
            response.raise_for_status()
            entries: list[dict[str, Any]] = await response.json()
            index = int(response.headers.get("X-Consul-Index", "0"))
        # Consul's advice: an index that went backwards (a restored snapshot) resets to 0.
        self._index = 0 if index < self._index else index
        return [self._instance(entry) for entry in entries]

    def _instance(self, entry: dict[str, Any]) -> Instance:
        service = entry["Service"]
        host = service.get("Address") or entry["Node"]["Address"]
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6
        tags = tuple(service.get("Tags") or ())
        weight = int((service.get("Weights") or {}).get("Passing", 1))
        for tag in tags:
            if tag.startswith(WEIGHT_TAG) and tag[len(WEIGHT_TAG) :].isdigit():
                weight = int(tag[len(WEIGHT_TAG) :])
        return Instance(
            url=f"{self._scheme}://{host}:{service['Port']}",
            weight=weight,
            id=str(service.get("ID") or f"{host}:{service['Port']}"),
            tags=tags,
        )

    async def aclose(self) -> None:
        """Close the HTTP session to Consul."""
        if self._session is not None:
            await self._session.close()
            self._session = None
