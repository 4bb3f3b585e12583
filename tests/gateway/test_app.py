"""The gateway as a real process in front of real `prsm serve` instances (and, for statuses
and streams PRSM does not produce on demand, scripted HTTP servers)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support import (
    API_KEY,
    Reply,
    ServerProcess,
    collector_app,
    fixed_instances,
    free_port,
    prsm_gateway,
    read_request,
    scripted_server,
    socket_server,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUERY = {"prompt": "hi", "userId": "u1"}


def static(*urls: str, **pool: Any) -> dict[str, Any]:
    return {"discovery": {"kind": "static", "urls": list(urls)}, **pool}


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """Instances answering `a`, `b` and `c`."""
    with fixed_instances(tmp_path_factory.mktemp("trio"), "abc") as servers:
        yield servers


def answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["answer"])


def test_routes_by_longest_prefix_and_rewrites(
    trio: dict[str, ServerProcess], tmp_path: Path
) -> None:
    """The specification's router: /api/ai/heavy → heavy pool, /api/ai/fast → fast pool, the
    rest of /api/ai → default; each rewritten to /api/v1. Unknown paths: 404 JSON."""
    config = {
        "pools": {
            "heavy": static(trio["a"].base_url),
            "fast": static(trio["b"].base_url),
            "default": static(trio["c"].base_url),
        },
        "routes": [
            {"prefix": "/api/ai", "rewrite": "/api/v1", "pool": "default"},
            {"prefix": "/api/ai/heavy", "rewrite": "/api/v1", "pool": "heavy"},
            {"prefix": "/api/ai/fast", "rewrite": "/api/v1", "pool": "fast"},
        ],
    }
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        assert answer(http.post("/api/ai/heavy/query", json=QUERY, headers=AUTH)) == "a"
        assert answer(http.post("/api/ai/fast/query", json=QUERY, headers=AUTH)) == "b"
        assert answer(http.post("/api/ai/query", json=QUERY, headers=AUTH)) == "c"
        assert http.post("/api/aiq/query", json=QUERY).status_code == 404
        missing = http.get("/elsewhere")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "no_route"


def test_headers_going_up_and_coming_back(tmp_path: Path) -> None:
    """Upstream sees the caller's correlation id, `X-Source-Service`, `X-Forwarded-For/Proto`,
    no hop-by-hop headers; the caller gets the upstream's headers and the correlation id."""
    reply = Reply(200, b'{"ok": true}', headers={"X-Upstream": "yes", "Connection": "close"})
    with scripted_server(reply) as upstream:
        pools = {"p": static(upstream.base_url)}
        config = {"pools": pools, "routes": [{"prefix": "/", "pool": "p"}]}
        with prsm_gateway(tmp_path, config) as gw:
            response = httpx.get(
                gw.base_url + "/x?y=1",
                headers={
                    "X-Correlation-ID": "cid-123",
                    "Keep-Alive": "timeout=5",
                    "Proxy-Authorization": "Basic secret",
                },
            )
            generated = httpx.get(gw.base_url + "/z").headers["x-correlation-id"]
            httpx.get(gw.base_url + "/a%20b/c%C3%A9d?q=%C3%A9")
    assert response.status_code == 200
    assert response.headers["x-upstream"] == "yes"
    assert response.headers["x-correlation-id"] == "cid-123"
    path, seen = upstream.requests[0]
    seen = {k.lower(): v for k, v in seen.items()}
    assert path == "/x?y=1"
    assert seen["x-correlation-id"] == "cid-123"
    assert seen["x-source-service"] == "api-gateway"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert "keep-alive" not in seen
    assert "proxy-authorization" not in seen
    assert len(generated) == 32
    assert upstream.requests[2][0] == "/a%20b/c%C3%A9d?q=%C3%A9"  # percent-encoding kept
    assert {k.lower(): v for k, v in upstream.requests[1][1].items()}[
        "x-correlation-id"
    ] == generated


