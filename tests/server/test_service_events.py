"""What the service emits per query, observed through the in-memory sink."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from prsm.config import load_settings
from prsm.engines import FixedEngine
from prsm.errors import EngineUnavailableError
from prsm.events import MemoryEventSink
from prsm.server import create_app
from tests.support import API_KEY, free_port

QUERY = {"prompt": "hi there", "userId": "u5", "context": {"requestId": "r9"}, "priority": "high"}


async def run(
    engine: FixedEngine, sink: MemoryEventSink, redis_url: str | None = None
) -> httpx.Response:
    settings = load_settings(api_keys=API_KEY, engine={"kind": "fixed"}, redis_url=redis_url)
    app = create_app(settings, engine, events=sink)
    async with app.router.lifespan_context(app):
        await app.state.models.wait_loaded()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = {"authorization": f"Bearer {API_KEY}", "x-correlation-id": "cid-1"}
            response = await client.post("/api/v1/query", json=QUERY, headers=headers)
            response.extensions["ready"] = (await client.get("/ready")).json()
            response.extensions["started"] = await client.get("/started")
            return response


async def test_completed_event_matches_the_answer() -> None:
    """One completed event with the answer's usage, model, correlation id and caller context."""
    sink = MemoryEventSink()
    response = await run(FixedEngine("one two three", model="fx"), sink)
    [event] = sink.events
    assert event.type == "completed"
    assert event.correlation_id == "cid-1" == response.json()["correlationId"]
    assert event.usage.model_dump(by_alias=True) == response.json()["data"]["usage"]
    assert (event.user_id, event.model, event.priority) == ("u5", "fx", "high")
    assert event.context == {"requestId": "r9"}
    assert event.request is None
    assert event.error is None


async def test_failed_event_carries_error_and_original_request() -> None:
    """A failed query emits `failed` with the error and the request, for a fallback."""
    sink = MemoryEventSink()
    response = await run(FixedEngine(error=EngineUnavailableError("backend down")), sink)
    assert response.status_code == 503
    [event] = sink.events
    assert event.type == "failed"
    assert event.error is not None
    assert (event.error.code, event.error.status) == ("engine_unavailable", 503)
    assert event.request == {
        "prompt": "hi there",
        "userId": "u5",
        "context": {"requestId": "r9"},
        "priority": "high",
    }


async def test_unreachable_redis_fails_readiness_but_not_queries(tmp_path: Path) -> None:
    """With Redis configured but down, /ready names redis and queries still answer."""
    sink = MemoryEventSink()
    response = await run(FixedEngine(), sink, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert response.status_code == 200
    ready = response.extensions["ready"]
    assert ready["status"] == "not_ready"
    assert ready["checks"]["redis"]["ok"] is False
    assert ready["checks"]["engine"]["ok"] is True
    started = response.extensions["started"]  # the startup probe: a Redis outage restarts nothing
    assert (started.status_code, started.json()["status"]) == (200, "started")


async def test_the_query_log_line_says_whether_the_engine_was_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`admitted: true` for an answered query; `admitted: false` for one refused before it had
    an engine slot (here: a model this instance does not serve), so a query retried elsewhere
    after such a refusal is not mistaken for one that ran twice."""
    settings = load_settings(api_keys=API_KEY, engine={"kind": "fixed"})
    app = create_app(settings, FixedEngine("one two", model="fx"))
    headers = {"authorization": f"Bearer {API_KEY}"}
    with caplog.at_level(logging.INFO, logger="prsm.query"):
        async with app.router.lifespan_context(app):
            await app.state.models.wait_loaded()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                ok = await client.post("/api/v1/query", json=QUERY, headers=headers)
                other = await client.post(
                    "/api/v1/query", json=QUERY | {"model": "other"}, headers=headers
                )
    assert (ok.status_code, other.status_code) == (200, 404)
    lines = [r for r in caplog.records if r.getMessage().startswith("query ")]
    assert [(r.status, r.admitted) for r in lines] == [(200, True), (404, False)]  # type: ignore[attr-defined]
