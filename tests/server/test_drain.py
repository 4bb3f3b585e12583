"""SIGTERM drains `prsm serve`: queries in flight are answered, new ones are told to go
elsewhere, `/ready` says so at once, and the process exits 0 (real processes)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import API_KEY, ServerProcess, metric, prsm_serve, wait_for

AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUERY = {"prompt": "hi", "userId": "u1"}


def ask_in_background(server: ServerProcess, body: dict[str, object], n: int) -> list[object]:
    """Start `n` queries on their own threads; their responses (or errors) land in the list."""
    results: list[object] = []

    def ask() -> None:
        try:
            results.append(
                httpx.post(server.base_url + "/api/v1/query", json=body, headers=AUTH, timeout=120)
            )
        except httpx.HTTPError as exc:
            results.append(exc)

    for _ in range(n):
        threading.Thread(target=ask, daemon=True).start()
    return results


def engine_busy(server: ServerProcess, running: int, waiting: int) -> bool:
    return (
        metric(server.base_url, "prsm_engine_in_flight") == running
        and metric(server.base_url, "prsm_engine_waiting") == waiting
    )


def three_in_flight_then_sigterm(
    server: ServerProcess, body: dict[str, object], running: int = 1
) -> list[object]:
    """Three queries, `running` of them generating and the rest waiting, then SIGTERM; their
    responses land in the list returned."""
    in_flight = ask_in_background(server, body, 3)
    wait_for(lambda: engine_busy(server, running, 3 - running), 30)
    server.process.send_signal(signal.SIGTERM)
    return in_flight


def test_sigterm_answers_queries_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    """Three 1.5 s queries on one engine slot (one running, two waiting); SIGTERM: /ready 503
    at once, a query within the 1 s grace still answered, one after it 503 shutting_down with
    Retry-After, all queries in flight 200, exit code 0."""
    env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_DELAY_SECONDS": "1.5",
        "PRSM_SERVER__DRAIN_SECONDS": "1",
    }
    with prsm_serve(tmp_path, env=env) as server:
        in_flight = three_in_flight_then_sigterm(server, QUERY)
        ready = httpx.get(server.base_url + "/ready")
        within_grace = ask_in_background(server, QUERY, 1)
        time.sleep(1.3)
        refused = httpx.post(server.base_url + "/api/v1/query", json=QUERY, headers=AUTH)
        exit_code = server.process.wait(timeout=30)
    assert ready.status_code == 503
    assert ready.json()["checks"]["drain"]["ok"] is False
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["retry-after"] == "1"
    wait_for(lambda: len(in_flight) == 3 and len(within_grace) == 1, 5)
    statuses = [getattr(r, "status_code", r) for r in in_flight + within_grace]
    assert statuses == [200, 200, 200, 200]
    assert exit_code == 0


def test_waiting_queries_past_the_drain_bound_get_503(tmp_path: Path) -> None:
    """A drain bound shorter than the work left: the running query is answered, those still
    waiting for the engine get 503 shutting_down, never a reset connection; exit code 0."""
    env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_DELAY_SECONDS": "2",
        "PRSM_SERVER__DRAIN_SECONDS": "0",
        "PRSM_SERVER__DRAIN_TIMEOUT_SECONDS": "1",
    }
    with prsm_serve(tmp_path, env=env) as server:
        in_flight = three_in_flight_then_sigterm(server, QUERY)
        exit_code = server.process.wait(timeout=30)
    wait_for(lambda: len(in_flight) == 3, 5)
    responses = [r for r in in_flight if isinstance(r, httpx.Response)]
    assert sorted(r.status_code for r in responses) == [200, 503, 503]
    assert all(
        r.json()["error"]["code"] == "shutting_down" for r in responses if r.status_code == 503
    )
    assert exit_code == 0


@pytest.mark.e2e
def test_the_real_model_finishes_three_queries_on_sigterm(tmp_path: Path) -> None:
    """The embedded model with three queries in flight, decoded together: SIGTERM, all three
    answered 200, /ready 503 meanwhile, exit code 0."""
    with prsm_serve(tmp_path, env={"PRSM_SERVER__DRAIN_SECONDS": "0"}) as server:
        body = QUERY | {"prompt": "Tell me about the sea.", "maxTokens": 60}
        in_flight = three_in_flight_then_sigterm(server, body, running=3)
        ready = httpx.get(server.base_url + "/ready")
        exit_code = server.process.wait(timeout=60)
    wait_for(lambda: len(in_flight) == 3, 5)
    assert ready.status_code == 503
    assert [getattr(r, "status_code", r) for r in in_flight] == [200, 200, 200]
    assert exit_code == 0


def engine_admitted(server: ServerProcess, count: int) -> bool:
    """Running plus waiting queries, summed over every server process, equal `count`."""
    base = server.base_url
    return metric(base, "prsm_engine_in_flight") + metric(base, "prsm_engine_waiting") == count


def test_several_server_processes_each_drain_their_queries(tmp_path: Path) -> None:
    """`prsm serve --workers 2`: SIGTERM reaches both processes, every query taken by either
    is answered 200, and the parent exits 0."""
    env = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_DELAY_SECONDS": "1.5"}
    env["PRSM_SERVER__DRAIN_SECONDS"] = "0"
    with prsm_serve(tmp_path, "--workers", "2", env=env) as server:
        in_flight = ask_in_background(server, QUERY, 4)
        wait_for(lambda: engine_admitted(server, 4), 30)
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=30)
    wait_for(lambda: len(in_flight) == 4, 5)
    assert [getattr(r, "status_code", r) for r in in_flight] == [200] * 4
    assert exit_code == 0


def test_a_keep_alive_caller_gets_every_answer_then_a_close_never_a_reset(
    tmp_path: Path,
) -> None:
    """A caller sending a query every 20 ms on one kept-alive connection across SIGTERM: each
    request is answered (200, then 503 `shutting_down` with `Retry-After` and `Connection:
    close`); the connection ends only after an answer saying so, never with a request sent and
    no answer (uvicorn closes an idle connection when it stops)."""
    with prsm_serve(tmp_path, env={"PRSM_ENGINE__KIND": "fixed"}) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        body = b'{"prompt": "hi", "userId": "u1"}'
        request = (
            f"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        heads: list[str] = []
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            reader = connection.makefile("rb")
            while not heads or "connection: close" not in heads[-1]:
                if len(heads) == 3:
                    server.process.send_signal(signal.SIGTERM)
                connection.sendall(request)
                heads.append(read_answer_head(reader))
                time.sleep(0.02)
        assert heads[0].startswith("http/1.1 200")
        assert heads[-1].startswith("http/1.1 503")
        assert "retry-after: 1" in heads[-1]
        assert server.process.wait(10) == 0


def read_answer_head(reader: Any) -> str:
    """One answer's head, its body read past (by its Content-Length); fails on a close."""
    lines = []
    while (line := reader.readline()) not in (b"\r\n", b""):
        lines.append(line.decode().strip().lower())
    assert lines, "the connection closed with a request unanswered"
    length = next(int(h.split(":")[1]) for h in lines if h.startswith("content-length:"))
    reader.read(length)
    return "\n".join(lines)
