"""Discovery backends, each a sibling module: static and Consul so far."""

from prsm.client.discovery.base import Discovery, Instance
from prsm.client.discovery.cache import InstanceCache
from prsm.client.discovery.consul import ConsulDiscovery
from prsm.client.discovery.static import StaticDiscovery

__all__ = ["ConsulDiscovery", "Discovery", "Instance", "InstanceCache", "StaticDiscovery"]
