"""The specification's shallow and deep health checks, against real servers."""

from __future__ import annotations

from pathlib import Path

from prsm import AsyncPRSMClient
from prsm.client.health import check_health, deep_health_check
from tests.support import API_KEY, Reply, ServerProcess, free_port, prsm_serve, scripted_server


async def test_healthy_instance_passes_shallow_and_deep(fixed_server: ServerProcess) -> None:
    """A live server is healthy, with its response time; the deep check's query passes."""
    async with AsyncPRSMClient(fixed_server.base_url, api_key=API_KEY) as client:
        shallow = await check_health(client)
        deep = await deep_health_check(client)
    assert shallow.status == "healthy"
    assert shallow.response_time_ms is not None
    assert shallow.details is not None
    assert shallow.details["status"] == "healthy"
    assert deep.status == "healthy"
    assert deep.functional_test == "passed"
    assert deep.test_response is not None
    assert deep.test_response["answer"] == "Paris."


async def test_slow_answer_is_degraded() -> None:
    """`/health` answering after the threshold makes the instance degraded."""
    healthy = b'{"status": "healthy", "version": "x", "uptimeSeconds": 1}'
    with scripted_server(Reply(200, healthy, delay=0.3)) as server:
        async with AsyncPRSMClient(server.base_url) as client:
            report = await check_health(client, degraded_after=0.1)
    assert report.status == "degraded"


async def test_unreachable_is_unhealthy() -> None:
    """Nothing listening: unhealthy, with the error."""
    async with AsyncPRSMClient(f"http://127.0.0.1:{free_port()}", retries=0) as client:
        report = await check_health(client)
    assert report.status == "unhealthy"
    assert report.error


async def test_failing_query_makes_a_live_instance_degraded(tmp_path: Path) -> None:
    """/health fine but queries fail (the engine never loaded): degraded, test failed."""
    env = {"PRSM_ENGINE__MODEL_PATH": str(tmp_path / "missing.gguf")}
    with prsm_serve(tmp_path, env=env, ready_path="/health") as server:
        async with AsyncPRSMClient(server.base_url, api_key=API_KEY, retries=0) as client:
            report = await deep_health_check(client)
    assert report.status == "degraded"
    assert report.functional_test == "failed"
    assert report.error is not None
    assert "not ready" in report.error
