"""DnsDiscovery against a real DNS server on loopback (dnslib), and behind ServiceClient."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import AAAA, QTYPE, RR, SRV, A
from dnslib.server import BaseResolver, DNSServer

from prsm.client.service import ServiceClient
from prsm.sd import DnsDiscovery, InstanceCache
from tests.support import API_KEY, fixed_instances, free_port


class Zone(BaseResolver):
    """Answers from `records` ({(name, type): [rdata]}), which tests may change."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[object]] = {}

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        qname, qtype = str(request.q.qname).rstrip("."), QTYPE[request.q.qtype]
        for rdata in self.records.get((qname, qtype), []):
            reply.add_answer(RR(request.q.qname, getattr(QTYPE, qtype), rdata=rdata, ttl=5))
        return reply


@pytest.fixture
def zone() -> Iterator[tuple[Zone, int]]:
    resolver = Zone()
    port = free_port()
    server = DNSServer(resolver, port=port, address="127.0.0.1")
    server.start_thread()
    yield resolver, port
    server.stop()


def dns(zone_port: int, name: str, **options: object) -> DnsDiscovery:
    return DnsDiscovery(name, nameservers=["127.0.0.1"], nameserver_port=zone_port, **options)  # type: ignore[arg-type]


async def test_a_and_aaaa_records_on_the_given_port(zone: tuple[Zone, int]) -> None:
    """Every A and AAAA address of the name becomes an instance on the port."""
    records, port = zone
    records.records = {
        ("api.test", "A"): [A("127.0.0.2"), A("127.0.0.1")],
        ("api.test", "AAAA"): [AAAA("::1")],
    }
    found = await dns(port, "api.test", port=8000).fetch()
    assert [i.url for i in found] == [
        "http://127.0.0.1:8000",
        "http://127.0.0.2:8000",
        "http://[::1]:8000",
    ]


async def test_srv_gives_ports_and_weights_of_the_best_priority(zone: tuple[Zone, int]) -> None:
    """SRV targets at the lowest priority, with their ports and weights; a backup at a
    higher priority is left out."""
    records, port = zone
    records.records = {
        ("_http._tcp.api.test", "SRV"): [
            SRV(priority=10, weight=3, port=9001, target="one.test."),
            SRV(priority=10, weight=1, port=9002, target="two.test."),
            SRV(priority=20, weight=1, port=9003, target="backup.test."),
        ],
        ("one.test", "A"): [A("127.0.0.1")],
        ("two.test", "A"): [A("127.0.0.1")],
        ("backup.test", "A"): [A("127.0.0.1")],
    }
    found = await dns(port, "_http._tcp.api.test", srv=True).fetch()
    assert [(i.url, i.weight) for i in found] == [
        ("http://127.0.0.1:9001", 3),
        ("http://127.0.0.1:9002", 1),
    ]


async def test_unknown_name_fails_and_the_cache_keeps_the_last_set(zone: tuple[Zone, int]) -> None:
    """When the records disappear, discovery fails and the cache keeps what it had."""
    records, port = zone
    records.records = {("api.test", "A"): [A("127.0.0.1")]}
    cache = InstanceCache("api", dns(port, "api.test", port=8000))
    await cache.start()
    records.records = {}
    assert await cache.refresh() is False
    assert [i.url for i in cache.instances] == ["http://127.0.0.1:8000"]
    await cache.aclose()


def test_a_records_need_a_port() -> None:
    """Without SRV there is no port in DNS: it must be given."""
    with pytest.raises(ValueError, match="port"):
        DnsDiscovery("api.test")


async def test_service_client_over_srv_reaches_three_real_instances(
    zone: tuple[Zone, int], tmp_path: Path
) -> None:
    """Three `prsm serve` processes found through SRV records: calls reach all of them."""
    records, port = zone
    with fixed_instances(tmp_path, "abc") as servers:
        ports = [int(server.base_url.rsplit(":", 1)[1]) for server in servers.values()]
        records.records = {
            ("_http._tcp.prsm.test", "SRV"): [
                SRV(priority=0, weight=1, port=p, target="localhost.test.") for p in ports
            ],
            ("localhost.test", "A"): [A("127.0.0.1")],
        }
        discovery = dns(port, "_http._tcp.prsm.test", srv=True)
        async with ServiceClient(discovery, api_key=API_KEY) as prsm:
            answers = Counter([(await prsm.query("hi", user_id="u")).answer for _ in range(6)])
    assert answers == {"a": 2, "b": 2, "c": 2}
