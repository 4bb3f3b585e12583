"""OAuth2 JWT bearer tokens at the API: signed by keys made here, JWKS served on loopback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from prsm import keys
from prsm.config import ApiKey, OAuthSettings, load_settings
from prsm.embedded_redis import EmbeddedRedis
from prsm.engines import FixedEngine
from prsm.errors import AuthenticationError, ConfigError
from prsm.server import create_app
from prsm.server.auth import Authenticator
from tests.support import API_KEY, free_port, local_app

ISSUER, AUDIENCE = "https://auth.example.test/", "prsm-api"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
QUERY = {"prompt": "hi", "userId": "u1"}
ASK_RESPONSE = {"model": "fixed", "input": "hi"}


def token(claims: dict[str, Any] | None = None, *, key: Any = KEY) -> str:
    """A signed token with good claims, changed by `claims` (a None value removes one)."""
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "billing-svc", "exp": now + 300,
               "iat": now, "scope": "read:ai write:ai"} | (claims or {})  # fmt: skip
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


def jwks() -> dict[str, Any]:
    numbers = KEY.public_key().public_numbers()

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                      "n": b64(numbers.n), "e": b64(numbers.e)}]}  # fmt: skip


@pytest.fixture
async def jwks_url() -> AsyncIterator[str]:
    async def serve(_: web.Request) -> web.Response:
        return web.json_response(jwks())

    async with local_app("/.well-known/jwks.json", serve) as url:
        yield url + "/.well-known/jwks.json"


async def client_for(redis_url: str | None = None, **oauth: Any) -> tuple[Any, httpx.AsyncClient]:
    settings = load_settings(
        api_keys=API_KEY,
        engine={"kind": "fixed"},
        oauth={"issuer": ISSUER, "audience": AUDIENCE} | oauth,
        redis_url=redis_url,
    )
    app = create_app(settings, FixedEngine("ok", model="fixed"))
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    await app.state.models.wait_loaded()
    transport = httpx.ASGITransport(app=app)
    return lifespan, httpx.AsyncClient(transport=transport, base_url="http://t")


async def ask(client: httpx.AsyncClient, bearer: str, path: str = "/api/v1/query",
              body: dict[str, Any] | None = None) -> httpx.Response:  # fmt: skip
    return await client.post(
        path, json=body or QUERY, headers={"authorization": f"Bearer {bearer}"}
    )


@pytest.fixture
async def api(jwks_url: str) -> AsyncIterator[httpx.AsyncClient]:
    lifespan, client = await client_for(jwks_url=jwks_url)
    yield client
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


async def test_valid_token_is_accepted_and_api_keys_still_work(api: httpx.AsyncClient) -> None:
    """A token signed by a JWKS key, for this issuer and audience, queries; so does a key."""
    assert (await ask(api, token())).status_code == 200
    assert (await ask(api, API_KEY)).status_code == 200


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (lambda: token({"exp": int(time.time()) - 120}), "token_expired"),
        (lambda: token({"aud": "another-api"}), "invalid_audience"),
        (lambda: token({"iss": "https://evil.test/"}), "invalid_issuer"),
        (lambda: token(key=OTHER_KEY), "invalid_token"),
        (lambda: token({"exp": None}), "invalid_token"),
    ],
)
async def test_bad_tokens_are_401_with_a_clear_code(
    api: httpx.AsyncClient, bad: Any, code: str
) -> None:
    """Expired, wrong audience, wrong issuer, foreign signature, no expiry: 401 each."""
    response = await ask(api, bad())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


async def test_alg_none_token_is_refused(api: httpx.AsyncClient) -> None:
    """An unsigned token (`alg: none`) with perfect claims is 401."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = jwt.decode(token(), options={"verify_signature": False})
    unsigned = f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'})}.{part(claims)}."
    response = await ask(api, unsigned)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


async def test_scopes_gate_queries_and_jobs(api: httpx.AsyncClient) -> None:
    """read:ai may query but not submit jobs (403); without read:ai a query is 403 too."""
    reader = token({"scope": "read:ai"})
    assert (await ask(api, reader)).status_code == 200
    job = {"type": "priority-query", "data": QUERY}
    refused = await ask(api, reader, "/api/v1/jobs", job)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    writer_only = token({"scope": None, "scp": ["write:ai"]})
    assert (await ask(api, writer_only)).status_code == 403


async def test_one_oauth_client_cannot_read_anothers_job(
    jwks_url: str, redis_server: EmbeddedRedis
) -> None:
    """Jobs belong to the token's subject: another OAuth client gets 404 for it, and the batch
    another client submits under the same id is stored apart."""
    lifespan, api = await client_for(redis_server.url, jwks_url=jwks_url)
    billing, search = token({"sub": "billing-svc"}), token({"sub": "search-svc"})
    job = {"type": "priority-query", "data": QUERY}
    accepted = (await ask(api, billing, "/api/v1/jobs", job)).json()
    mine = await api.get(accepted["statusUrl"], headers={"authorization": f"Bearer {billing}"})
    theirs = await api.get(accepted["statusUrl"], headers={"authorization": f"Bearer {search}"})
    await api.aclose()
    await lifespan.__aexit__(None, None, None)
    assert mine.status_code == 200
    assert (theirs.status_code, theirs.json()["error"]["code"]) == (404, "job_not_found")
    assert keys.owner_tag(f"jwt:{ISSUER}:billing-svc") != keys.owner_tag(f"jwt:{ISSUER}:search-svc")


