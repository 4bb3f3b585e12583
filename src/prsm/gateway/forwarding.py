"""What the gateway forwards and what it may try again: the headers that pass each way, the
requests a second copy does no harm to, the failures a route retries on, the path sent
upstream and the value a sticky route keys on."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from urllib.parse import quote

from starlette.types import Scope

from prsm.edge.correlation import HEADER as CID
from prsm.errors import (
    CircuitOpenError,
    ConnectError,
    ConnectionLostError,
    HTTPStatusError,
    TimeoutError,
    TLSError,
)
from prsm.gateway.config import Route
from prsm.gateway.upstream import UpstreamResponse

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
IDEMPOTENCY_HEADERS = frozenset({b"idempotency-key", b"x-idempotency-key"})
"""A request carrying one of these says the upstream deduplicates it: resending is safe."""
# RFC 9110 §7.6.1 connection-specific headers, never forwarded; `host` is set per upstream,
# `content-length` from the body actually sent.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
SET_HERE = frozenset({CID, b"x-forwarded-for", b"x-forwarded-proto", b"x-source-service"})
NOT_FORWARDED = HOP_BY_HOP | SET_HERE
NOT_RELAYED = (HOP_BY_HOP - {b"content-length"}) | {CID}  # the upstream's length is right


class UpstreamAnswered(HTTPStatusError):
    """An upstream answered with a status the route retries on (502, 503, 504 in its
    `retry_on`); holds the answer, buffered, to pass on if no other instance does better."""

    def __init__(
        self, response: UpstreamResponse | None, status: int, *, not_run: bool = False
    ) -> None:
        super().__init__(f"upstream answered {status}", status_code=status, not_run=not_run)
        self.response = response


def replayable(route: Route, scope: Scope, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a second copy of the request does no harm: an idempotent method, an
    `Idempotency-Key`, or a route that says so (`non_idempotent: true`)."""
    return (
        scope["method"] in IDEMPOTENT
        or route.retries.non_idempotent
        or any(name.lower() in IDEMPOTENCY_HEADERS for name, _ in headers)
    )


RETRY_ON_TOKENS: dict[type[BaseException], str] = {
    ConnectError: "connect-failure",
    TLSError: "connect-failure",
    ConnectionLostError: "reset",
}


def route_allows(retry_on: Collection[str], exc: BaseException) -> bool:
    """The route's `retry_on` narrows what the classifier allows: connection failures and
    resets go on to another instance only if listed (statuses are filtered before they are
    raised, in `_send_upstream`)."""
    token = RETRY_ON_TOKENS.get(type(exc))
    return token is None or token in retry_on


ATTEMPT_OUTCOMES: dict[type[BaseException], str] = {
    CircuitOpenError: "breaker_open",
    ConnectError: "connect_failure",
    TLSError: "tls_refused",
    ConnectionLostError: "reset",
    TimeoutError: "timeout",
    UpstreamAnswered: "retried_status",
}


def attempt_outcome(exc: BaseException | None) -> str:
    """The `outcome` label of `prsm_gateway_upstream_attempts_total` for one try."""
    return "ok" if exc is None else ATTEMPT_OUTCOMES.get(type(exc), "error")


def no_headers_in(seconds: float) -> Callable[[], TimeoutError]:
    """The error of a try (or a route) whose upstream sent no headers within `seconds`."""
    return functools.partial(TimeoutError, f"no response headers within {seconds:g}s")


def sticky_value(route: Route, headers: dict[bytes, bytes]) -> bytes | None:
    """What a sticky route keys its pick on: its header's value, or its cookie's."""
    sticky = route.sticky
    if sticky is None:
        return None
    if sticky.header is not None:
        return headers.get(sticky.header.lower().encode())
    cookies = headers.get(b"cookie", b"").decode("latin-1")
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name == sticky.cookie and value:
            return value.encode()
    return None


def upstream_target(scope: Scope, route: Route) -> str:
    """The path and query to send upstream, percent-encoding kept as the caller sent it, with
    the route's prefix rewritten."""
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or quote(path).encode()
    rewrite = route.rewrite
    if rewrite is not None:
        prefix = route.prefix.encode()
        if raw.startswith(prefix):
            tail = raw[len(prefix) :]
        else:  # the caller percent-encoded part of the prefix itself
            tail = quote(path[len(route.prefix) :]).encode()
        raw = rewrite.rstrip("/").encode() + tail or b"/"
    query: bytes = scope.get("query_string", b"")
    return (raw + b"?" + query if query else raw).decode("latin-1")
