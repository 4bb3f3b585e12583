"""OAuth2 client credentials from the SDK: a token endpoint (RFC 6749 §4.4) on loopback
issuing JWTs, and a real `prsm serve` that verifies them through the issuer's JWKS."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web

from prsm import AsyncPRSMClient, PRSMClient
from prsm.client.oauth import ClientCredentials
from prsm.errors import AuthenticationError
from prsm.resilience.clock import ManualClock
from tests.server.test_oauth import AUDIENCE, ISSUER, KEY, jwks
from tests.support import local_app, prsm_serve

CLIENT_ID, CLIENT_SECRET = "billing-svc", "billing-secret"


@dataclass
class Provider:
    url: str
    token_requests: list[dict[str, str]]
    lifetime: int = 3600
    signing_keys: list[Any] = field(default_factory=list)
    """Keys for the next tokens, first to last; the test key once they run out."""


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    requests: list[dict[str, str]] = []
    state = Provider("", requests)

    async def token(request: web.Request) -> web.Response:
        form = dict(await request.post())
        requests.append({k: str(v) for k, v in form.items()})
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {basic}":
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": form.get("audience"), "sub": CLIENT_ID, "iat": now,
                  "exp": now + state.lifetime, "scope": form.get("scope", "")}  # fmt: skip
        key = state.signing_keys.pop(0) if state.signing_keys else KEY
        access = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        return web.json_response(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": state.lifetime,
                "scope": claims["scope"],
            }
        )

    async def keys(_: web.Request) -> web.Response:
        return web.json_response(jwks())

    async with local_app("/jwks", keys, ("POST", "/oauth/token", token)) as url:
        state.url = url
        yield state


def api_env(provider: Provider) -> dict[str, str]:
    """`prsm serve` settings that trust the provider's tokens."""
    return {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_OAUTH__ISSUER": ISSUER,
        "PRSM_OAUTH__AUDIENCE": AUDIENCE,
        "PRSM_OAUTH__JWKS_URL": provider.url + "/jwks",
    }


def client_credentials(provider: Provider, **options: Any) -> ClientCredentials:
    return ClientCredentials(
        provider.url + "/oauth/token", CLIENT_ID, CLIENT_SECRET, audience=AUDIENCE, **options
    )


async def test_client_credentials_reach_the_api_with_one_token_for_all(
    provider: Provider, tmp_path: Path
) -> None:
    """The SDK gets a token with the audience and scopes asked for; the API verifies it;
    20 concurrent first calls share one token request, later calls reuse it."""
    env, credentials = api_env(provider), client_credentials(provider)
    with prsm_serve(tmp_path, env=env) as api:
        async with AsyncPRSMClient(api.base_url, auth=credentials) as client:
            results = await asyncio.gather(*(client.query("hi", user_id="u") for _ in range(20)))
            await client.query("again", user_id="u")
    assert [r.answer for r in results] == ["This is a fixed answer."] * 20
    assert len(provider.token_requests) == 1
    assert provider.token_requests[0] == {
        "grant_type": "client_credentials",
        "scope": "read:ai write:ai",
        "audience": AUDIENCE,
    }


async def test_token_is_renewed_60_seconds_before_it_expires(provider: Provider) -> None:
    """A 120 s token is reused for 60 s, then renewed."""
    provider.lifetime = 120
    clock = ManualClock()
    credentials = client_credentials(provider, clock=clock)
    first = await credentials.token()
    clock.advance(59)
    assert await credentials.token() == first
    clock.advance(2)
    await credentials.token()
    assert credentials.fetches == 2


async def test_refused_client_credentials_are_an_authentication_error(provider: Provider) -> None:
    """A wrong client secret: AuthenticationError `token_request_failed`, no token cached."""
    credentials = ClientCredentials(provider.url + "/oauth/token", CLIENT_ID, "wrong")
    with pytest.raises(AuthenticationError) as caught:
        await credentials.token()
    assert caught.value.code == "token_request_failed"


async def test_refused_token_is_replaced_once(provider: Provider, tmp_path: Path) -> None:
    """The API refuses the first token (signed with a key it no longer trusts): the client
    fetches a fresh one and the call succeeds, with two token requests in all."""
    from tests.server.test_oauth import OTHER_KEY

    env, credentials = api_env(provider), client_credentials(provider)
    provider.signing_keys = [OTHER_KEY, KEY]
    with prsm_serve(tmp_path, env=env) as api:
        async with AsyncPRSMClient(api.base_url, auth=credentials) as client:
            result = await client.query("hi", user_id="u")
    assert result.answer == "This is a fixed answer."
    assert len(provider.token_requests) == 2


async def test_blocking_client_shares_one_token_across_threads(
    provider: Provider, tmp_path: Path
) -> None:
    """`PRSMClient(auth=...)` from 8 threads at once: one token request, every call admitted;
    a token the API refuses is replaced once, as in the async client."""
    from tests.server.test_oauth import OTHER_KEY

    env, credentials = api_env(provider), client_credentials(provider)
    with prsm_serve(tmp_path, env=env) as api:

        def calls() -> list[str]:
            with (
                PRSMClient(api.base_url, auth=credentials) as client,
                ThreadPoolExecutor(8) as pool,
            ):
                results = pool.map(lambda _: client.query("hi", user_id="u"), range(8))
                answers = [r.answer for r in results]
                provider.signing_keys = [OTHER_KEY, KEY]
                credentials.invalidate()
                answers.append(client.query("after rotation", user_id="u").answer)
                return answers

        # The provider answers on this event loop: the blocking calls run in a thread.
        answers = await asyncio.to_thread(calls)
    assert answers == ["This is a fixed answer."] * 9
    assert len(provider.token_requests) == 3  # one shared, then the refused one and its successor
