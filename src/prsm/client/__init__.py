"""The Python SDK: `PRSMClient` (blocking, httpx) and `AsyncPRSMClient` (asyncio, aiohttp)."""

from prsm.client._async import AsyncPRSMClient
from prsm.client._core import HealthStatus, QueryResult, RetryPolicy
from prsm.client._sync import PRSMClient

__all__ = ["AsyncPRSMClient", "HealthStatus", "PRSMClient", "QueryResult", "RetryPolicy"]
