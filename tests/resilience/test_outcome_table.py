"""One table of failures, run through every caller that can try again: the SDK, `ServiceClient`,
the gateway, the worker and callback delivery each make the decision the classifier gives."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trustme

from prsm.client import AsyncPRSMClient, ServiceClient
from prsm.config import Settings
from prsm.contracts import NOT_RUN_HEADER, SHARED_OUTAGE_HEADER
from prsm.errors import PRSMError
from prsm.gateway.app import Gateway
from prsm.gateway.config import GatewayConfig
from prsm.jobs.callbacks import CallbackSender, parse_networks
from prsm.jobs.worker import JobRunner, WorkerContext
from prsm.resilience.outcomes import Outcome, classify
from prsm.resilience.retry import RetryPolicy
from prsm.sd import StaticDiscovery
from tests.support import Reply, free_port, read_request, scripted_server, socket_server

AGAIN, FINAL = "again", "final"


@dataclass(frozen=True)
class Row:
    failure: str
    outcome: Outcome
    sdk: str
    service_client: str
    gateway: str
    worker: str
    callback: str


# The SDK guide's table ("What is retried, failed over or final"), one row per failure. The
# SDK and ServiceClient send queries (not idempotent) and wait out a 429; the gateway forwards
# a POST without an Idempotency-Key and never waits (a 429 is the caller's); jobs and
# callbacks are at least once (idempotent). A query is sent again only if it provably did
# not run: never sent, 408, or a 503 marked X-PRSM-Not-Run. An outage every instance shares
# (a budget's Redis down: marked X-PRSM-Shared-Outage, and not run) goes to no other instance.
TABLE = [
    Row("connection refused", Outcome.UNSENT, AGAIN, AGAIN, AGAIN, AGAIN, AGAIN),
    Row("503 marked not run", Outcome.NOT_RUN, AGAIN, AGAIN, AGAIN, AGAIN, AGAIN),
    Row("408", Outcome.NOT_RUN, AGAIN, AGAIN, FINAL, AGAIN, AGAIN),
    Row("503", Outcome.TARGET_FAILED, FINAL, FINAL, FINAL, AGAIN, AGAIN),
    Row("503 of a shared outage", Outcome.OUTAGE, FINAL, FINAL, FINAL, AGAIN, AGAIN),
    Row("429", Outcome.SLOW_DOWN, AGAIN, AGAIN, FINAL, AGAIN, AGAIN),
    Row("reset after the request", Outcome.UNCERTAIN, FINAL, FINAL, FINAL, AGAIN, AGAIN),
    Row("500", Outcome.UNCERTAIN, FINAL, FINAL, FINAL, AGAIN, AGAIN),
    Row("400", Outcome.REFUSED, FINAL, FINAL, FINAL, FINAL, FINAL),
    Row("untrusted certificate", Outcome.REFUSED, FINAL, FINAL, FINAL, FINAL, FINAL),
]
IDS = [row.failure for row in TABLE]


def _close_after_reading(connection: socket.socket) -> None:
    read_request(connection, bytearray())


@contextlib.contextmanager
def _untrusted_tls() -> Iterator[str]:
    """An HTTPS listener whose certificate no client here trusts."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    def handshake(connection: socket.socket) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):
            context.wrap_socket(connection, server_side=True).close()

    with socket_server(handshake) as url:
        yield url.replace("http://", "https://")


@contextlib.contextmanager
def failing(failure: str) -> Iterator[str]:
    """A real upstream that fails every request in the given way; its base URL."""
    if failure == "connection refused":
        yield f"http://127.0.0.1:{free_port()}"
    elif failure == "reset after the request":
        with socket_server(_close_after_reading) as url:
            yield url
    elif failure == "untrusted certificate":
        with _untrusted_tls() as url:
            yield url
    else:
        headers = {"retry-after": "0"} if failure == "429" else {}
        if failure == "503 marked not run":
            failure, headers = "503", {NOT_RUN_HEADER: "true"}
        elif failure == "503 of a shared outage":
            failure, headers = "503", {NOT_RUN_HEADER: "true", SHARED_OUTAGE_HEADER: "true"}
        body = b'{"error": {"code": "scripted", "message": "scripted"}}'
        with scripted_server(Reply(int(failure), body, headers)) as server:
            yield server.base_url


