"""The HTTP libraries' errors mapped into `prsm.errors`, at the boundary, once for each library.

What matters for trying again is *when* a connection failed: before the request left
(`ConnectError`: no connection, DNS, connect timeout — never sent), or after
(`ConnectionLostError`: reset, closed before or during the answer — it may have been acted
on), or whether the answer was late (`TimeoutError`) or a certificate was refused (`TLSError`).
`prsm.resilience.outcomes` then decides the same way for every caller.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

import aiohttp

from prsm.client.tls import dropped_hint, tls_failure
from prsm.errors import ConnectError, ConnectionLostError, TimeoutError, TLSError, TransportError

if TYPE_CHECKING:  # imported where used: a server that maps only aiohttp's errors never loads it
    import httpx


def from_aiohttp(exc: BaseException, method: str, url: str, timeout: float) -> TransportError:
    """The PRSM error an aiohttp error (or a bare timeout) stands for."""
    if tls_failure(exc):
        return TLSError(f"TLS with {url} failed: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return ConnectError(f"cannot reach {url}: {exc}")
    if isinstance(exc, aiohttp.ServerTimeoutError | builtins.TimeoutError):
        return TimeoutError(f"no answer from {url} within {timeout:g}s")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        return ConnectionLostError(
            f"{method} {url}: the connection broke: {exc}{dropped_hint(url)}"
        )
    return TransportError(f"{method} {url} failed: {exc}")


def from_httpx(exc: httpx.TransportError, method: str, url: str, timeout: float) -> TransportError:
    """The PRSM error an httpx transport error stands for."""
    import httpx

    if tls_failure(exc):
        return TLSError(f"TLS with {url} failed: {exc}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ConnectError(f"cannot reach {url}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(f"no answer from {url} within {timeout:g}s")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return ConnectionLostError(
            f"{method} {url}: the connection broke: {exc}{dropped_hint(url)}"
        )
    return TransportError(f"{method} {url} failed: {exc}")


def _lost(exc: BaseException, method: str, url: str) -> ConnectionLostError:
    return ConnectionLostError(f"{method} {url}: the connection broke: {exc}{dropped_hint(url)}")
