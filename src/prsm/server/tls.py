"""Mutual TLS for `prsm serve`: who the client is, from the certificate it proved it holds.

uvicorn verifies client certificates (`ssl_cert_reqs`, `ssl_ca_certs`) but does not tell the
application which one was presented. `PeerCertProtocol` adds the ASGI TLS extension
(`scope["extensions"]["tls"]`, with `client_cert_chain` and `client_cert_name`) to every
request on a TLS connection; `peer_identity` reads it. Identity never comes from a header a
client could write (the specification's `X-Client-Cert-Subject` is ignored).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from prsm.config import TLSSettings
from prsm.edge.protocol import GuardedHttpProtocol


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A verified client certificate's names."""

    subject: str
    """The RFC 4514 subject, e.g. `CN=billing,O=Example Corp`."""
    common_name: str | None
    alt_names: tuple[str, ...]
    """DNS names and URIs (e.g. SPIFFE IDs) from subjectAltName."""

    @property
    def id(self) -> str:
        """The name logs and metrics show: a URI name, else the CN, else the first name."""
        uris = [n for n in self.alt_names if "://" in n]
        if uris:
            return uris[0]
        return self.common_name or (self.alt_names[0] if self.alt_names else self.subject)

    def is_one_of(self, allowed: list[str]) -> bool:
        """Whether the identity (URI name or CN) is one of `allowed`."""
        names = {self.common_name, *self.alt_names} - {None}
        return any(name in allowed for name in names)


class PeerCertProtocol(GuardedHttpProtocol):
    """The server's protocol, adding the ASGI TLS extension to each request's scope."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Keep the peer's verified certificate for the connection's requests."""
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        self._tls = {
            "server_cert": None,
            "client_cert_chain": chain,
            "client_cert_name": _identity(chain[0]).subject if chain else None,
            "client_cert_error": None,
            "tls_version": None,
            "cipher_suite": None,
        }

    def on_message_begin(self) -> None:
        """Put the peer's identity in each request's scope."""
        super().on_message_begin()
        if self._tls is not None:
            self.scope.setdefault("extensions", {})["tls"] = self._tls  # type: ignore[assignment]


def peer_identity(scope: dict[str, Any] | Any) -> PeerIdentity | None:
    """The verified client certificate's identity, or None (no TLS, or no certificate)."""
    tls = scope.get("extensions", {}).get("tls")
    chain = tls.get("client_cert_chain") if tls else None
    return _identity(chain[0]) if chain else None


@functools.lru_cache(maxsize=1024)
def _identity(pem: str) -> PeerIdentity:
    cert = x509.load_pem_x509_certificate(pem.encode())
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        alt = [*dns, *san.get_values_for_type(x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        alt = []
    return PeerIdentity(
        subject=cert.subject.rfc4514_string(),
        common_name=str(common[0].value) if common else None,
        alt_names=tuple(alt),
    )


def uvicorn_options(tls: TLSSettings) -> dict[str, Any]:
    """The `uvicorn.run` options for PRSM's HTTP protocol (`http.*` bounds), serving HTTPS and
    verifying client certificates (mTLS) as `tls` says."""
    if not tls.enabled:
        return {"http": GuardedHttpProtocol}
    options: dict[str, Any] = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}
    if tls.mutual:
        options |= {
            "ssl_ca_certs": str(tls.client_ca_file),
            "ssl_cert_reqs": ssl.CERT_REQUIRED
            if tls.client_certs == "required"
            else ssl.CERT_OPTIONAL,
        }
    options["http"] = PeerCertProtocol if tls.mutual else GuardedHttpProtocol
    return options