def test_a_90_10_split_over_2000_requests(trio: dict[str, ServerProcess], tmp_path: Path) -> None:
    """Weighted split across pools: the canary's share within 3 points of 10 %; a sticky
    header or cookie keeps one caller on one side."""
    config = {
        "seed": 7,
        "pools": {"stable": static(trio["a"].base_url), "canary": static(trio["b"].base_url)},
        "routes": [
            {"prefix": "/api/v1", "split": {"stable": 90, "canary": 10}},
            {"prefix": "/sticky", "rewrite": "/api/v1", "split": {"stable": 50, "canary": 50},
             "sticky": {"header": "X-User"}},
            {"prefix": "/cookie", "rewrite": "/api/v1", "split": {"stable": 50, "canary": 50},
             "sticky": {"cookie": "session"}},
        ],
    }  # fmt: skip

    async def run(gw_url: str) -> tuple[Counter[str], dict[str, set[str]], set[str]]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=gw_url, limits=limits, headers=AUTH) as http:
            sem = asyncio.Semaphore(16)

            async def one(path: str, user: str = "") -> str:
                async with sem:
                    headers = {"X-User": user} if user else {}
                    return answer(await http.post(path, json=QUERY, headers=headers))

            split = await asyncio.gather(*(one("/api/v1/query") for _ in range(2000)))
            users = [f"user-{i}" for i in range(20) for _ in range(5)]
            sticky = await asyncio.gather(*(one("/sticky/query", u) for u in users))
            jar = {"Cookie": "theme=dark; session=abc123"}
            by_cookie = {answer(await http.post("/cookie/query", json=QUERY, headers=jar))
                         for _ in range(10)}  # fmt: skip
        sides: dict[str, set[str]] = {}
        for user, side in zip(users, sticky, strict=True):
            sides.setdefault(user, set()).add(side)
        return Counter(split), sides, by_cookie

    with prsm_gateway(tmp_path, config) as gw:
        counts, sides, by_cookie = asyncio.run(run(gw.base_url))
    assert sum(counts.values()) == 2000
    assert abs(counts["b"] / 2000 * 100 - 10) <= 3, counts
    assert all(len(s) == 1 for s in sides.values())
    assert {next(iter(s)) for s in sides.values()} == {"a", "b"}
    assert len(by_cookie) == 1


def test_retries_move_on_and_respect_the_per_try_timeout(tmp_path: Path) -> None:
    """One instance answers in 3 s, the other at once; per-try timeout 0.5 s: every request
    is answered by the fast one, none takes the slow one's 3 s."""
    with (
        fixed_instances(tmp_path, "s", PRSM_ENGINE__FIXED_DELAY_SECONDS="3") as slow,
        fixed_instances(tmp_path, "f") as fast,
    ):
        config = {
            "pools": {"p": static(slow["s"].base_url, fast["f"].base_url)},
            "routes": [{"prefix": "/api/v1", "pool": "p",
                        "retries": {"attempts": 2, "per_try_timeout": 0.5,
                                    "non_idempotent": True}}],
        }  # fmt: skip
        with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
            timings = []
            for _ in range(4):
                started = time.monotonic()
                assert answer(http.post("/api/v1/query", json=QUERY, headers=AUTH)) == "f"
                timings.append(time.monotonic() - started)
    assert max(timings) < 2.5