async def test_configured_public_key_instead_of_jwks() -> None:
    """With oauth.public_key, tokens verify without any JWKS endpoint."""
    pem = (
        KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    lifespan, client = await client_for(public_key=pem)
    try:
        assert (await ask(client, token())).status_code == 200
        assert (await ask(client, token(key=OTHER_KEY))).status_code == 401
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_unreachable_jwks_is_503_not_401() -> None:
    """When the issuer's keys cannot be fetched, the caller is told to retry, not refused."""
    lifespan, client = await client_for(jwks_url=f"http://127.0.0.1:{free_port()}/jwks")
    try:
        response = await ask(client, token())
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"


def test_mixing_symmetric_and_asymmetric_algorithms_is_refused_at_start() -> None:
    """oauth.algorithms RS256,HS256 would let an HMAC token signed with the public key pass:
    the settings refuse it."""
    with pytest.raises(ConfigError, match="do not mix"):
        load_settings(oauth={"algorithms": "RS256,HS256"})


async def test_a_key_unfit_for_the_token_is_401_not_500() -> None:
    """An HS256 token 'signed' with the configured PEM public key, where only HS256 is
    accepted: pyjwt refuses the key (InvalidKeyError), and the answer is 401 invalid_token."""
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    lifespan, client = await client_for(public_key=pem.decode(), algorithms="HS256")
    try:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60}
        forged = jwt.encode(claims, "x" * 32, algorithm="HS256")
        response = await client.post(
            "/api/v1/query", json=QUERY, headers={"authorization": f"Bearer {forged}"}
        )
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_token"


def public_key_pem() -> str:
    return (
        KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_a_token_without_its_identity_claim_is_401(api: httpx.AsyncClient) -> None:
    """No `sub`: 401 invalid_token, not an identity shared by every such token."""
    response = await ask(api, token({"sub": None}))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert "`sub`" in response.json()["error"]["message"]


async def test_the_identity_claim_is_configurable_and_never_cut() -> None:
    """`oauth.identity_claim: azp` names client-credentials callers by their client id, the
    whole of it: two ids sharing their first 64 characters are two callers."""
    auth = Authenticator(
        [],
        OAuthSettings(
            issuer=ISSUER, audience=AUDIENCE, public_key=public_key_pem(), identity_claim="azp"
        ),
    )
    long = "client-" + "x" * 80
    one = await auth.authenticate(f"Bearer {token({'sub': None, 'azp': long + '1'})}")
    two = await auth.authenticate(f"Bearer {token({'sub': None, 'azp': long + '2'})}")
    assert one.key_id == f"jwt:{long}1"
    assert one.account != two.account
    with pytest.raises(AuthenticationError, match="`azp`"):
        await auth.authenticate(f"Bearer {token()}")


async def test_an_unknown_tier_claim_is_the_default_tier() -> None:
    """A token's `tier` names a tier only if the settings know it: others add no series."""
    auth = Authenticator(
        [ApiKey.parse("k:premium")],
        OAuthSettings(
            issuer=ISSUER, audience=AUDIENCE, public_key=public_key_pem(), tiers=["gold"]
        ),
    )
    tiers = [
        (await auth.authenticate(f"Bearer {token({'tier': tier})}")).tier
        for tier in ("premium", "gold", "made-up-1", "made-up-2", None)
    ]
    assert tiers == ["premium", "gold", "standard", "standard", "standard"]


async def test_storing_and_deleting_responses_need_write_scope(
    jwks_url: str, redis_server: EmbeddedRedis
) -> None:
    """A `read:ai` token may ask the Responses API with `store: false`; storing (the default)
    and deleting are writes: 403 `insufficient_scope` naming `store`, and 403 on DELETE."""
    lifespan, api = await client_for(redis_server.url, jwks_url=jwks_url)
    reader = {"authorization": f"Bearer {token({'scope': 'read:ai'})}"}
    writer = {"authorization": f"Bearer {token()}"}
    try:
        stored = await api.post("/v1/responses", json=ASK_RESPONSE, headers=reader)
        unstored = await api.post(
            "/v1/responses", json=ASK_RESPONSE | {"store": False}, headers=reader
        )
        kept = (await api.post("/v1/responses", json=ASK_RESPONSE, headers=writer)).json()
        deleted = await api.delete(f"/v1/responses/{kept['id']}", headers=reader)
        read = await api.get(f"/v1/responses/{kept['id']}", headers=writer)
    finally:
        await api.aclose()
        await lifespan.__aexit__(None, None, None)
    assert stored.status_code == 403
    assert (stored.json()["error"]["code"], stored.json()["error"]["param"]) == (
        "insufficient_scope",
        "store",
    )
    assert unstored.status_code == 200
    assert deleted.status_code == 403
    assert read.status_code == 200
