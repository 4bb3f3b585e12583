"""Submitting jobs over HTTP when Redis fails, and idempotent submissions (in-process app,
real Redis)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prsm.config import Settings, load_settings
from prsm.embedded_redis import EmbeddedRedis
from prsm.engines import FixedEngine
from tests.conftest import api_client
from tests.support import API_KEY

JOB = {"type": "priority-query", "data": {"prompt": "hi", "userId": "u1"}}


def settings_for(redis_url: str, **jobs: object) -> Settings:
    return load_settings(api_keys=API_KEY, engine={"kind": "fixed"}, redis_url=redis_url, jobs=jobs)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A Redis of this test's own, to kill or freeze."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    process = server._process
    if process is not None and process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
    server.stop()


async def jobs_api(redis_url: str, **jobs: object) -> api_client:
    return api_client(settings_for(redis_url, **jobs), FixedEngine("ok"))


async def test_redis_killed_submission_is_503_with_retry_after(own_redis: EmbeddedRedis) -> None:
    """Redis stopped: POST /api/v1/jobs answers 503 jobs_unavailable with Retry-After, and
    reading a job too; never a 500."""
    async with await jobs_api(own_redis.url, redis_timeout_seconds=1) as api:
        assert (await api.post("/api/v1/jobs", json=JOB)).status_code == 202
        own_redis.stop()
        submitted = await api.post("/api/v1/jobs", json=JOB)
        read = await api.get("/api/v1/jobs/abc")
    for response in (submitted, read):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "jobs_unavailable"
        assert int(response.headers["retry-after"]) >= 1


async def test_redis_frozen_submission_is_503_within_the_bound(
    own_redis: EmbeddedRedis,
) -> None:
    """Redis frozen (SIGSTOP): the submission answers 503 within jobs.redis_timeout_seconds
    (1 s here), not after the client gives up."""
    async with await jobs_api(own_redis.url, redis_timeout_seconds=1) as api:
        assert (await api.post("/api/v1/jobs", json=JOB)).status_code == 202
        assert own_redis._process is not None
        os.kill(own_redis._process.pid, signal.SIGSTOP)
        started = time.monotonic()
        response = await api.post("/api/v1/jobs", json=JOB)
        took = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "jobs_unavailable"
    assert took < 2.5


async def test_a_retried_submission_is_the_same_job(redis_server: EmbeddedRedis) -> None:
    """The same Idempotency-Key twice: one job, the same id both times; the same key with
    another body is 409; another key is another job."""
    async with await jobs_api(redis_server.url) as api:
        key = {"Idempotency-Key": f"order-{time.time_ns()}"}
        first = await api.post("/api/v1/jobs", json=JOB, headers=key)
        again = await api.post("/api/v1/jobs", json=JOB, headers=key)
        other_body = JOB | {"data": {"prompt": "other", "userId": "u1"}}
        conflict = await api.post("/api/v1/jobs", json=other_body, headers=key)
        fresh = await api.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": "new"})
    assert first.status_code == again.status_code == 202
    assert first.json()["jobId"] == again.json()["jobId"]
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert fresh.json()["jobId"] != first.json()["jobId"]


async def test_request_id_serves_as_the_idempotency_key(redis_server: EmbeddedRedis) -> None:
    """Without the header, a query job's requestId makes a resubmission the same job."""
    data = {"prompt": "hi", "userId": "u1", "requestId": f"r-{time.time_ns()}"}
    body = {"type": "priority-query", "data": data}
    async with await jobs_api(redis_server.url) as api:
        first = await api.post("/api/v1/jobs", json=body)
        again = await api.post("/api/v1/jobs", json=body)
    assert first.json()["jobId"] == again.json()["jobId"]


async def test_a_blank_prompt_job_is_refused_like_a_blank_query(
    redis_server: EmbeddedRedis,
) -> None:
    """Jobs use the query's own prompt contract: a prompt of spaces is 422 at submission
    (it used to be accepted, then retried)."""
    async with await jobs_api(redis_server.url) as api:
        job = await api.post(
            "/api/v1/jobs",
            json={"type": "priority-query", "data": {"prompt": "   ", "userId": "u"}},
        )
        batch = await api.post(
            "/api/v1/jobs",
            json={"type": "batch-query", "data": {"batchId": "b1",
                  "queries": [{"id": "1", "prompt": " \n", "userId": "u"}]}},
        )  # fmt: skip
        query = await api.post("/api/v1/query", json={"prompt": "   ", "userId": "u"})
    for response in (job, batch, query):
        assert response.status_code == 422, response.text
        assert "prompt" in response.json()["error"]["message"]


async def test_an_overlong_idempotency_key_is_refused(redis_server: EmbeddedRedis) -> None:
    """An Idempotency-Key over 256 characters is 422, not stored."""
    async with await jobs_api(redis_server.url) as api:
        response = await api.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": "k" * 300})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


def test_two_callers_with_one_key_get_two_jobs() -> None:
    """The job id is derived from the caller and the key together."""
    from prsm.jobs.submit import _idempotent_id

    assert _idempotent_id("key-a", "k1") != _idempotent_id("key-b", "k1")
    assert _idempotent_id("key-a", "k1") == _idempotent_id("key-a", "k1")


async def test_status_of_the_idempotent_job(redis_server: EmbeddedRedis) -> None:
    """The job a key made can be read back by its id."""
    async with await jobs_api(redis_server.url) as api:
        accepted = await api.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": "s1"})
        status = await api.get(accepted.json()["statusUrl"])
    assert status.status_code == 200
    assert status.json()["jobId"] == accepted.json()["jobId"]
