"""The gateway as `prsm up` runs it (`default_config`): one rule for sending a request twice —
only what provably did not run goes again, so a job is created once and a query charged once."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from prsm.gateway.app import Gateway
from prsm.gateway.run import default_config
from tests.support import API_KEY, metric, prsm_serve, read_request, socket_server

AUTH = {"authorization": f"Bearer {API_KEY}"}


async def through_default_gateway(api_url: str, path: str, body: dict[str, object]) -> int:
    """POST `body` to `path` through the default config in front of `api_url`; the status."""
    gateway = Gateway(default_config(api_url))
    await gateway.start()
    try:
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=60) as gw:
            return (await gw.post(path, json=body, headers=AUTH)).status_code
    finally:
        await gateway.aclose()


async def test_a_job_submission_the_upstream_read_is_not_sent_again() -> None:
    """An upstream that reads a job submission and closes the connection: it may have stored
    the job, so the gateway answers 502 instead of submitting it again (one job, not three)."""
    received: list[bytes] = []

    def read_and_close(connection: socket.socket) -> None:
        request = read_request(connection, bytearray())
        if request is not None:
            received.append(request)

    with socket_server(read_and_close) as url:
        job = {"type": "priority-query", "data": {"prompt": "hi", "userId": "u1"}}
        status = await through_default_gateway(url, "/api/v1/jobs", job)
    assert status == 502
    assert len(received) == 1


async def test_a_query_that_timed_out_in_the_engine_is_charged_once(tmp_path: Path) -> None:
    """A query whose engine ran past its time limit (504 `engine_timeout`: its tokens were
    spent) comes back to the caller; the API answered it once, not once a retry."""
    env = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_DELAY_SECONDS": "3",
           "PRSM_ENGINE__TIMEOUT_SECONDS": "0.5"}  # fmt: skip
    with prsm_serve(tmp_path, env=env) as api:
        status = await through_default_gateway(
            api.base_url, "/api/ai/query", {"prompt": "hi", "userId": "u1"}
        )
        answered = metric(api.base_url, "prsm_queries_total", 'status="504"')
    assert status == 504
    assert answered == 1
