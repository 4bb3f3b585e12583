"""OAuth2 client credentials for service-to-service calls (the specification's
`ServiceAuthClient`), on authlib.

The token is cached until `refresh_margin` seconds (60) before it expires; when it must be
renewed, concurrent callers wait for one shared request instead of each asking.

>>> credentials = ClientCredentials("https://auth.example/oauth/token", "billing", "s3cret",
...                                 audience="prsm-api")                 # doctest: +SKIP
>>> AsyncPRSMClient("http://prsm:8000", auth=credentials)               # doctest: +SKIP

One `ClientCredentials` serves both kinds of caller: `token()` for asyncio code and
`token_blocking()` for threads (the blocking `PRSMClient`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client

from prsm.errors import AuthenticationError, ConnectError
from prsm.resilience.clock import SYSTEM_CLOCK, Clock

DEFAULT_SCOPE = "read:ai write:ai"


class ClientCredentials:
    """OAuth2 client credentials: a cached bearer token for every request, refreshed
    `refresh_margin` seconds before it expires, once for all concurrent callers (tasks or
    threads). Pass it as `auth=` to any client."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        audience: str | None = None,
        scope: str = DEFAULT_SCOPE,
        refresh_margin: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._audience = audience
        self._scope = scope
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        self.fetches = 0
        """How many tokens were requested (for metrics and tests)."""

    def _cached(self) -> str | None:
        if self._token is not None and self._clock.monotonic() < self._expires_at:
            return self._token
        return None

    def _keep(self, reply: dict[str, Any]) -> str:
        self._token = str(reply["access_token"])
        lifetime = float(reply.get("expires_in", 300))
        self._expires_at = self._clock.monotonic() + max(0.0, lifetime - self._margin)
        return self._token

    async def token(self) -> str:
        """A valid access token, from the cache or one shared request."""
        if (cached := self._cached()) is not None:
            return cached
        async with self._lock:
            if (cached := self._cached()) is not None:
                return cached  # another caller renewed it while we waited
            extra = self._request_options()
            async with AsyncOAuth2Client(
                self._client_id, self._client_secret, scope=self._scope
            ) as client:
                with self._token_errors():
                    reply = await client.fetch_token(self.token_url, **extra)
            return self._keep(dict(reply))

    def token_blocking(self) -> str:
        """`token()` for threads: the same cache, one request for all waiting threads."""
        if (cached := self._cached()) is not None:
            return cached
        with self._thread_lock:
            if (cached := self._cached()) is not None:
                return cached
            extra = self._request_options()
            with (
                OAuth2Client(self._client_id, self._client_secret, scope=self._scope) as client,
                self._token_errors(),
            ):
                reply = client.fetch_token(self.token_url, **extra)
            return self._keep(dict(reply))

    def invalidate(self) -> None:
        """Forget the cached token (the server refused it); the next call fetches anew."""
        self._token = None

    def _request_options(self) -> dict[str, Any]:
        self.fetches += 1
        extra: dict[str, Any] = {"grant_type": "client_credentials"}
        if self._audience:
            extra["audience"] = self._audience
        return extra

    @contextmanager
    def _token_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise ConnectError(f"cannot reach {self.token_url}: {exc}") from exc
        except Exception as exc:  # authlib's OAuthError and httpx errors
            raise AuthenticationError(
                f"the token endpoint refused the client credentials: {exc}",
                code="token_request_failed",
            ) from exc
