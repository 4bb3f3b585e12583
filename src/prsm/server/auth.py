"""Who may call: API keys (`Authorization: Bearer <key>`) and OAuth2 JWT bearer tokens.

API keys are compared by SHA-256 digest in constant time, against every configured key.
JWTs (when `oauth` is configured) must carry a valid signature — from the issuer's JWKS or a
configured public key, with an algorithm from the configured list, never `none` — and the
right `iss` and `aud`, must not be expired, and must name their caller (`oauth.identity_claim`,
`sub` by default: a token without it is refused, never given a shared identity). Their `scope`
(or `scp`) claim grants `read:ai` (queries, job status) and `write:ai` (submitting jobs,
storing responses); an API key grants both. A `tier` claim names a tier only if the settings
know it (else the default tier: claims never add metric series). Identities are never cut:
where a key must be short, it holds a digest of the whole (`prsm.keys.owner_tag`).

With mutual TLS, a client certificate the configured CA signed identifies the caller: alone it
admits the caller (both scopes, tier `tls.client_tier`), and with `tls.allowed_clients` set only
the listed identities are admitted at all, whatever else they send.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import jwt

from prsm import keys
from prsm.config import DEFAULT_TIER, ApiKey, OAuthSettings, TLSSettings
from prsm.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from prsm.server.tls import PeerIdentity

READ = "read:ai"
WRITE = "write:ai"
ALL_SCOPES = frozenset({READ, WRITE})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as far as authorization, metrics and logs need to know."""

    key_id: str
    """A short, non-secret fingerprint of the key, `jwt:<subject>` or `cert:<identity>`."""
    tier: str
    scopes: frozenset[str] = field(default=ALL_SCOPES)
    owner: str = ""
    """Whose jobs and batches these are: the whole key's digest, the token's issuer and
    subject, or the certificate's identity; `key_id` when empty."""
    acting_for: keys.Account | None = None
    """The account of the job this caller (a worker) runs, when it showed the job's token."""

    @property
    def identity(self) -> str:
        """The owner of what this caller creates: only the same identity can read it back."""
        return self.owner or self.key_id

    @property
    def account(self) -> keys.Account:
        """Whose budget and cached answers this caller's queries use: the job's submitter for
        a worker acting for a job, else the caller's own."""
        return self.acting_for or keys.Account(self.key_id, keys.owner_tag(self.identity))

    def require(self, scope: str) -> None:
        """Raise 403 `insufficient_scope` unless this caller holds `scope`."""
        if scope not in self.scopes:
            raise PermissionDeniedError(
                f"the token does not grant `{scope}`", code="insufficient_scope"
            )


def key_id(key: str) -> str:
    """The short, non-secret id of an API key: how logs (`keyId`) and budgets name it."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class ApiKeyAuth:
    """API keys, looked up by SHA-256 digest and compared in constant time against every key."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = [
            (hashlib.sha256(k.key.get_secret_value().encode()).digest(), k.tier) for k in keys
        ]

    def lookup(self, token: str) -> Principal | None:
        # Every key is compared whatever the earlier results: the time taken says nothing
        # about which key, or how much of one, matched.
        """The principal a key belongs to, or None."""
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for known, tier in self._keys:
            if hmac.compare_digest(digest, known) and found is None:
                found = tier
        if found is None:
            return None
        return Principal(key_id=key_id(token), tier=found, owner=f"key:{digest.hex()}")


class JwtAuth:
    """OAuth2 JWTs: signature from the issuer's keys, `iss`, `aud` and `exp` checked, scopes
    read."""

    def __init__(self, settings: OAuthSettings, tiers: frozenset[str] = frozenset()) -> None:
        self._settings = settings
        self._tiers = tiers | {DEFAULT_TIER, *settings.tiers}
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None

    async def verify(self, token: str) -> Principal:
        """The principal a valid token stands for; 401 (or 503 when keys cannot be fetched)
        otherwise."""
        settings = self._settings
        try:
            if self._jwks is not None:
                # The key set is fetched over blocking HTTP, then cached: off the event loop.
                signing = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                key: Any = signing.key
            else:
                key = settings.public_key
            claims = jwt.decode(
                token,
                key,
                algorithms=settings.algorithms,
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the token has expired", code="token_expired") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(
                f"the token is not for this audience ({settings.audience})",
                code="invalid_audience",
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(
                "the token's issuer is not trusted here", code="invalid_issuer"
            ) from None
        except jwt.PyJWKClientConnectionError:
            raise ServiceUnavailableError(
                "cannot fetch the issuer's signing keys",
                code="auth_unavailable",
                retry_after=5,
                not_run=True,
                shared=True,
            ) from None
        except jwt.PyJWTError as exc:  # any other token problem, a key unfit for it included
            raise AuthenticationError(f"invalid token: {exc}", code="invalid_token") from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        claim = self._settings.identity_claim
        subject = claims.get(claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(
                f"invalid token: it has no `{claim}` claim naming its caller", code="invalid_token"
            )
        scope = claims.get("scope") or claims.get("scp") or ""
        scopes = frozenset(scope.split() if isinstance(scope, str) else map(str, scope))
        tier = claims.get("tier")
        return Principal(
            key_id=f"jwt:{subject}",
            tier=tier if isinstance(tier, str) and tier in self._tiers else DEFAULT_TIER,
            scopes=scopes,
            owner=f"jwt:{claims.get('iss')}:{subject}",
        )


class Authenticator:
    """Checks the client certificate (mTLS) and the `Authorization` header: a JWT when OAuth2 is
    configured and the token is one, else an API key."""

    def __init__(
        self, keys: list[ApiKey], oauth: OAuthSettings, tls: TLSSettings | None = None
    ) -> None:
        self._keys = ApiKeyAuth(keys)
        self._tls = tls if tls is not None and tls.mutual else None
        tiers = {key.tier for key in keys} | ({self._tls.client_tier} if self._tls else set())
        self._jwt = JwtAuth(oauth, frozenset(tiers)) if oauth.enabled else None

    async def authenticate(
        self, authorization: str | None, peer: PeerIdentity | None = None
    ) -> Principal:
        """Who the caller is: a client certificate's identity, an API key or a JWT; 401/403
        otherwise."""
        if self._tls is not None and peer is not None:
            allowed = self._tls.allowed_clients
            if allowed and not peer.is_one_of(allowed):
                raise PermissionDeniedError(
                    f"client certificate {peer.id!r} is not allowed here",
                    code="client_not_allowed",
                )
            if not authorization:
                return Principal(key_id=f"cert:{peer.id}", tier=self._tls.client_tier)
        if not authorization:
            raise AuthenticationError(
                "missing credentials: send `Authorization: Bearer <api key or token>`",
                code="missing_credentials",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError(
                "malformed Authorization header: expected `Bearer <api key or token>`",
                code="invalid_credentials",
            )
        if self._jwt is not None and token.count(".") == 2:
            return await self._jwt.verify(token)
        principal = self._keys.lookup(token)
        if principal is None:
            raise AuthenticationError("invalid API key", code="invalid_credentials")
        return principal