def test_a_503_goes_on_to_the_next_instance_only_if_the_request_did_not_run(
    tmp_path: Path,
) -> None:
    """A 503 marked `X-PRSM-Not-Run` (refused before anything acted) fails over for a POST as
    for a GET; an unmarked 503 fails over a GET but comes back for a POST (it may have run: a
    query would be charged twice); a route whose `retry_on` leaves 503 out passes even the
    marked one to the caller."""
    not_run = {"X-PRSM-Not-Run": "true"}
    with (
        scripted_server(Reply(503, b'{"error": "draining"}', not_run)) as draining,
        scripted_server(Reply(503, b'{"error": "busy"}')) as busy,
        scripted_server(Reply(200, b'{"ok": true}')) as ok,
    ):
        narrow = {"attempts": 3, "retry_on": ["connect-failure", "reset"]}
        config = {
            "pools": {"marked": static(draining.base_url, ok.base_url),
                      "unmarked": static(busy.base_url, ok.base_url)},
            "routes": [
                {"prefix": "/marked", "pool": "marked"},
                {"prefix": "/unmarked", "pool": "unmarked"},
                {"prefix": "/narrow", "pool": "marked", "retries": narrow},
            ],
        }  # fmt: skip
        with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
            marked = [http.post("/marked", content=b"x").status_code for _ in range(4)]
            gets = [http.get("/unmarked").status_code for _ in range(4)]
            unmarked = [http.post("/unmarked", content=b"x") for _ in range(4)]
            narrowed = [http.post("/narrow", content=b"x") for _ in range(4)]
    assert marked == [200] * 4
    assert gets == [200] * 4
    assert sorted(r.status_code for r in unmarked) == [200, 200, 503, 503]
    assert {r.json()["error"] for r in unmarked if r.status_code == 503} == {"busy"}
    assert sorted(r.status_code for r in narrowed) == [200, 200, 503, 503]
    assert {r.json()["error"] for r in narrowed if r.status_code == 503} == {"draining"}


