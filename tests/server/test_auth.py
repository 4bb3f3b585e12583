"""Who may call: API keys, scopes and certificate identities, without a server."""

from __future__ import annotations

import pytest

from prsm.config import ApiKey, OAuthSettings, TLSSettings
from prsm.errors import AuthenticationError, PermissionDeniedError
from prsm.server.auth import ALL_SCOPES, READ, WRITE, Authenticator, Principal
from prsm.server.tls import PeerIdentity
from tests.support import Certificates

AUTH = Authenticator([ApiKey.parse("alpha"), ApiKey.parse("beta:premium")], OAuthSettings())


async def test_known_key_gives_its_tier_all_scopes_and_a_fingerprint() -> None:
    """A configured key authenticates with its tier and both scopes; the id is a hash
    prefix, not the key."""
    principal = await AUTH.authenticate("Bearer beta")
    assert principal.tier == "premium"
    assert principal.scopes == ALL_SCOPES
    assert len(principal.key_id) == 8
    assert "beta" not in principal.key_id


async def test_scheme_is_case_insensitive() -> None:
    """`bearer` works as well as `Bearer`."""
    assert (await AUTH.authenticate("bearer alpha")).tier == "standard"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_credentials"),
        ("", "missing_credentials"),
        ("Basic YWxwaGE=", "invalid_credentials"),
        ("Bearer", "invalid_credentials"),
        ("Bearer alphax", "invalid_credentials"),
        ("Bearer alph", "invalid_credentials"),
        ("Bearer a.b.c", "invalid_credentials"),  # a JWT when OAuth2 is off: just a wrong key
    ],
)
async def test_bad_credentials_are_401(header: str | None, code: str) -> None:
    """Missing, malformed, wrong and prefix-of-a-key credentials are all refused."""
    with pytest.raises(AuthenticationError) as caught:
        await AUTH.authenticate(header)
    assert caught.value.code == code
    assert caught.value.status_code == 401


async def test_no_keys_configured_refuses_everything() -> None:
    """An empty key list admits no one (prsm serve makes a dev key instead)."""
    with pytest.raises(AuthenticationError):
        await Authenticator([], OAuthSettings()).authenticate("Bearer anything")


def test_missing_scope_is_403() -> None:
    """A caller without `write:ai` may not do what needs it."""
    reader = Principal(key_id="jwt:svc", tier="standard", scopes=frozenset({READ}))
    reader.require(READ)
    with pytest.raises(PermissionDeniedError) as caught:
        reader.require(WRITE)
    assert caught.value.code == "insufficient_scope"


def test_none_algorithm_cannot_be_configured() -> None:
    """`none` in oauth.algorithms is refused: it would accept unsigned tokens."""
    with pytest.raises(ValueError, match="unsigned"):
        OAuthSettings(algorithms=["RS256", "none"])


async def test_certificate_identities_are_never_cut(certs: Certificates) -> None:
    """Two SPIFFE ids that share their first 75 characters are two callers, each whole."""
    tls = TLSSettings(
        cert_file=certs.directory / "server.pem",
        key_file=certs.directory / "server.key",
        client_ca_file=certs.ca_file,
    )
    auth = Authenticator([], OAuthSettings(), tls)
    base = "spiffe://cluster.local/ns/payments-production-eu-west/sa/settlement-"
    peers = [PeerIdentity(f"CN={n}", None, (f"{base}{n}",)) for n in ("reader", "writer")]
    one, two = [await auth.authenticate(None, peer) for peer in peers]
    assert one.key_id == f"cert:{base}reader"
    assert one.account != two.account
