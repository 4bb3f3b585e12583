from __future__ import annotations

import pytest

from prsm.config import ApiKey
from prsm.errors import AuthenticationError
from prsm.server.auth import ApiKeyAuth

AUTH = ApiKeyAuth([ApiKey.parse("alpha"), ApiKey.parse("beta:premium")])


def test_known_key_gives_its_tier_and_a_fingerprint() -> None:
    """A configured key authenticates with its tier; the id is a hash prefix, not the key."""
    principal = AUTH.authenticate("Bearer beta")
    assert principal.tier == "premium"
    assert len(principal.key_id) == 8
    assert "beta" not in principal.key_id


def test_scheme_is_case_insensitive() -> None:
    """`bearer` works as well as `Bearer`."""
    assert AUTH.authenticate("bearer alpha").tier == "standard"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_credentials"),
        ("", "missing_credentials"),
        ("Basic YWxwaGE=", "invalid_credentials"),
        ("Bearer", "invalid_credentials"),
        ("Bearer alphax", "invalid_credentials"),
        ("Bearer alph", "invalid_credentials"),
    ],
)
def test_bad_credentials_are_401(header: str | None, code: str) -> None:
    """Missing, malformed, wrong and prefix-of-a-key credentials are all refused."""
    with pytest.raises(AuthenticationError) as caught:
        AUTH.authenticate(header)
    assert caught.value.code == code
    assert caught.value.status_code == 401


def test_no_keys_configured_refuses_everything() -> None:
    """An empty key list admits no one (prsm serve makes a dev key instead)."""
    with pytest.raises(AuthenticationError):
        ApiKeyAuth([]).authenticate("Bearer anything")
