"""`prsm serve` over mutual TLS: client certificates verified by the server, the caller's
identity taken from the certificate, certificates from another CA or none at all refused."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from prsm import AsyncPRSMClient, PRSMClient
from prsm.client.service import ServiceClient
from prsm.client.tls import ClientTLS
from prsm.errors import AuthenticationError, PermissionDeniedError, TransportError
from prsm.sd import StaticDiscovery
from tests.support import API_KEY, Certificates, ServerProcess, prsm_serve

FIXED = {"PRSM_ENGINE__KIND": "fixed"}


@pytest.fixture(scope="module")
def mtls_api(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = certs.server_env(client_ca=certs.ca_file, PRSM_TLS__ALLOWED_CLIENTS="billing,health")
    probe = certs.context("health")
    with prsm_serve(tmp_path_factory.mktemp("mtls"), env=FIXED | env, tls=probe) as api:
        yield api


def client_tls(certs: Certificates, name: str) -> ClientTLS:
    cert, key = certs.client(name)
    return ClientTLS(ca_file=certs.ca_file, cert_file=cert, key_file=key)


async def test_the_certificate_alone_identifies_the_caller(
    certs: Certificates, mtls_api: ServerProcess
) -> None:
    """No API key: the verified certificate admits `billing`, whose identity the query log
    shows — not the subject a header claims."""
    forged = {"X-Client-Cert-Subject": "CN=admin,O=Example Corp"}
    async with AsyncPRSMClient(
        mtls_api.base_url, api_key="", tls=client_tls(certs, "billing"), headers=forged
    ) as client:
        result = await client.query("hi", user_id="u1")
    assert result.answer == "This is a fixed answer."
    [entry] = mtls_api.wait_for_log(lambda e: e.get("correlationId") == result.correlation_id
                                    and "keyId" in e, 1)  # fmt: skip
    assert entry["keyId"] == "cert:billing"


def refused(api: ServerProcess, tls: ClientTLS, **headers: str) -> None:
    """The server drops the connection in the TLS handshake: no HTTP answer, nothing logged.
    (With TLS 1.3 the client's certificate is checked after the client finished its side of
    the handshake, so the client sees the connection closed rather than a TLS alert: a
    transport error whose message names the likely cause.)"""
    cid = uuid.uuid4().hex
    with (
        PRSMClient(api.base_url, api_key=API_KEY, retries=0, tls=tls, headers=headers) as c,
        pytest.raises(TransportError, match="requires client certificates"),
    ):
        c.query("hi", user_id="u1", correlation_id=cid)
    time.sleep(0.3)  # an access line would be written just after an answer
    assert cid not in api.log


def test_no_certificate_is_refused_in_the_handshake(
    certs: Certificates, mtls_api: ServerProcess
) -> None:
    """A client trusting the server but showing no certificate, even with a valid API key and
    a header naming an allowed subject."""
    refused(mtls_api, ClientTLS(ca_file=certs.ca_file), **{"X-Client-Cert-Subject": "CN=billing"})


def test_a_certificate_from_another_ca_is_refused(
    certs: Certificates, mtls_api: ServerProcess, tmp_path: Path
) -> None:
    rogue = Certificates(tmp_path)  # its own CA, same names
    cert, key = rogue.client("billing")
    refused(mtls_api, ClientTLS(ca_file=certs.ca_file, cert_file=cert, key_file=key))


async def test_identities_outside_the_allowed_list_are_forbidden(
    certs: Certificates, mtls_api: ServerProcess
) -> None:
    """`reports` has a certificate from the right CA but is not allowed: 403, even with a
    valid API key."""
    async with AsyncPRSMClient(
        mtls_api.base_url, api_key=API_KEY, tls=client_tls(certs, "reports")
    ) as client:
        with pytest.raises(PermissionDeniedError) as caught:
            await client.query("hi", user_id="u1")
    assert caught.value.code == "client_not_allowed"


async def test_service_client_over_mtls(certs: Certificates, mtls_api: ServerProcess) -> None:
    """ServiceClient passes the same TLS settings to every instance."""
    async with ServiceClient(
        StaticDiscovery([mtls_api.base_url]), tls=client_tls(certs, "billing")
    ) as prsm:
        assert (await prsm.query("hi", user_id="u1")).answer == "This is a fixed answer."
        assert (await prsm.health()).status == "healthy"


def test_optional_client_certificates(certs: Certificates, tmp_path: Path) -> None:
    """`client_certs: optional`: without a certificate the API key is needed, as without TLS."""
    env = FIXED | certs.server_env(client_ca=certs.ca_file, PRSM_TLS__CLIENT_CERTS="optional")
    plain = ClientTLS(ca_file=certs.ca_file)
    with prsm_serve(tmp_path, env=env, tls=certs.context()) as api:
        with PRSMClient(api.base_url, api_key=API_KEY, tls=plain) as client:
            assert client.query("hi", user_id="u1").answer == "This is a fixed answer."
        with (
            PRSMClient(api.base_url, api_key="", tls=plain) as client,
            pytest.raises(AuthenticationError),
        ):
            client.query("hi", user_id="u1")
        with PRSMClient(api.base_url, api_key="", tls=client_tls(certs, "any")) as client:
            assert client.query("hi", user_id="u1").answer == "This is a fixed answer."


def test_trustme_ca_is_distinct() -> None:
    """The wrong-CA case above is meaningful only if two CAs differ."""
    assert trustme.CA().cert_pem.bytes() != trustme.CA().cert_pem.bytes()
