"""The Python SDK: `PRSMClient` (blocking, httpx) and `AsyncPRSMClient` (asyncio, aiohttp) for
one base URL; `ServiceClient` (asyncio) and `SyncServiceClient` (blocking) for a discovered
set of instances; `ModelServiceClient` for models each on instances of their own.

Each name is imported on first use: a process that needs one piece (the worker's callbacks
need `prsm.client._core`'s header parsing) does not load the others and their libraries
(discovery's DNS resolver, OAuth's, both HTTP clients)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prsm.client._async import AsyncPRSMClient
    from prsm.client._core import HealthStatus, QueryOptions, QueryResult, StreamChunk
    from prsm.client._sync import PRSMClient
    from prsm.client.oauth import ClientCredentials
    from prsm.client.routed import ModelServiceClient
    from prsm.client.service import ServiceClient
    from prsm.client.service_sync import SyncServiceClient
    from prsm.client.tls import ClientTLS
    from prsm.resilience.retry import RetryPolicy

_WHERE = {
    "AsyncPRSMClient": "prsm.client._async",
    "ClientCredentials": "prsm.client.oauth",
    "ClientTLS": "prsm.client.tls",
    "HealthStatus": "prsm.client._core",
    "ModelServiceClient": "prsm.client.routed",
    "PRSMClient": "prsm.client._sync",
    "QueryOptions": "prsm.client._core",
    "QueryResult": "prsm.client._core",
    "RetryPolicy": "prsm.resilience.retry",
    "ServiceClient": "prsm.client.service",
    "StreamChunk": "prsm.client._core",
    "SyncServiceClient": "prsm.client.service_sync",
}


def __getattr__(name: str) -> Any:
    """The SDK's names, each imported from its module on first use."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'prsm.client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncPRSMClient",
    "ClientCredentials",
    "ClientTLS",
    "HealthStatus",
    "ModelServiceClient",
    "PRSMClient",
    "QueryOptions",
    "QueryResult",
    "RetryPolicy",
    "ServiceClient",
    "StreamChunk",
    "SyncServiceClient",
]
