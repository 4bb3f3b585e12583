"""PRSM for microservices: an AI query service, its SDK and its service-mesh companions.

>>> from prsm import PRSMClient
>>> with PRSMClient(base_url="http://127.0.0.1:8000", api_key="...") as client:  # doctest: +SKIP
...     print(client.query("What is the capital of France?", user_id="u1").answer)
"""

from prsm._version import __version__
from prsm.client import (
    AsyncPRSMClient,
    HealthStatus,
    PRSMClient,
    QueryResult,
    RetryPolicy,
    StreamChunk,
)
from prsm.errors import (
    AuthenticationError,
    ConnectError,
    HTTPStatusError,
    PRSMError,
    RateLimitedError,
    ServiceUnavailableError,
    TimeoutError,
    TLSError,
    TransportError,
    UsageError,
)

__all__ = [
    "AsyncPRSMClient",
    "AuthenticationError",
    "ConnectError",
    "HTTPStatusError",
    "HealthStatus",
    "PRSMClient",
    "PRSMError",
    "QueryResult",
    "RateLimitedError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "StreamChunk",
    "TLSError",
    "TimeoutError",
    "TransportError",
    "UsageError",
    "__version__",
]
