"""Callbacks: signed, retried, and only to allowed networks.

The specification POSTs an unsigned body to any URL a job names — anyone can forge one, and a
job can make the cluster call its own internal services. Here:

- the body is signed: `X-PRSM-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`
  with `X-PRSM-Timestamp: <unix seconds>`; receivers check it with `verify_signature`, which
  also refuses stale timestamps (replays);
- the URL is parsed once into one canonical form (`canonical_callback_url`): odd host
  spellings that clients and resolvers read differently, and user info, are refused;
- the target must resolve only to allowed networks (`jobs.callback_allow`, none by default:
  in a pod, loopback is every sidecar's admin port, so even it must be named; `prsm up`
  names it for its own machine; an IPv4-mapped IPv6 address counts as the IPv4 address it
  carries), checked when
  the job is submitted and again at connect time, on the addresses actually used, so DNS
  cannot be switched in between; redirects are not followed;
- a callback that cannot be delivered is logged and counted; it never fails the job (which
  would run the query again);
- delivery is at least once (`X-PRSM-Job-ID` lets a receiver drop duplicates), so it is
  retried with backoff on whatever `prsm.resilience.outcomes` allows for an idempotent
  request: connection errors, timeouts, 408, 429 (after its `Retry-After`) and 5xx; never a
  refused TLS certificate, a redirect or another 4xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from prometheus_client import Counter

from prsm import tracing
from prsm.client._core import parse_retry_after
from prsm.client.transport_errors import from_aiohttp
from prsm.contracts import CORRELATION_HEADER
from prsm.errors import UsageError, error_for_status
from prsm.metrics import show_zero
from prsm.resilience.retry import RetryPolicy

log = logging.getLogger("prsm.callbacks")

SIGNATURE_HEADER = "X-PRSM-Signature"
TIMESTAMP_HEADER = "X-PRSM-Timestamp"
JOB_HEADER = "X-PRSM-Job-ID"
DEFAULT_TOLERANCE = 300

CALLBACKS = Counter("prsm_callbacks_total", "Callback deliveries", ("status",))

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128")
"""This machine's own networks, for `jobs.callback_allow` where callbacks stay on it."""


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
    """`jobs.callback_allow` entries (`127.0.0.0/8`, `10.1.2.3`, `::1`) as networks;
    `ConfigError` names a bad one."""
    try:
        return [ipaddress.ip_network(entry, strict=False) for entry in entries]
    except ValueError as exc:
        raise UsageError(f"jobs.callback_allow: {exc}") from None


_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")
"""A label URL parsers read as a number (WHATWG's "ends in a number"): the host is IPv4."""
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


def canonical_callback_url(url: str) -> str:
    """The one form of a callback URL that is both checked and used, or
    `CallbackNotAllowedError`.

    HTTP clients and resolvers disagree on the odd spellings of a host (`127.1`, `2130706433`,
    `0x7f000001`, `0x7f.1`, a backslash before `@`), so only three are accepted: a dotted-quad
    IPv4 address, a bracketed IPv6 address and a DNS name whose last label is not a number
    (decimal, octal or `0x` hex: what URL parsers read as IPv4). User info
    (`user:pass@host`) is refused: it would be sent on as credentials.

    >>> canonical_callback_url("HTTP://Example.COM:8080/hook?x=1#frag")
    'http://example.com:8080/hook?x=1'
    """
    if _UNSAFE.search(url):
        raise CallbackNotAllowedError("callbackUrl must not hold spaces, controls or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket, for one
        raise CallbackNotAllowedError(f"callbackUrl is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise CallbackNotAllowedError(f"callbackUrl must be an http(s) URL, got {url!r}")
    if "@" in parts.netloc:
        raise CallbackNotAllowedError("callbackUrl must not carry user info (user@host)")
    try:
        port = parts.port
    except ValueError:
        raise CallbackNotAllowedError(f"callbackUrl has an invalid port: {url!r}") from None
    host = _canonical_host(parts.hostname or "", bracketed=parts.netloc.startswith("["))
    netloc = host if port is None else f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path or '/'}{query}"


def _canonical_host(host: str, *, bracketed: bool) -> str:
    if bracketed:
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise CallbackNotAllowedError(f"callbackUrl: {host!r} is not an IPv6 address") from None
    if _DOTTED_QUAD.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise CallbackNotAllowedError(f"callbackUrl: {host!r} is not an IPv4 address") from None
    labels = host.rstrip(".").split(".")
    if (
        not host
        or len(host) > 253
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
        or _NUMBER.fullmatch(labels[-1])
    ):
        raise CallbackNotAllowedError(
            f"callbackUrl host {host!r} is neither a dotted-quad IPv4 address, a bracketed "
            "IPv6 address nor a DNS name"
        )
    return ".".join(labels)


def _allowed(address: str, networks: list[Network]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 reaches 10.0.0.1
    return any(ip in network for network in networks)


async def check_target(url: str, networks: list[Network]) -> str:
    """The canonical form of `url` once every address its host resolves to is in
    `networks`; else `CallbackNotAllowedError`."""
    canonical = canonical_callback_url(url)
    if not networks:  # nothing can be allowed: no need to ask DNS
        raise CallbackNotAllowedError(
            "callbacks are refused: jobs.callback_allow names no network they may reach"
        )
    parts = urlsplit(canonical)
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or 0, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise CallbackNotAllowedError(f"callbackUrl host {host!r}: {exc}") from None
    addresses = {str(info[4][0]) for info in infos}
    denied = sorted(a for a in addresses if not _allowed(a, networks))
    if denied or not addresses:
        raise CallbackNotAllowedError(
            f"callbackUrl host {host!r} resolves to {', '.join(denied) or 'nothing'}, "
            "outside jobs.callback_allow"
        )
    return canonical


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


class CallbackSender:
    """Delivers callbacks. Use as `async with CallbackSender(...) as sender:`.

    `attempts` tries in all, waits from `backoff` seconds doubling up to 30 s; or a whole
    `retry` policy instead of those two."""

    def __init__(
        self,
        secret: bytes,
        networks: list[Network],
        *,
        timeout: float = 10.0,
        attempts: int = 5,
        backoff: float = 0.5,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not secret:
            raise UsageError("callbacks need a secret: set PRSM_JOBS__CALLBACK_SECRET")
        self._secret = secret
        self._networks = networks
        self._timeout = timeout
        # At least once: receivers drop duplicates by X-PRSM-Job-ID, so a delivery is
        # idempotent and `prsm.resilience.outcomes` decides what is tried again.
        self._retry = retry or RetryPolicy(
            retries=attempts - 1, backoff_initial=backoff, backoff_max=30
        )
        self._session: aiohttp.ClientSession | None = None
        show_zero(CALLBACKS, ("delivered",), ("failed",))

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
        """POST `payload` to `url`; True once delivered, False when given up (logged).

        Never raises: a callback that cannot be delivered must not fail, and so re-run, the
        job whose answer it carries."""
        try:
            target = await check_target(url, self._networks)
            await self._retry.run(
                lambda: self._post(target, payload, job_id, correlation_id), idempotent=True
            )
        except Exception as exc:
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
        tracing.inject(headers)  # the job's trace goes on to the receiver
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if response.status < 300:
                    return
                retry_after = parse_retry_after(response.headers.get("retry-after"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise from_aiohttp(exc, "POST", url, self._timeout) from exc
        raise error_for_status(
            response.status, f"{url} answered {response.status}", retry_after=retry_after
        )
