"""Discovery backends, each a sibling module: static (here), more to come."""

from prsm.client.discovery.base import Discovery, Instance
from prsm.client.discovery.cache import InstanceCache
from prsm.client.discovery.static import StaticDiscovery

__all__ = ["Discovery", "Instance", "InstanceCache", "StaticDiscovery"]
