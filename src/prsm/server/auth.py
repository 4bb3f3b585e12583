"""API-key authentication: `Authorization: Bearer <key>`, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from prsm.config import ApiKey
from prsm.errors import AuthenticationError


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as far as metrics and logs need to know."""

    key_id: str
    """A short, non-secret fingerprint of the key (first 8 hex digits of its SHA-256)."""
    tier: str


class ApiKeyAuth:
    """Checks bearer keys against the configured ones.

    Every configured key is compared, by SHA-256 digest and `hmac.compare_digest`, whatever
    the earlier results: the time taken says nothing about which key, or how much of one,
    matched.
    """

    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = [
            (hashlib.sha256(k.key.get_secret_value().encode()).digest(), k.tier) for k in keys
        ]

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthenticationError(
                "missing credentials: send `Authorization: Bearer <api key>`",
                code="missing_credentials",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError(
                "malformed Authorization header: expected `Bearer <api key>`",
                code="invalid_credentials",
            )
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for known, tier in self._keys:
            if hmac.compare_digest(digest, known) and found is None:
                found = tier
        if found is None:
            raise AuthenticationError("invalid API key", code="invalid_credentials")
        return Principal(key_id=digest.hex()[:8], tier=found)
