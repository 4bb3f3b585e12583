"""SIGTERM drains `prsm gateway`: a slow answer its route allows is relayed in full (not cut
at uvicorn's 10 s), new requests after the grace get 503 JSON, exit code 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.support import API_KEY, fixed_instances, prsm_gateway

AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUERY = {"prompt": "hi", "userId": "u1"}


def test_sigterm_relays_what_is_in_flight_and_refuses_the_rest(tmp_path: Path) -> None:
    """An 11 s upstream answer in flight, SIGTERM with a 1 s grace: /ready 503 at once, a
    request after the grace 503 shutting_down, the slow one 200, exit code 0."""
    with fixed_instances(tmp_path, "s", PRSM_ENGINE__FIXED_DELAY_SECONDS="11") as servers:
        config = {
            "pools": {"p": {"discovery": {"kind": "static", "urls": [servers["s"].base_url]}}},
            "routes": [{"prefix": "/api/v1", "pool": "p", "timeout": 300,
                        "retries": {"per_try_timeout": 300}}],
        }  # fmt: skip
        env = {"PRSM_GATEWAY__DRAIN_SECONDS": "1"}
        with prsm_gateway(tmp_path, config, env=env) as gateway:
            slow: list[httpx.Response] = []
            url = gateway.base_url + "/api/v1/query"
            thread = threading.Thread(
                target=lambda: slow.append(httpx.post(url, json=QUERY, headers=AUTH, timeout=60))
            )
            thread.start()
            time.sleep(0.5)
            gateway.process.send_signal(signal.SIGTERM)
            ready = httpx.get(gateway.base_url + "/ready")
            time.sleep(1.5)
            refused = httpx.post(url, json=QUERY, headers=AUTH)
            thread.join(timeout=30)
            exit_code = gateway.process.wait(timeout=30)
    assert ready.status_code == 503
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["retry-after"] == "1"
    assert [r.status_code for r in slow] == [200]
    assert slow[0].json()["data"]["answer"] == "s"
    assert exit_code == 0
