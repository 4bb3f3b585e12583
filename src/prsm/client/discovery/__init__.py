"""Discovery backends, each a sibling module: static, DNS and Consul so far."""

from prsm.client.discovery.base import Discovery, Instance
from prsm.client.discovery.cache import InstanceCache
from prsm.client.discovery.consul import ConsulDiscovery
from prsm.client.discovery.dns import DnsDiscovery
from prsm.client.discovery.static import StaticDiscovery

__all__ = [
    "ConsulDiscovery",
    "Discovery",
    "DnsDiscovery",
    "Instance",
    "InstanceCache",
    "StaticDiscovery",
]
