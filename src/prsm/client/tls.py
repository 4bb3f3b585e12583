"""Client certificates and trust for calling PRSM over (mutual) TLS.

Certificate verification and hostname checking are always on and cannot be turned off: the
specification's `checkServerIdentity` that returns "valid" for any certificate would let
anyone holding *a* certificate from the CA impersonate the API. To reach an instance by IP
address, issue its certificate with that IP in subjectAltName.

>>> tls = ClientTLS(ca_file="ca.pem", cert_file="billing.pem", key_file="billing.key")
>>> PRSMClient("https://prsm.internal:8443", tls=tls)                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from prsm.errors import UsageError

CERT_ENV, KEY_ENV, CA_ENV = "CLIENT_CERT_PATH", "CLIENT_KEY_PATH", "CA_CERT_PATH"


@dataclass(frozen=True)
class ClientTLS:
    """`ca_file`: the CAs trusted to sign the server's certificate (None: the system's);
    `cert_file` and `key_file`: this client's certificate and key, for mTLS."""

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    _context: ssl.SSLContext = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise UsageError("key_file needs cert_file")
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None:
                context.load_cert_chain(
                    str(self.cert_file), str(self.key_file) if self.key_file else None
                )
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load TLS files: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED  # create_default_context's defaults, made
        context.check_hostname = True  # explicit: no option here turns them off
        object.__setattr__(self, "_context", context)

    @property
    def context(self) -> ssl.SSLContext:
        """The `ssl.SSLContext` built from the files: server verification and host name checks
        on."""
        return self._context

    @classmethod
    def from_env(cls) -> ClientTLS | None:
        """From the specification's `CLIENT_CERT_PATH`, `CLIENT_KEY_PATH` and `CA_CERT_PATH`;
        None when none of them is set."""
        cert, key, ca = (os.environ.get(name) or None for name in (CERT_ENV, KEY_ENV, CA_ENV))
        if cert is None and key is None and ca is None:
            return None
        return cls(ca_file=ca, cert_file=cert, key_file=key)


def tls_failure(exc: BaseException) -> bool:
    """Whether an HTTP library's error was caused by TLS: a certificate we do not trust, or
    one the server refused (its alert arrives as an `ssl.SSLError` on the first read)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short cause chain; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


DROPPED_HINT = (
    " (over TLS this is also how a server that requires client certificates refuses a "
    "connection without an acceptable one)"
)


def dropped_hint(url: str) -> str:
    """What to add to a "connection dropped" error on an https:// URL."""
    return DROPPED_HINT if url.startswith("https://") else ""


def check_scheme(base_url: str, tls: ClientTLS | None) -> None:
    """TLS settings for a plain-HTTP URL would be silently unused: say so instead."""
    if tls is not None and not base_url.startswith("https://"):
        raise UsageError(f"tls is set but {base_url!r} is not an https:// URL")