def _counting_policy() -> tuple[RetryPolicy, Callable[[], int]]:
    retries: list[BaseException] = []
    policy = RetryPolicy(retries=1, backoff_initial=0.001, on_retry=lambda e, _: retries.append(e))
    return policy, lambda: len(retries)


@pytest.mark.parametrize("row", TABLE, ids=IDS)
async def test_sdk(row: Row) -> None:
    """One URL, retried as the classifier allows a query; the error it ends with has the
    row's outcome."""
    policy, retried = _counting_policy()
    with failing(row.failure) as url:
        async with AsyncPRSMClient(url, api_key="k", timeout=5, retries=policy) as client:
            with pytest.raises(PRSMError) as raised:
                await client.query("hi", user_id="u1")
    assert classify(raised.value) is row.outcome
    assert (AGAIN if retried() else FINAL) == row.sdk


def _witness() -> contextlib.AbstractContextManager[Any]:
    answer = {
        "data": {
            "answer": "from the witness",
            "confidence": 1.0,
            "usage": {"tokens": 2, "promptTokens": 1, "completionTokens": 1},
            "model": "m",
        },
        "correlationId": "c",
    }
    return scripted_server(Reply(200, httpx.Response(200, json=answer).content))


@pytest.mark.parametrize("row", TABLE, ids=IDS)
async def test_service_client(row: Row) -> None:
    """Two instances, one failing, one answering; two calls, so each instance is picked first
    once: the call that met the failing one either went on to the other or ended there."""
    with failing(row.failure) as bad, _witness() as good:
        discovery = StaticDiscovery([bad, good.base_url])
        async with ServiceClient(discovery, api_key="k", timeout=5, attempts=2) as prsm:
            outcomes = []
            for _ in range(2):
                try:
                    await prsm.query("hi", user_id="u1")
                    outcomes.append("ok")
                except PRSMError as exc:
                    outcomes.append(classify(exc))
    assert (AGAIN if outcomes == ["ok", "ok"] else FINAL) == row.service_client
    assert outcomes.count("ok") >= 1


@pytest.mark.parametrize("row", TABLE, ids=IDS)
async def test_gateway(row: Row) -> None:
    """The gateway in process over real sockets, one route on a pool of the failing upstream
    and a good one; two POSTs: the one that met the failing upstream went on or came back."""
    with failing(row.failure) as bad, _witness() as good:
        pool = {"discovery": {"kind": "static", "urls": [bad, good.base_url]}}
        config = GatewayConfig.model_validate(
            {"pools": {"p": pool}, "routes": [{"prefix": "/", "pool": "p"}]}
        )
        gateway = Gateway(config)
        await gateway.start()
        try:
            transport = httpx.ASGITransport(app=gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                statuses = [(await http.post("/q", content=b"{}")).status_code for _ in range(2)]
        finally:
            await gateway.aclose()
    assert (AGAIN if statuses == [200, 200] else FINAL) == row.gateway
    assert 200 in statuses


@pytest.mark.parametrize("row", TABLE, ids=IDS)
async def test_worker(row: Row) -> None:
    """A query job's attempt meets the failure (through the worker's real client): the job is
    left to SAQ to run again, or marked final (its retries spent)."""
    from saq import Job

    with failing(row.failure) as url:
        async with AsyncPRSMClient(url, api_key="k", timeout=5, retries=0) as client:
            context = WorkerContext(Settings(), None, client, CallbackSender(b"s", []))  # type: ignore[arg-type]
            job = Job(function="priority-query", attempts=1, retries=3, timeout=30)
            data = {"prompt": "hi", "userId": "u1"}
            with pytest.raises(PRSMError):
                await JobRunner(context).run_query(
                    {"job": job},  # type: ignore[arg-type]
                    job_type="priority-query",
                    data=data,
                    callback_url=None,
                    correlation_id="c",
                )
    assert (FINAL if job.retries == job.attempts else AGAIN) == row.worker


@pytest.mark.parametrize("row", TABLE, ids=IDS)
async def test_callback(row: Row) -> None:
    """A callback delivery meets the failure: tried again (it is at least once) or given up."""
    policy, retried = _counting_policy()
    with failing(row.failure) as url:
        networks = parse_networks(["127.0.0.0/8"])
        async with CallbackSender(b"secret", networks, retry=policy) as sender:
            delivered = await sender.send(url + "/hook", {"x": 1}, job_id="j", correlation_id=None)
    assert not delivered
    assert (AGAIN if retried() else FINAL) == row.callback
