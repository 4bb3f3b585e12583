"""ClientTLS: the server's certificate is always verified, host name included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prsm import AsyncPRSMClient, PRSMClient
from prsm.client.tls import ClientTLS
from prsm.errors import TLSError, UsageError
from tests.support import API_KEY, Certificates, ServerProcess, prsm_serve

FIXED = {"PRSM_ENGINE__KIND": "fixed"}


@pytest.fixture(scope="module")
def https_api(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = FIXED | certs.server_env()
    with prsm_serve(tmp_path_factory.mktemp("https"), env=env, tls=certs.context()) as api:
        yield api


async def test_trusted_server_answers(certs: Certificates, https_api: ServerProcess) -> None:
    tls = ClientTLS(ca_file=certs.ca_file)
    with PRSMClient(https_api.base_url, api_key=API_KEY, tls=tls) as client:
        assert client.health().status == "healthy"
    async with AsyncPRSMClient(https_api.base_url, api_key=API_KEY, tls=tls) as aclient:
        assert (await aclient.health()).status == "healthy"


async def test_a_server_certificate_from_an_untrusted_ca_fails(
    https_api: ServerProcess, tmp_path: Path
) -> None:
    """Trusting another CA: TLSError from both clients, and no query reaches the server."""
    tls = ClientTLS(ca_file=Certificates(tmp_path).ca_file)
    with (
        PRSMClient(https_api.base_url, api_key=API_KEY, tls=tls) as client,
        pytest.raises(TLSError, match="certificate verify failed"),
    ):
        client.query("hi", user_id="u1")
    async with AsyncPRSMClient(https_api.base_url, api_key=API_KEY, tls=tls) as aclient:
        with pytest.raises(TLSError, match="certificate verify failed"):
            await aclient.query("hi", user_id="u1")
    assert https_api.log.count('"path": "/api/v1/query"') == 0


async def test_a_certificate_for_another_host_name_fails(tmp_path: Path) -> None:
    """The server's certificate, from the trusted CA, names only `localhost`; calling the
    same server as 127.0.0.1 fails the host name check (the specification's
    `checkServerIdentity` accepts it)."""
    certs = Certificates(tmp_path, server_names=("localhost",))
    tls = ClientTLS(ca_file=certs.ca_file)
    env = FIXED | certs.server_env()
    with prsm_serve(tmp_path, env=env, tls=certs.context(), url_host="localhost") as api:
        by_ip = api.base_url.replace("localhost", "127.0.0.1")
        with PRSMClient(api.base_url, api_key=API_KEY, tls=tls) as client:
            assert client.health().status == "healthy"  # the right name: fine
        with (
            PRSMClient(by_ip, api_key=API_KEY, tls=tls) as client,
            pytest.raises(TLSError, match=r"match|mismatch"),
        ):
            client.health()
        async with AsyncPRSMClient(by_ip, api_key=API_KEY, tls=tls) as aclient:
            with pytest.raises(TLSError, match=r"match|mismatch"):
                await aclient.health()


def test_plain_http_with_tls_settings_is_a_usage_error(certs: Certificates) -> None:
    with pytest.raises(UsageError, match="not an https:// URL"):
        PRSMClient("http://127.0.0.1:1", tls=ClientTLS(ca_file=certs.ca_file))


def test_tls_and_a_transport_are_exclusive(certs: Certificates) -> None:
    with pytest.raises(UsageError, match="not both"):
        PRSMClient(
            "https://127.0.0.1:1",
            tls=ClientTLS(ca_file=certs.ca_file),
            transport=httpx.HTTPTransport(),
        )


def test_missing_files_are_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot load TLS files"):
        ClientTLS(ca_file=tmp_path / "missing.pem")
    with pytest.raises(UsageError, match="key_file needs cert_file"):
        ClientTLS(key_file=tmp_path / "k.pem")


def test_from_env_reads_the_specification_variables(
    certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ClientTLS.from_env() is None
    cert, key = certs.client("billing")
    monkeypatch.setenv("CLIENT_CERT_PATH", str(cert))
    monkeypatch.setenv("CLIENT_KEY_PATH", str(key))
    monkeypatch.setenv("CA_CERT_PATH", str(certs.ca_file))
    tls = ClientTLS.from_env()
    assert tls is not None
    assert (tls.cert_file, tls.key_file, tls.ca_file) == (str(cert), str(key), str(certs.ca_file))
