"""Callbacks: signed, retried, and only to allowed networks.

The specification POSTs an unsigned body to any URL a job names — anyone can forge one, and a
job can make the cluster call its own internal services. Here:

- the body is signed: `X-PRSM-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`
  with `X-PRSM-Timestamp: <unix seconds>`; receivers check it with `verify_signature`, which
  also refuses stale timestamps (replays);
- the target must resolve only to allowed networks (`jobs.callback_allow`, loopback by
  default), checked when the job is submitted and again at connect time, on the addresses
  actually used, so DNS cannot be switched in between; redirects are not followed;
- delivery is retried with backoff on connection errors, 429 and 5xx. It is at least once:
  `X-PRSM-Job-ID` lets a receiver drop duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import tenacity
from aiohttp.abc import AbstractResolver, ResolveResult
from prometheus_client import Counter

from prsm.contracts import CORRELATION_HEADER
from prsm.errors import UsageError

log = logging.getLogger("prsm.callbacks")

SIGNATURE_HEADER = "X-PRSM-Signature"
TIMESTAMP_HEADER = "X-PRSM-Timestamp"
JOB_HEADER = "X-PRSM-Job-ID"
DEFAULT_TOLERANCE = 300

CALLBACKS = Counter("prsm_callbacks_total", "Callback deliveries", ("status",))

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CallbackNotAllowedError(UsageError):
    """The callback URL is malformed or resolves outside the allowed networks."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-PRSM-Signature` value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify_signature(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when `signature` signs `body` at `timestamp`, and `timestamp` is recent.

    For receivers of PRSM callbacks:

    >>> ok = verify_signature(secret, await request.body(),  # doctest: +SKIP
    ...                       request.headers.get("X-PRSM-Timestamp"),
    ...                       request.headers.get("X-PRSM-Signature"))
    """
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def parse_networks(entries: Iterable[str]) -> list[Network]:
    try:
        return [ipaddress.ip_network(entry, strict=False) for entry in entries]
    except ValueError as exc:
        raise UsageError(f"jobs.callback_allow: {exc}") from None


def _allowed(address: str, networks: list[Network]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return any(ip in network for network in networks)


async def check_target(url: str, networks: list[Network]) -> None:
    """Raise `CallbackNotAllowedError` unless `url` is http(s) and every address its host
    resolves to is in `networks`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackNotAllowedError(f"callbackUrl must be an http(s) URL, got {url!r}")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or 0, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise CallbackNotAllowedError(f"callbackUrl host {parts.hostname!r}: {exc}") from None
    addresses = {str(info[4][0]) for info in infos}
    denied = sorted(a for a in addresses if not _allowed(a, networks))
    if denied or not addresses:
        raise CallbackNotAllowedError(
            f"callbackUrl host {parts.hostname!r} resolves to {', '.join(denied) or 'nothing'}, "
            "outside jobs.callback_allow"
        )


class _AllowListResolver(AbstractResolver):
    """Resolves as usual, then refuses if any address is outside the allowed networks."""

    def __init__(self, networks: list[Network]) -> None:
        self._networks = networks
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or any(not _allowed(r["host"], self._networks) for r in results):
            raise CallbackNotAllowedError(f"callback host {host!r} is outside jobs.callback_allow")
        return results

    async def close(self) -> None:
        await self._inner.close()


class _Retryable(Exception):
    """A delivery attempt that may succeed later (connection error, 429, 5xx)."""


class CallbackSender:
    """Delivers callbacks. Use as `async with CallbackSender(...) as sender:`."""

    def __init__(
        self,
        secret: bytes,
        networks: list[Network],
        *,
        timeout: float = 10.0,
        attempts: int = 5,
        backoff: float = 0.5,
    ) -> None:
        if not secret:
            raise UsageError("callbacks need a secret: set PRSM_JOBS__CALLBACK_SECRET")
        self._secret = secret
        self._networks = networks
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CallbackSender:
        connector = aiohttp.TCPConnector(resolver=_AllowListResolver(self._networks))
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, url: str, payload: dict[str, Any], *, job_id: str, correlation_id: str | None
    ) -> bool:
        """POST `payload` to `url`; True once delivered, False when given up (logged)."""
        try:
            await check_target(url, self._networks)
            retrying = tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(self._attempts),
                wait=tenacity.wait_exponential_jitter(
                    multiplier=self._backoff, max=30, jitter=self._backoff
                ),
                retry=tenacity.retry_if_exception_type(_Retryable),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self._post(url, payload, job_id, correlation_id)
        except (CallbackNotAllowedError, _Retryable, aiohttp.ClientResponseError) as exc:
            CALLBACKS.labels("failed").inc()
            log.error(
                "callback not delivered",
                extra={"jobId": job_id, "callbackUrl": url, "error": str(exc)},
            )
            return False
        CALLBACKS.labels("delivered").inc()
        return True

    async def _post(
        self, url: str, payload: dict[str, Any], job_id: str, correlation_id: str | None
    ) -> None:
        assert self._session is not None, "use CallbackSender as an async context manager"
        body = json.dumps(payload).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            JOB_HEADER: job_id,
        }
        if correlation_id:
            headers[CORRELATION_HEADER] = correlation_id
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if response.status == 429 or response.status >= 500:
                    raise _Retryable(f"{url} answered {response.status}")
                if response.status >= 300:
                    raise aiohttp.ClientResponseError(
                        response.request_info, (), status=response.status,
                        message=f"{url} answered {response.status}; not retried",
                    )  # fmt: skip
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise _Retryable(f"{url}: {exc}") from exc
