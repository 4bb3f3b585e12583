"""`prsm up` and `prsm events tail`, run as processes the way a new user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import free_port, wait_until_ready


def test_up_runs_redis_api_worker_and_gateway_and_stops_them_all(tmp_path: Path) -> None:
    """`prsm up` serves queries (directly and through the gateway on its port) and jobs, logs
    each part, and Ctrl-C stops every process."""
    port, metrics_port, gateway_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")} | {
        "PRSM_SERVER__PORT": str(port),
        "PRSM_GATEWAY__PORT": str(gateway_port),
        "PRSM_JOBS__METRICS_PORT": str(metrics_port),
        "PRSM_STATE_DIR": str(tmp_path / "state"),
        "PRSM_ENGINE__KIND": "fixed",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "prsm", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + "/ready", time.monotonic() + 60, up)  # type: ignore[arg-type]
        checks = httpx.get(base + "/ready").json()["checks"]
        assert checks["redis"]["ok"]
        assert {n: c["ok"] for n, c in checks.items() if "engine" in n} == {
            "engine": True, "engine:all-MiniLM-L6-v2": True
        }  # fmt: skip
        key = (tmp_path / "state" / "dev-api-key").read_text().strip()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
            assert_embeds(http)
            assert (
                http.post("/api/v1/query", json={"prompt": "hi", "userId": "u"}).status_code == 200
            )
            job = http.post(
                "/api/v1/jobs",
                json={"type": "priority-query", "data": {"prompt": "hi", "userId": "u"}},
            ).json()
            deadline = time.monotonic() + 20
            while http.get(job["statusUrl"]).json()["status"] != "complete":
                assert time.monotonic() < deadline, "the job did not complete under prsm up"
                time.sleep(0.1)
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_until_ready(gateway + "/ready", time.monotonic() + 30, up)  # type: ignore[arg-type]
        through = httpx.post(
            gateway + "/api/ai/query",
            json={"prompt": "hi", "userId": "u"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert through.status_code == 200
        assert through.json()["data"]["answer"]
        assert through.headers["ratelimit-limit"] == "1000"
        worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'prsm_jobs_total{status="complete",type="priority-query"} 1.0' in worker_metrics
        assert 'prsm_job_queue_depth{type="batch-query"}' in worker_metrics
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) == 4  # redis-server, prsm serve, prsm worker, prsm gateway
        for name in ("api", "worker", "gateway"):
            assert (tmp_path / "state" / "logs" / f"{name}.log").stat().st_size > 0
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=30)
    assert up.returncode == 0, output
    assert "PRSM is up" in output
    assert f"Bearer {key}" in output
    assert f"{gateway}/api/ai/query" in output
    assert not any(child.is_running() and child.status() != "zombie" for child in children)


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("inherited", [None, ignore_sigint], ids=["sigint", "sigint-ignored"])
def test_events_tail_prints_live_events(
    tmp_path: Path, redis_server: object, inherited: Callable[[], None] | None
) -> None:
    """`prsm events tail` prints each published event as a JSON line with its channel, and
    stops with exit code 0 on SIGINT — also when started as a shell starts a background job,
    with SIGINT ignored."""
    import redis as redis_lib

    url = redis_server.url  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")} | {
        "PRSM_REDIS_URL": url
    }
    tail = subprocess.Popen(
        [sys.executable, "-m", "prsm", "events", "tail"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=inherited,
    )
    try:
        client = redis_lib.Redis.from_url(url)
        deadline = time.monotonic() + 20
        while client.pubsub_numsub("prsm:query:completed")[0][1] == 0:
            assert time.monotonic() < deadline, "events tail did not subscribe"
            time.sleep(0.05)
        client.publish("prsm:query:completed", json.dumps({"type": "completed", "userId": "u"}))
        assert tail.stdout is not None
        line = json.loads(tail.stdout.readline())
    finally:
        tail.send_signal(signal.SIGINT)
        exit_code = tail.wait(timeout=10)
    assert exit_code == 0
    assert line == {
        "channel": "prsm:query:completed",
        "event": {"type": "completed", "userId": "u"},
    }


def assert_embeds(http: httpx.Client) -> None:
    """The embedding model answers beside the chat model."""
    embedded = http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "hello"})
    assert len(embedded.json()["data"][0]["embedding"]) == 384
