"""The Python SDK: `PRSMClient` (blocking, httpx) and `AsyncPRSMClient` (asyncio, aiohttp) for
one base URL; `ServiceClient` (asyncio) and `SyncServiceClient` (blocking) for a discovered
set of instances."""

from prsm.client._async import AsyncPRSMClient
from prsm.client._core import HealthStatus, QueryResult, StreamChunk
from prsm.client._sync import PRSMClient
from prsm.client.oauth import ClientCredentials
from prsm.client.service import ServiceClient
from prsm.client.service_sync import SyncServiceClient
from prsm.client.tls import ClientTLS
from prsm.resilience.retry import RetryPolicy

__all__ = [
    "AsyncPRSMClient",
    "ClientCredentials",
    "ClientTLS",
    "HealthStatus",
    "PRSMClient",
    "QueryResult",
    "RetryPolicy",
    "ServiceClient",
    "StreamChunk",
    "SyncServiceClient",
]
