"""The worker's probes with a real worker process and a real Redis: ready while it consumes and
Redis answers; Redis gone, `/ready` is 503 naming it while `/health` stays 200 (liveness does
not restart a worker for an outage); Redis back, ready again."""

from __future__ import annotations

from pathlib import Path

import httpx

from prsm.embedded_redis import EmbeddedRedis
from tests.support import API_KEY, free_port, prsm_worker, wait_for


def test_ready_follows_redis_and_health_does_not(tmp_path: Path) -> None:
    """Ready with its Redis; 503 `redis` without it, alive all along; ready once it is back."""
    port = free_port()
    redis = EmbeddedRedis(tmp_path / "redis")
    env = {
        "PRSM_REDIS_URL": redis.start(),
        "PRSM_BASE_URL": "http://127.0.0.1:9",
        "PRSM_API_KEY": API_KEY,
        "PRSM_JOBS__CALLBACK_SECRET": "probe-test-secret",
        "PRSM_JOBS__METRICS_PORT": str(port),
    }
    probes = f"http://127.0.0.1:{port}"
    try:
        with prsm_worker(tmp_path, env):
            wait_for(lambda: httpx.get(probes + "/ready").status_code == 200, 10)
            assert httpx.get(probes + "/ready").json()["checks"]["queues"]["ok"] is True
            assert "prsm_job_queue_depth" in httpx.get(probes + "/metrics").text
            redis.stop()
            wait_for(lambda: httpx.get(probes + "/ready").status_code == 503, 10)
            down = httpx.get(probes + "/ready").json()
            assert down["status"] == "not_ready"
            assert down["checks"]["redis"]["ok"] is False
            assert httpx.get(probes + "/health").status_code == 200
            redis.start()
            wait_for(lambda: httpx.get(probes + "/ready").status_code == 200, 15)
    finally:
        redis.stop()