def test_a_503_of_an_outage_every_instance_shares_is_passed_on(tmp_path: Path) -> None:
    """A 503 marked `X-PRSM-Shared-Outage` (the API's Redis is down: any instance would say
    the same) goes back to the caller at once — not to another instance, and not counted
    against this one: after thirty, its breaker is still closed and it still gets its half."""
    shared = {"X-PRSM-Shared-Outage": "true", "X-PRSM-Not-Run": "true", "Retry-After": "1"}
    with (
        scripted_server(Reply(503, b'{"error": "budget_unavailable"}', shared)) as outage,
        scripted_server(Reply(200, b'{"ok": true}')) as ok,
    ):
        config = {"pools": {"p": static(outage.base_url, ok.base_url)},
                  "routes": [{"prefix": "/api", "pool": "p"}]}  # fmt: skip
        with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
            answers = [http.post("/api/x", content=b"x") for _ in range(30)]
    assert sorted(r.status_code for r in answers) == [200] * 15 + [503] * 15
    refused = [r for r in answers if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert len(outage.requests) == 15


def test_faults_at_the_configured_rate(trio: dict[str, ServerProcess], tmp_path: Path) -> None:
    """Abort 20 % with 503 (seeded): within 4 points over 1000 requests; a 100 % delay of
    0.3 s on another route delays every request."""
    config = {
        "seed": 11,
        "pools": {"p": static(trio["a"].base_url)},
        "routes": [
            {"prefix": "/api/v1", "pool": "p", "fault": {"abort": {"percent": 20, "status": 503}}},
            {"prefix": "/slow", "rewrite": "/api/v1", "pool": "p",
             "fault": {"delay": {"percent": 100, "seconds": 0.3}}},
        ],
    }  # fmt: skip
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        statuses = Counter(
            http.post("/api/v1/query", json=QUERY, headers=AUTH).status_code for _ in range(1000)
        )
        aborted = http.post("/api/v1/query", json=QUERY, headers=AUTH)
        while aborted.status_code != 503:
            aborted = http.post("/api/v1/query", json=QUERY, headers=AUTH)
        started = time.monotonic()
        assert answer(http.post("/slow/query", json=QUERY, headers=AUTH)) == "a"
        delayed = time.monotonic() - started
    assert set(statuses) == {200, 503}
    assert abs(statuses[503] / 10 - 20) <= 4, statuses
    assert aborted.json()["error"]["code"] == "fault_injected"
    assert delayed >= 0.3


def test_sigkill_an_upstream_under_load_no_visible_error(tmp_path: Path) -> None:
    """8 callers for 4 s; one of three instances is SIGKILLed after 1.5 s: every request
    answers 200, and the dead instance serves nothing after the kill."""
    with fixed_instances(tmp_path, "xyz", PRSM_ENGINE__FIXED_DELAY_SECONDS="0.01") as servers:
        config = {
            "pools": {"p": static(*(s.base_url for s in servers.values()))},
            "routes": [{"prefix": "/api/v1", "pool": "p",
                        "retries": {"attempts": 3, "non_idempotent": True}}],
        }  # fmt: skip
        with prsm_gateway(tmp_path, config) as gw:

            async def load() -> tuple[list[tuple[float, int, str]], float]:
                results: list[tuple[float, int, str]] = []
                stop_at = time.monotonic() + 4

                async def caller(http: httpx.AsyncClient) -> None:
                    while time.monotonic() < stop_at:
                        r = await http.post("/api/v1/query", json=QUERY, headers=AUTH)
                        body = r.json()["data"]["answer"] if r.status_code == 200 else r.text
                        results.append((time.monotonic(), r.status_code, body))

                async def killer() -> float:
                    await asyncio.sleep(1.5)
                    servers["y"].process.send_signal(signal.SIGKILL)
                    return time.monotonic()

                async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:
                    done = await asyncio.gather(killer(), *(caller(http) for _ in range(8)))
                return results, done[0]

            results, killed_at = asyncio.run(load())
    assert [r for r in results if r[1] != 200] == []
    assert {a for t, _, a in results if t < killed_at} == {"x", "y", "z"}
    assert "y" not in {a for t, _, a in results if t > killed_at + 0.5}


def test_prefix_affinity_keeps_each_conversation_on_one_instance(tmp_path: Path) -> None:
    """A pool balanced by prefix, six conversations through `/v1/chat/completions`, each turn
    the whole conversation, one long system prompt shared. Their first turns come at once: the
    first instance sent the system prompt matches them all, but the load guard moves some
    elsewhere. Then four more turns each, one at a time: every conversation's turns are
    answered by the instance that answered its first. Prompts too short to route by follow
    their `x-session-id`. Then a conversation's instance is SIGKILLed: its next turns are
    answered by one other instance, none failing."""
    system = {"role": "system", "content": "You answer questions about orders. " * 40}
    delayed = {"PRSM_ENGINE__FIXED_DELAY_SECONDS": "0.2"}
    with fixed_instances(tmp_path, "xyz", **delayed) as servers:
        affinity = {"session_header": "x-session-id"}
        pool = static(*(s.base_url for s in servers.values()), balancer="prefix_affinity",
                      affinity=affinity)  # fmt: skip
        config = {"pools": {"p": pool}, "routes": [{"prefix": "/v1", "pool": "p"}]}
        with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:

            def turn(messages: list[dict[str, str]], **headers: str) -> str:
                body = {"model": "fixed", "messages": messages}
                response = http.post("/v1/chat/completions", json=body, headers=AUTH | headers)
                assert response.status_code == 200, response.text
                said: str = response.json()["choices"][0]["message"]["content"]
                messages.append({"role": "assistant", "content": said})
                return said

            def ask(talk: list[dict[str, str]], n: int) -> str:
                talk.append({"role": "user", "content": f"And order {n} of {id(talk)}? " * 9})
                return turn(talk)

            talks = [[system] for _ in range(6)]
            with concurrent.futures.ThreadPoolExecutor(6) as pool_of_callers:
                firsts = list(pool_of_callers.map(ask, talks, [0] * 6))
            later = [{ask(talk, n) for n in range(1, 5)} for talk in talks]
            sessions = {turn([{"role": "user", "content": "hi"}], **{"x-session-id": "s1"})
                        for _ in range(6)}  # fmt: skip
            home = firsts[0]
            servers[home].process.send_signal(signal.SIGKILL)
            servers[home].process.wait()
            after = {ask(talks[0], n) for n in range(5, 8)}
    assert len(set(firsts)) > 1
    assert later == [{first} for first in firsts]
    assert len(sessions) == 1
    assert len(after) == 1
    assert home not in after


def test_all_upstreams_down_is_the_specification_502(tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    config = {"pools": {"p": static(*dead)}, "routes": [{"prefix": "/api/ai", "pool": "p"}]}
    with prsm_gateway(tmp_path, config) as gw:
        response = httpx.post(
            gw.base_url + "/api/ai/query", json=QUERY, headers={"X-Correlation-ID": "c-502"}
        )
        ready = httpx.get(gw.base_url + "/ready")
    assert response.status_code == 502
    assert response.json() == {
        "error": "AI service temporarily unavailable",
        "correlationId": "c-502",
    }
    assert response.headers["retry-after"] == "1"
    assert ready.status_code == 200  # not yet ejected: 5 failures in a row eject


def test_not_ready_once_every_instance_is_ejected(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    pool = static(dead, outliers={"consecutive_failures": 1, "max_ejection_share": 1.0})
    config = {"pools": {"p": pool}, "routes": [{"prefix": "/api", "pool": "p"}]}
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        before = http.get("/ready")
        assert http.get("/api/x").status_code == 502
        after = http.get("/ready")
    assert before.status_code == 200
    assert after.status_code == 503
    assert after.json() == {"status": "not_ready", "pools": {"p": False}}


def test_an_open_breaker_is_503(tmp_path: Path) -> None:
    """Breaker judged after 2 calls: two 502s, then the breaker refuses: 503 circuit_open."""
    dead = f"http://127.0.0.1:{free_port()}"
    pool = static(dead, breaker={"minimum_calls": 2, "reset_timeout": 60},
                  outliers={"consecutive_failures": 100})  # fmt: skip
    config = {"pools": {"p": pool}, "routes": [{"prefix": "/", "pool": "p"}]}
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        statuses = [http.get("/x").status_code for _ in range(4)]
        last = http.get("/x")
        metrics = http.get("/metrics").text
    assert statuses == [502, 502, 503, 503]
    assert last.json()["error"]["code"] == "circuit_open"
    assert last.headers["retry-after"] == "1"
    assert 'prsm_circuit_breaker_state{breaker="p:' in metrics


def test_a_too_slow_route_is_504(trio: dict[str, ServerProcess], tmp_path: Path) -> None:
    with fixed_instances(tmp_path, "s", PRSM_ENGINE__FIXED_DELAY_SECONDS="3") as slow:
        config = {
            "pools": {"p": static(slow["s"].base_url)},
            "routes": [{"prefix": "/api/v1", "pool": "p", "timeout": 0.5}],
        }
        with prsm_gateway(tmp_path, config) as gw:
            response = httpx.post(gw.base_url + "/api/v1/query", json=QUERY, headers=AUTH)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response.headers["retry-after"] == "1"


def test_a_body_over_the_limit_is_413(trio: dict[str, ServerProcess], tmp_path: Path) -> None:
    config = {"max_body_bytes": 2048, "pools": {"p": static(trio["a"].base_url)},
              "routes": [{"prefix": "/api/v1", "pool": "p"}]}  # fmt: skip
    with prsm_gateway(tmp_path, config) as gw:
        response = httpx.post(gw.base_url + "/api/v1/query", content=b"x" * 4096, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


class _Streamer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(5):
            chunk = f"data: {i}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
            time.sleep(0.3)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


def test_a_streamed_response_arrives_incrementally(tmp_path: Path) -> None:
    """Five events 0.3 s apart: the first reaches the caller long before the last is sent."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Streamer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    config = {"pools": {"p": static(url)}, "routes": [{"prefix": "/", "pool": "p"}]}
    try:
        with prsm_gateway(tmp_path, config) as gw:
            arrivals = []
            started = time.monotonic()
            with httpx.stream("GET", gw.base_url + "/events") as response:
                assert response.headers["content-type"] == "text/event-stream"
                for chunk in response.iter_raw():
                    arrivals.append((time.monotonic() - started, chunk))
    finally:
        server.shutdown()
    assert b"".join(c for _, c in arrivals) == b"".join(f"data: {i}\n\n".encode() for i in range(5))
    assert arrivals[0][0] < 0.6 < arrivals[-1][0]


def test_sighup_reloads_without_dropping_requests_in_flight(
    trio: dict[str, ServerProcess], tmp_path: Path
) -> None:
    """A slow request is in flight when the config changes: it completes; new requests
    follow the new route; a broken file is refused and the running config kept."""
    with fixed_instances(tmp_path, "s", PRSM_ENGINE__FIXED_DELAY_SECONDS="1.5") as slow:
        first = {"pools": {"p": static(slow["s"].base_url)},
                 "routes": [{"prefix": "/api/v1", "pool": "p"}]}  # fmt: skip
        second = {"pools": {"p": static(trio["b"].base_url)},
                  "routes": [{"prefix": "/api/v1", "pool": "p"}]}  # fmt: skip
        with prsm_gateway(tmp_path, first) as gw, httpx.Client(base_url=gw.base_url) as http:
            outcome: dict[str, Any] = {}

            def in_flight() -> None:
                outcome["r"] = http.post("/api/v1/query", json=QUERY, headers=AUTH, timeout=10)

            thread = threading.Thread(target=in_flight)
            thread.start()
            time.sleep(0.4)
            gw.reconfigure(second)
            deadline = time.monotonic() + 10
            while answer(http.post("/api/v1/query", json=QUERY, headers=AUTH)) != "b":
                assert time.monotonic() < deadline
            thread.join()
            gw.config_path.write_text("routes: [")  # not YAML
            gw.process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            still = answer(http.post("/api/v1/query", json=QUERY, headers=AUTH))
            log = gw.log_path.read_text()
    assert answer(outcome["r"]) == "s"
    assert still == "b"
    assert "gateway reload failed" in log


def test_metrics_and_readiness(trio: dict[str, ServerProcess], tmp_path: Path) -> None:
    pools = {"p": static(trio["a"].base_url)}
    config = {"pools": pools, "routes": [{"prefix": "/api/v1", "pool": "p"}]}
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        for _ in range(3):
            answer(http.post("/api/v1/query", json=QUERY, headers=AUTH))
        text = http.get("/metrics").text
        ready = http.get("/ready").json()
    assert 'prsm_gateway_requests_total{route="/api/v1",status="200"} 3.0' in text
    assert 'prsm_gateway_upstream_attempts_total{outcome="ok",pool="p"} 3.0' in text
    assert "prsm_gateway_request_duration_seconds_bucket" in text
    assert ready == {"status": "ready", "pools": {"p": True}}
    assert json.dumps(ready)


def test_own_endpoints_take_only_get_and_head(
    trio: dict[str, ServerProcess], tmp_path: Path
) -> None:
    """TRACE, POST or DELETE on /health, /ready or /metrics: 405 JSON with Allow, not 200."""
    config = {"pools": {"p": static(trio["a"].base_url)}, "routes": [{"prefix": "/", "pool": "p"}]}
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        answers = [
            http.request(method, path)
            for method in ("TRACE", "POST", "DELETE")
            for path in ("/health", "/ready", "/metrics")
        ]
        head = http.head("/health")
    for response in answers:
        assert response.status_code == 405, (response.request.method, response.request.url)
        assert response.headers["allow"] == "GET, HEAD"
        assert response.json()["error"]["code"] == "method_not_allowed"
    assert head.status_code == 200


async def test_traces_continue_through_the_gateway(tmp_path: Path) -> None:
    """The caller's traceparent: the gateway's server span is its child, and the upstream
    receives a traceparent of the same trace whose parent is the gateway's span."""
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with collector_app() as collector:
        with scripted_server(Reply(200, b"{}")) as upstream:
            config = {"pools": {"p": static(upstream.base_url)},
                      "routes": [{"prefix": "/api", "pool": "p"}]}  # fmt: skip
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
            with prsm_gateway(tmp_path, config, env) as gw:
                async with httpx.AsyncClient() as http:
                    traceparent = f"00-{trace_id}-{caller_span}-01"
                    response = await http.get(
                        gw.base_url + "/api/x", headers={"traceparent": traceparent}
                    )
                [span] = await collector.wait_for("GET /api")
    assert response.status_code == 200
    assert span.trace_id.hex() == trace_id
    assert span.parent_span_id.hex() == caller_span
    sent = {k.lower(): v for k, v in upstream.requests[0][1].items()}["traceparent"]
    assert sent.split("-")[1] == trace_id
    assert sent.split("-")[2] == span.span_id.hex()


def test_the_gateways_own_errors_on_v1_routes_are_openais(tmp_path: Path) -> None:
    """On an OpenAI-compatible route the gateway's own refusals reach the official `openai`
    client as OpenAI's errors: 429 `rate_limit_error`, 413 `invalid_request_error`, and all
    upstreams down 502 `server_error`; PRSM's routes keep PRSM's shapes."""
    dead = f"http://127.0.0.1:{free_port()}"
    config = {"max_body_bytes": 2048, "pools": {"p": static(dead)},
              "routes": [{"prefix": "/v1", "pool": "p", "rate_limit": {"limit": "2/minute"}},
                         {"prefix": "/api/v1", "pool": "p"}]}  # fmt: skip
    with prsm_gateway(tmp_path, config) as gw:
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="k", max_retries=0)
        ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(openai.InternalServerError) as down:
            client.chat.completions.create(**ask)  # type: ignore[call-overload]
        with pytest.raises(openai.APIStatusError) as too_large:
            client.chat.completions.create(**ask, user="x" * 4096)  # type: ignore[call-overload]
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(**ask)  # type: ignore[call-overload]
        prsm_down = httpx.post(gw.base_url + "/api/v1/query", json=QUERY)
    assert down.value.status_code == 502
    assert down.value.body == {
        "message": "AI service temporarily unavailable",
        "type": "server_error",
        "param": None,
        "code": "upstream_failed",
    }
    assert too_large.value.status_code == 413
    assert isinstance(too_large.value.body, dict)
    assert too_large.value.body["type"] == "invalid_request_error"
    assert isinstance(limited.value.body, dict)
    assert limited.value.body["type"] == "rate_limit_error"
    assert limited.value.response.headers["retry-after"]
    assert prsm_down.status_code == 502
    assert prsm_down.json()["error"] == "AI service temporarily unavailable"


def hangs_up_on_its_first_post(posts: list[bytes]) -> Callable[[socket.socket], None]:
    """An upstream that answers GETs on a kept-alive connection, takes the first POST and
    closes half a second later without answering (it died on it), and answers later POSTs."""

    def handle(connection: socket.socket) -> None:
        buffered = bytearray()
        while (request := read_request(connection, buffered)) is not None:
            if request.startswith(b"POST"):
                posts.append(request)
                if len(posts) == 1:
                    time.sleep(0.5)
                    return
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    return handle


@pytest.mark.parametrize(
    ("headers", "status", "sent"), [({}, 502, 1), ({"Idempotency-Key": "k-1"}, 200, 2)]
)
def test_a_post_the_upstream_took_is_sent_again_only_with_an_idempotency_key(
    tmp_path: Path, headers: dict[str, str], status: int, sent: int
) -> None:
    """The upstream takes a POST on a kept-alive connection and dies on it: without a key the
    caller gets 502 and the upstream saw it once; with an Idempotency-Key it is resent."""
    posts: list[bytes] = []
    with socket_server(hangs_up_on_its_first_post(posts)) as upstream:
        config = {"pools": {"p": static(upstream)},
                  "routes": [{"prefix": "/", "pool": "p", "retries": {"attempts": 3}}]}  # fmt: skip
        with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
            assert http.get("/warm").status_code == 200  # a connection to reuse
            response = http.post("/thing", json={}, headers=headers)
    assert response.status_code == status
    assert len(posts) == sent
