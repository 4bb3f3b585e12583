"""DNS: the addresses behind a name — what Kubernetes headless Services and Consul's DNS give.

- SRV (`srv=True`): `_http._tcp.prsm-api.default.svc.cluster.local` lists targets with their
  ports and weights; the lowest priority present is used, each target resolved to A/AAAA.
- A/AAAA: every address of the name, on the given port.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from prsm.sd.base import Instance


class DnsDiscovery:
    """Instances from DNS: A/AAAA records on a given port, or SRV records (ports and weights,
    lowest priority first)."""

    def __init__(
        self,
        name: str,
        *,
        port: int | None = None,
        srv: bool = False,
        scheme: str = "http",
        nameservers: list[str] | None = None,
        nameserver_port: int = 53,
        timeout: float = 2.0,
    ) -> None:
        if not srv and port is None:
            raise ValueError("A/AAAA discovery needs the service's port")
        self.name = name
        self._port = port
        self._srv = srv
        self._scheme = scheme
        self._resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            self._resolver.nameservers = nameservers
            self._resolver.port = nameserver_port
        self._resolver.lifetime = timeout

    async def fetch(self) -> list[Instance]:
        """The instances the records name now."""
        if not self._srv:
            assert self._port is not None
            return [Instance(self._url(a, self._port)) for a in await self._addresses(self.name)]
        answer = await self._resolver.resolve(self.name, "SRV")
        records = list(answer)
        best = min(r.priority for r in records)
        instances = []
        for record in sorted(records, key=lambda r: (str(r.target), r.port)):
            if record.priority != best:
                continue
            for address in await self._addresses(str(record.target)):
                url = self._url(address, record.port)
                instances.append(Instance(url, weight=record.weight))
        return instances

    async def _addresses(self, name: str) -> list[str]:
        found: list[str] = []
        for kind in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(name, kind)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            found.extend(r.to_text() for r in answer)
        if not found:
            raise LookupError(f"{name} has no A or AAAA record")
        return sorted(found)

    def _url(self, address: str, port: int) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"{self._scheme}://{host}:{port}"
