"""Discovery backends, each a sibling module: static, DNS, Consul and Kubernetes."""

from prsm.sd.base import Discovery, Instance
from prsm.sd.cache import InstanceCache
from prsm.sd.consul import ConsulDiscovery
from prsm.sd.dns import DnsDiscovery
from prsm.sd.kubernetes import KubernetesDiscovery
from prsm.sd.static import StaticDiscovery

__all__ = [
    "ConsulDiscovery",
    "Discovery",
    "DnsDiscovery",
    "Instance",
    "InstanceCache",
    "KubernetesDiscovery",
    "StaticDiscovery",
]
