"""PRSM for microservices: an AI query service, its SDK and its service-mesh companions.

>>> from prsm import PRSMClient
>>> with PRSMClient(base_url="http://127.0.0.1:8000", api_key="...") as client:  # doctest: +SKIP
...     print(client.query("What is the capital of France?", user_id="u1").answer)
"""

from typing import TYPE_CHECKING, Any

from prsm._version import __version__
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

if TYPE_CHECKING:
    from prsm.client import (
        AsyncPRSMClient,
        HealthStatus,
        PRSMClient,
        QueryResult,
        RetryPolicy,
        StreamChunk,
    )

_SDK = frozenset(
    {"AsyncPRSMClient", "HealthStatus", "PRSMClient", "QueryResult", "RetryPolicy", "StreamChunk"}
)


def __getattr__(name: str) -> Any:
    """The SDK's names, imported on first use, so that `prsm serve` and `prsm gateway`, which
    import this package too, do not load the SDK and its HTTP clients."""
    if name in _SDK:
        import prsm.client

        return getattr(prsm.client, name)
    raise AttributeError(f"module 'prsm' has no attribute {name!r}")


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
