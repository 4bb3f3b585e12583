"""Query events from a real `prsm serve` to real Redis consumers, the spec's Node one included."""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import redis

from prsm import keys
from prsm.embedded_redis import EmbeddedRedis
from prsm.server.auth import key_id
from tests.support import API_KEY, prsm_serve

NODE_DIR = Path(__file__).parent / "node"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# SHA-256 of the specification's `events/prsm-event-handler.js` code block, as published.
SPEC_HANDLER_SHA256 = "26982c961aac20dd36541c1a0452e35b6fbbcf872ac4e1d4c2bbfe45ebbd1ef2"


def test_node_handler_is_the_spec_verbatim() -> None:
    """The committed Node consumer is, byte for byte, the specification's code block."""
    code = (NODE_DIR / "prsm-event-handler.js").read_bytes()
    assert code.startswith(b"// events/prsm-event-handler.js\n")
    assert hashlib.sha256(code).hexdigest() == SPEC_HANDLER_SHA256


class NodeConsumer:
    """The spec's handler in a Node process; its emitted events arrive on `lines`."""

    def __init__(self, redis_url: str) -> None:
        node = Path(sys.executable).parent / "node"
        self.process = subprocess.Popen(
            [str(node), "harness.js"],
            cwd=NODE_DIR,
            env={"REDIS_URL": redis_url, "PATH": str(node.parent)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout: float = 15) -> dict[str, object]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.process.kill()
            _, stderr = self.process.communicate()
            raise AssertionError(f"the Node consumer said nothing; stderr:\n{stderr}") from None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def test_the_spec_node_consumer_receives_our_events(tmp_path: Path) -> None:
    """The spec's PRSMEventHandler, unchanged, gets completed and failed events and
    runs its own user-metrics update and fallback on them."""
    with EmbeddedRedis(tmp_path / "redis") as url:
        env = {
            "PRSM_REDIS_URL": url,
            "PRSM_ENGINE__KIND": "fixed",
            "PRSM_ENGINE__TIMEOUT_SECONDS": "0.5",
        }
        with prsm_serve(tmp_path, env=env) as api:
            node = NodeConsumer(url)
            try:
                assert node.next()["event"] == "ready"
                fallback = redis.Redis.from_url(url).pubsub()
                fallback.subscribe(keys.FALLBACK_REQUEST)
                answer = httpx.post(
                    api.base_url + "/api/v1/query",
                    json={"prompt": "hi", "userId": "node-user", "context": {"requestId": "r1"}},
                    headers=AUTH | {"X-Correlation-ID": "from-python-1"},
                )
                assert answer.status_code == 200
                got = node.next()
                assert got["event"] == "query:completed"
                data = got["data"]
                assert isinstance(data, dict)
                assert data["correlationId"] == "from-python-1"
                assert data["userId"] == "node-user"
                assert data["type"] == "completed"
                assert data["usage"]["tokens"] == answer.json()["data"]["usage"]["tokens"]
                assert data["context"] == {"requestId": "r1"}

                bad = httpx.post(
                    api.base_url + "/api/v1/query",
                    json={"prompt": "hi", "userId": "node-user", "model": "not-served"},
                    headers=AUTH | {"X-Correlation-ID": "from-python-2"},
                )
                assert bad.status_code == 404
                got = node.next()
                assert got["event"] == "query:failed"
                assert got["data"]["error"]["code"] == "unknown_model"  # type: ignore[index]
            finally:
                node.stop()
            # The Node handler's own updateUserMetrics wrote the spec's key; ours is under the
            # caller's tag (a userId is the caller's word): one increment each.
            local = redis.Redis.from_url(url)
            assert local.hget("user:node-user:metrics", "total_queries") == b"1"
            ours = local.hgetall(keys.user_metrics(key_id(API_KEY), "node-user"))
            assert ours[b"total_queries"] == b"1"
            # ...and its triggerFallback republished the failure, as did PRSM: two messages.
            seen = []
            deadline = time.monotonic() + 5
            while len(seen) < 2 and time.monotonic() < deadline:
                message = fallback.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message:
                    seen.append(json.loads(message["data"]))
            assert [m["correlationId"] for m in seen] == ["from-python-2", "from-python-2"]


def test_queries_go_on_while_redis_is_down_and_events_catch_up(tmp_path: Path) -> None:
    """Stop Redis: queries still answer 200 and /ready says redis is down. Start it again:
    every event, including those of the outage, reaches the stream."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    env = {"PRSM_REDIS_URL": url, "PRSM_ENGINE__KIND": "fixed"}
    try:
        with (
            prsm_serve(tmp_path, env=env) as api,
            httpx.Client(base_url=api.base_url, headers=AUTH) as http,
        ):

            def ask(cid: str) -> None:
                response = http.post(
                    "/api/v1/query",
                    json={"prompt": "hi", "userId": "u"},
                    headers={"X-Correlation-ID": cid},
                )
                assert response.status_code == 200

            ask("before")
            server.stop()
            for i in range(10):
                ask(f"during-{i}")
            ready = http.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["redis"]["ok"] is False
            server.start()
            ask("after")
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 30
            while client.xlen(keys.EVENT_STREAM) < 12 and time.monotonic() < deadline:
                time.sleep(0.1)
            ids = {
                json.loads(f[b"data"])["correlationId"] for _, f in client.xrange(keys.EVENT_STREAM)
            }
            assert ids == {"before", "after"} | {f"during-{i}" for i in range(10)}
            assert http.get("/ready").status_code == 200
    finally:
        server.stop()
