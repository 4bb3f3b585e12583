"""A caller that goes away stops its generation: directly and through the gateway, with the
fixed engine and with the real model (real processes, raw sockets); and the mechanism under
PRSM's own protocol and under any other server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from prsm.edge.disconnect import EXTENSION, ClientGone, DisconnectHook, until_disconnected
from tests.support import API_KEY, ServerProcess, metric, prsm_gateway, prsm_serve, wait_for

SLOW = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_DELAY_SECONDS": "30"}


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`prsm serve` whose fixed engine takes 30 s per answer."""
    with prsm_serve(tmp_path_factory.mktemp("slow"), env=SLOW) as running:
        yield running


def post_then_leave(base_url: str, path: str, body: dict[str, object], api: str) -> float:
    """POST `body`, wait until the API's engine is busy with it, close the connection; the
    seconds until the engine is free again."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head + payload)
    wait_for(lambda: metric(api, "prsm_engine_in_flight") == 1, 30)
    sock.close()
    return wait_for(lambda: metric(api, "prsm_engine_in_flight") == 0, 3 * FREED_WITHIN)


QUERY = {"prompt": "hi", "userId": "u1"}
FREED_WITHIN = 5.0
"""Seconds until the engine is free after the caller left: far below what the work would take
(30 s for the slow fixed engine, 2000 tokens for the model), with room for a busy machine's
polling of /metrics."""


def test_a_caller_that_leaves_frees_the_engine(slow_server: ServerProcess) -> None:
    """A 30 s query whose caller closes: the engine is free within seconds, the query counted
    as cancelled (client_gone) and as status 499."""
    before = metric(slow_server.base_url, "prsm_queries_cancelled_total", 'reason="client_gone"')
    freed = post_then_leave(slow_server.base_url, "/api/v1/query", QUERY, slow_server.base_url)
    assert freed < FREED_WITHIN
    after = metric(slow_server.base_url, "prsm_queries_cancelled_total", 'reason="client_gone"')
    assert after - before == 1
    assert metric(slow_server.base_url, "prsm_queries_total", 'status="499"') >= 1


def test_through_the_gateway_the_upstream_request_is_closed(
    slow_server: ServerProcess, tmp_path: Path
) -> None:
    """The caller leaves the gateway: the gateway closes its upstream request, and the API
    frees its engine within seconds."""
    config = {"pools": {"p": {"discovery": {"kind": "static", "urls": [slow_server.base_url]}}},
              "routes": [{"prefix": "/api/v1", "pool": "p"}]}  # fmt: skip
    with prsm_gateway(tmp_path, config) as gateway:
        freed = post_then_leave(gateway.base_url, "/api/v1/query", QUERY, slow_server.base_url)
        gone = metric(gateway.base_url, "prsm_gateway_clients_gone_total")
    assert freed < FREED_WITHIN
    assert gone == 1


@pytest.mark.e2e
def test_the_real_model_stops_at_the_next_token(llama_server: ServerProcess) -> None:
    """A long generation with the embedded model: its caller leaves after it started, and the
    engine is free within seconds (a 2000-token answer takes far longer)."""
    body = {"prompt": "Write a very long story about a dragon and a knight.", "userId": "u1",
            "maxTokens": 2000}  # fmt: skip
    freed = post_then_leave(llama_server.base_url, "/api/v1/query", body, llama_server.base_url)
    assert freed < FREED_WITHIN
    ok = httpx.post(
        llama_server.base_url + "/api/v1/query",
        json=QUERY | {"maxTokens": 5},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert ok.status_code == 200  # the slot was given back


async def _leaving(scope: dict[str, object], leave: Callable[[], None]) -> list[str]:
    """Run a 30 s piece of work under `until_disconnected`; `leave()` once it started."""
    events: list[str] = []
    started = asyncio.Event()
    gone = asyncio.Event()

    async def receive() -> dict[str, str]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("work cancelled")
            raise
        return "answer"

    task = asyncio.create_task(until_disconnected(work(), receive, scope))
    await started.wait()
    leave() if scope else gone.set()
    with pytest.raises(ClientGone):
        await task
    return events


async def test_a_watcher_sees_the_disconnect_under_any_server() -> None:
    """Without PRSM's protocol (another server, an in-process client) a watcher task waits for
    http.disconnect and cancels the work."""
    assert await _leaving({}, lambda: None) == ["work cancelled"]


async def test_the_protocol_hook_cancels_the_work() -> None:
    """Under PRSM's protocol the lost connection fires the scope's hook: the work stops."""
    hook = DisconnectHook()
    assert await _leaving({"extensions": {EXTENSION: hook}}, hook.fire) == ["work cancelled"]


async def test_work_that_finishes_first_is_not_disturbed() -> None:
    """The answer comes back; a disconnect after it changes nothing."""
    hook = DisconnectHook()

    async def receive() -> dict[str, str]:
        return {"type": "http.disconnect"}

    async def work() -> str:
        return "answer"

    scope = {"extensions": {EXTENSION: hook}}
    assert await until_disconnected(work(), receive, scope) == "answer"
    hook.fire()  # the connection closes after the response: nothing is cancelled
    await asyncio.sleep(0)
