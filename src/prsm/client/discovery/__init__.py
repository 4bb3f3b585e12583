"""Discovery backends, each a sibling module: static, DNS, Consul and Kubernetes."""

from prsm.client.discovery.base import Discovery, Instance
from prsm.client.discovery.cache import InstanceCache
from prsm.client.discovery.consul import ConsulDiscovery
from prsm.client.discovery.dns import DnsDiscovery
from prsm.client.discovery.kubernetes import KubernetesDiscovery
from prsm.client.discovery.static import StaticDiscovery

__all__ = [
    "ConsulDiscovery",
    "Discovery",
    "DnsDiscovery",
    "Instance",
    "InstanceCache",
    "KubernetesDiscovery",
    "StaticDiscovery",
]
