"""Jobs end to end: real Redis, `prsm serve`, `prsm worker` processes and a callback receiver."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from prsm import keys
from prsm.config import ApiKey
from prsm.embedded_redis import EmbeddedRedis
from prsm.jobs.callbacks import verify_signature
from prsm.server.auth import ApiKeyAuth
from tests.support import (
    API_KEY,
    CALLBACK_SECRET,
    Reply,
    ScriptedServer,
    collector_app,
    metric,
    prsm_gateway,
    prsm_serve,
    prsm_worker,
    scripted_server,
    wait_for,
    worker_env,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
OTHER_KEY = "other-key-0123456789"
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


def identity_of(api_key: str) -> str:
    """Who a caller with `api_key` is, as the owner of its jobs and batches."""
    principal = ApiKeyAuth([ApiKey.parse(api_key)]).lookup(api_key)
    assert principal is not None
    return principal.identity


def results_key(api_key: str, batch_id: str) -> str:
    """Where the batch `batch_id` submitted with `api_key` keeps its results in Redis."""
    return keys.batch_results(keys.owner_tag(identity_of(api_key)), batch_id)


@dataclass
class Stack:
    redis_url: str
    api: str
    http: httpx.Client
    receiver: ScriptedServer

    def submit(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        response = self.http.post("/api/v1/jobs", json=body, headers=headers)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def wait(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.http.get(f"/api/v1/jobs/{job_id}").json()
            if status["status"] in ("complete", "failed", "aborted"):
                return dict(status)
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish: {status}")

    def callbacks(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """Every callback received, each checked to carry a valid signature."""
        received = []
        for (_, headers), body in zip(self.receiver.requests, self.receiver.bodies, strict=True):
            timestamp, signature = headers["X-PRSM-Timestamp"], headers["X-PRSM-Signature"]
            assert verify_signature(CALLBACK_SECRET.encode(), body, timestamp, signature), headers
            received.append((headers, json.loads(body)))
        return received

    def callback_for(self, request_id: str, timeout: float = 10) -> dict[str, Any]:
        """The one (signed) callback body for `request_id`, once it has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [body for _, body in self.callbacks() if body["requestId"] == request_id]
            if found or time.monotonic() > deadline:
                assert len(found) == 1, f"callbacks for {request_id}: {found}"
                return found[0]
            time.sleep(0.05)


def engine_busy(api: str) -> bool:
    """Whether the API's engine is generating at this moment (its in-flight gauge)."""
    return metric(api, "prsm_engine_in_flight") > 0


@contextlib.contextmanager
def stack(tmp_path: Path, *, api_env: dict[str, str], worker: bool = True) -> Iterator[Stack]:
    with (
        EmbeddedRedis(tmp_path / "redis") as redis_url,
        prsm_serve(tmp_path, env={"PRSM_REDIS_URL": redis_url} | api_env) as api,
        scripted_server(Reply(200)) as receiver,
        httpx.Client(base_url=api.base_url, headers=AUTH, timeout=10) as http,
    ):
        env = worker_env(redis_url, api.base_url)
        with prsm_worker(tmp_path, env) if worker else contextlib.nullcontext():
            yield Stack(redis_url, api.base_url, http, receiver)


@pytest.fixture(scope="module")
def fixed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_ANSWER": "Paris.",
        "PRSM_API_KEYS": f"{API_KEY},{OTHER_KEY}",
    }
    with stack(tmp_path_factory.mktemp("jobs"), api_env=env) as running:
        yield running


def test_priority_job_answers_and_calls_back_signed(fixed_stack: Stack) -> None:
    """A priority job completes; the callback is signed and carries the job's correlation id,
    which the API's query event carries too."""
    callback = fixed_stack.receiver.base_url + "/hook"
    accepted = fixed_stack.submit(
        {
            "type": "priority-query",
            "data": {"prompt": "Capital of France?", "userId": "u1", "requestId": "req-1"},
            "callbackUrl": callback,
        },
        **{"X-Correlation-ID": "job-cid-1"},
    )
    assert accepted["statusUrl"] == f"/api/v1/jobs/{accepted['jobId']}"
    status = fixed_stack.wait(accepted["jobId"])
    assert status["status"] == "complete"
    assert status["attempts"] == 1
    assert status["result"]["answer"] == "Paris."
    assert status["correlationId"] == "job-cid-1"
    body = fixed_stack.callback_for("req-1")
    assert body == {"requestId": "req-1", "status": "completed", "response": status["result"]}
    [headers] = [h for h, b in fixed_stack.callbacks() if b["requestId"] == "req-1"]
    assert headers["X-Correlation-ID"] == "job-cid-1"
    assert headers["X-PRSM-Job-ID"] == accepted["jobId"]
    entries = redis.Redis.from_url(fixed_stack.redis_url).xrange(keys.EVENT_STREAM)
    events = [json.loads(fields[b"data"]) for _, fields in entries]
    [event] = [e for e in events if e["correlationId"] == "job-cid-1"]
    assert event["priority"] == "high"
    assert event["context"]["queueType"] == "priority-query"


def test_another_key_reads_neither_the_job_nor_the_batch(fixed_stack: Stack) -> None:
    """A job and a batch belong to the key that submitted them: another key gets 404 for
    both, as for what does not exist; the same batch id from two keys is two batches, each
    stored under its owner."""
    batch = {"type": "batch-query", "data": {
        "batchId": "b-secret-1", "queries": [{"id": "q", "prompt": "secret plan", "userId": "u"}]
    }}  # fmt: skip
    mine = fixed_stack.submit(batch)
    theirs = fixed_stack.http.post("/api/v1/jobs", json=batch, headers=OTHER).json()
    assert fixed_stack.wait(mine["jobId"])["status"] == "complete"
    with httpx.Client(base_url=fixed_stack.api, headers=OTHER) as other:
        assert other.get(f"/api/v1/jobs/{mine['jobId']}").status_code == 404
        assert other.get(f"/api/v1/jobs/{theirs['jobId']}").status_code == 200
        deadline = time.monotonic() + 30
        while other.get(f"/api/v1/jobs/{theirs['jobId']}").json()["status"] != "complete":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        their_results = other.get("/api/v1/batches/b-secret-1")
    for job_id in (theirs["jobId"], "0" * 32):  # another's job reads as an unknown one
        refused = fixed_stack.http.get(f"/api/v1/jobs/{job_id}")
        assert (refused.status_code, refused.json()["error"]["code"]) == (404, "job_not_found")
    assert fixed_stack.http.get("/api/v1/batches/b-secret-1").status_code == 200
    assert their_results.status_code == 200
    stored = redis.Redis.from_url(fixed_stack.redis_url)
    assert stored.exists(results_key(API_KEY, "b-secret-1"))
    assert stored.exists(results_key(OTHER_KEY, "b-secret-1"))
    assert not stored.exists("batch:b-secret-1:results")  # the specification's shared key


def test_another_key_cannot_read_a_batch_it_did_not_submit(fixed_stack: Stack) -> None:
    """Guessing a finished batch's id with another key: 404 batch_not_found."""
    done = fixed_stack.submit({"type": "batch-query", "data": {
        "batchId": "b-secret-2", "queries": [{"id": "q", "prompt": "secret", "userId": "u"}]
    }})  # fmt: skip
    assert fixed_stack.wait(done["jobId"])["status"] == "complete"
    assert fixed_stack.http.get("/api/v1/batches/b-secret-2").status_code == 200
    guessed = httpx.get(fixed_stack.api + "/api/v1/batches/b-secret-2", headers=OTHER)
    assert guessed.status_code == 404
    assert guessed.json()["error"]["code"] == "batch_not_found"


def test_disallowed_callback_target_is_refused_at_submission(fixed_stack: Stack) -> None:
    """A callback into a private network is 403 callback_not_allowed; nothing is queued."""
    response = fixed_stack.http.post(
        "/api/v1/jobs",
        json={
            "type": "priority-query",
            "data": {"prompt": "hi", "userId": "u1"},
            "callbackUrl": "http://10.1.2.3/internal",
        },
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "callback_not_allowed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "nightly", "data": {}}, "type"),
        ({"type": "priority-query", "data": {"userId": "u"}}, "prompt"),
        ({"type": "batch-query", "data": {"queries": []}}, "batchId"),
        (
            {
                "type": "scheduled-query",
                "data": {"prompt": "p", "userId": "u"},
                "runAt": "2030-01-01T00:00:00",
            },
            "time zone",
        ),
        (
            {
                "type": "scheduled-query",
                "data": {"prompt": "p", "userId": "u"},
                "runAt": "2030-01-01T00:00:00Z",
                "delaySeconds": 5,
            },
            "not both",
        ),
    ],
)
def test_bad_job_requests_are_422(fixed_stack: Stack, body: dict[str, Any], field: str) -> None:
    """Unknown types, bad data and contradictory schedules are refused, naming the problem."""
    response = fixed_stack.http.post("/api/v1/jobs", json=body)
    assert response.status_code == 422
    assert field in response.json()["error"]["message"]


def test_unknown_job_and_batch_are_404(fixed_stack: Stack) -> None:
    """Status of an unknown job or batch is a JSON 404."""
    assert fixed_stack.http.get("/api/v1/jobs/nope").json()["error"]["code"] == "job_not_found"
    assert fixed_stack.http.get("/api/v1/batches/nope").status_code == 404


def test_jobs_need_a_key(fixed_stack: Stack) -> None:
    """Submitting and reading jobs are authenticated like queries."""
    response = httpx.post(
        fixed_stack.api + "/api/v1/jobs", json={"type": "priority-query", "data": {}}
    )
    assert response.status_code == 401
    assert httpx.get(fixed_stack.api + "/api/v1/jobs/x").status_code == 401


def test_scheduled_job_runs_no_earlier_than_asked(fixed_stack: Stack) -> None:
    """delaySeconds=2: the job waits as `queued` with its schedule, starts >= 2 s after it
    was enqueued, and calls back signed."""
    accepted = fixed_stack.submit(
        {
            "type": "scheduled-query",
            "data": {"prompt": "hi", "userId": "u1", "requestId": "sched-1"},
            "delaySeconds": 2,
            "callbackUrl": fixed_stack.receiver.base_url + "/scheduled",
        }
    )
    waiting = fixed_stack.http.get(accepted["statusUrl"]).json()
    assert waiting["status"] == "queued"
    assert waiting["scheduledAt"]
    status = fixed_stack.wait(accepted["jobId"])
    enqueued = datetime.fromisoformat(status["enqueuedAt"])
    started = datetime.fromisoformat(status["startedAt"])
    assert status["status"] == "complete"
    assert (started - enqueued).total_seconds() >= 2
    callback = fixed_stack.callback_for("sched-1")
    assert callback == {"requestId": "sched-1", "status": "completed", "response": status["result"]}


def test_batch_with_a_failing_item_completes_with_per_item_results(tmp_path: Path) -> None:
    """With the real model: one item overflows the context window (422), the other answers;
    the batch completes and its results are stored for an hour."""
    env = {"PRSM_ENGINE__CONTEXT_SIZE": "128"}
    with stack(tmp_path, api_env=env) as running:
        accepted = running.submit(
            {
                "type": "batch-query",
                "data": {
                    "batchId": "batch-7",
                    "queries": [
                        {"id": "short", "prompt": "Say hi.", "userId": "u1", "maxTokens": 4},
                        {"id": "long", "prompt": "word " * 400, "userId": "u1"},
                    ],
                },
                "callbackUrl": running.receiver.base_url + "/batch",
            }
        )
        status = running.wait(accepted["jobId"], timeout=60)
        results = running.http.get("/api/v1/batches/batch-7").json()
        ttl = redis.Redis.from_url(running.redis_url).ttl(results_key(API_KEY, "batch-7"))
        callback = running.callback_for("batch-7")
    assert status["status"] == "complete"
    assert status["result"] == {"batchId": "batch-7", "total": 2, "succeeded": 1, "failed": 1}
    by_id = {r["id"]: r for r in results}
    assert by_id["short"]["status"] == "success"
    assert by_id["short"]["response"]["answer"]
    assert by_id["long"]["status"] == "error"
    assert "maximum context length is 128 tokens" in by_id["long"]["error"]
    assert 3500 < ttl <= 3600
    assert callback == {"requestId": "batch-7", "status": "completed", "response": status["result"]}


def test_permanent_failure_is_final_inspectable_and_called_back(tmp_path: Path) -> None:
    """A worker whose API key is wrong: the job fails once (401 is not retried), its error
    stays readable without a traceback, and the callback says failed."""
    with stack(tmp_path, api_env={"PRSM_ENGINE__KIND": "fixed"}, worker=False) as running:
        env = worker_env(running.redis_url, running.api, PRSM_API_KEY="wrong-key")
        with prsm_worker(tmp_path, env):
            accepted = running.submit(
                {
                    "type": "priority-query",
                    "data": {"prompt": "hi", "userId": "u1", "requestId": "r-fail"},
                    "callbackUrl": running.receiver.base_url,
                }
            )
            status = running.wait(accepted["jobId"])
            callback = running.callback_for("r-fail")
    assert status["status"] == "failed"
    assert status["attempts"] == 1
    assert status["error"]["code"] == "invalid_credentials"
    assert "Traceback" not in json.dumps(status)
    assert callback["status"] == "failed"
    assert "invalid API key" in callback["error"]


WORKER_KEY = "worker-key-0123456789"


def key_id_of(api_key: str) -> str:
    """The id budgets name a caller with `api_key` by (the logs' `keyId`)."""
    principal = ApiKeyAuth([ApiKey.parse(api_key)]).lookup(api_key)
    assert principal is not None
    return principal.key_id


def tokens_counted(redis_url: str, api_key: str) -> int:
    """The tokens counted in the minute windows of `api_key`'s budget."""
    stored = redis.Redis.from_url(redis_url)
    tag = keys.owner_tag(identity_of(api_key))
    return sum(int(stored.get(key) or 0) for key in stored.keys(f"prsm:budget:{tag}:tokens-*"))


def job_token_in_redis(redis_url: str, job_id: str) -> str:
    """The token the worker shows for `job_id`, read where only a worker reads it: Redis."""
    stored = redis.Redis.from_url(redis_url)
    [key] = [k for k in stored.keys(f"saq:job:*{job_id}") if stored.type(k) == b"string"]
    return f"{job_id}.{json.loads(stored.get(key))['meta']['account']['token']}"


def test_a_jobs_queries_are_charged_to_its_submitter_not_the_worker(tmp_path: Path) -> None:
    """A worker whose own key may spend 1 token a minute runs a query job and a batch of two:
    all complete, and exactly their tokens are counted in the submitter's budget. The job
    token is refused when forged, and once its job is done."""
    api_env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_API_KEYS": f"{API_KEY},{WORKER_KEY},{OTHER_KEY}",
        "PRSM_BUDGETS__DEFAULT__TOKENS_PER_MINUTE": "5000",
        "PRSM_BUDGETS__CALLERS": json.dumps({key_id_of(WORKER_KEY): {"tokens_per_minute": 1}}),
        "PRSM_BUDGETS__MINUTE_SECONDS": "3600",
        "PRSM_JOBS__WORKER_CALLERS": key_id_of(WORKER_KEY),
    }
    batch = [{"id": str(n), "prompt": "what is " * n, "userId": "u1"} for n in (1, 2)]
    with stack(tmp_path, api_env=api_env, worker=False) as running:
        env = worker_env(running.redis_url, running.api, PRSM_API_KEY=WORKER_KEY)
        with prsm_worker(tmp_path, env):
            query = running.submit(
                {"type": "priority-query", "data": {"prompt": "hi", "userId": "u1"}}
            )
            batched = running.submit(
                {"type": "batch-query", "data": {"batchId": "charged", "queries": batch}}
            )
            answered = running.wait(query["jobId"])
            batched = running.wait(batched["jobId"])
            results = running.http.get("/api/v1/batches/charged").json()
        real = job_token_in_redis(running.redis_url, query["jobId"])
        refused = [
            httpx.post(
                running.api + "/api/v1/query",
                json={"prompt": "hi", "userId": "u1"},
                headers={"Authorization": f"Bearer {WORKER_KEY}", "X-PRSM-Job-Token": token},
                timeout=10,
            )
            for token in (f"{query['jobId']}.{'x' * 32}", real, "junk")
        ]
        not_a_worker = httpx.post(  # any other caller: refused whatever the token
            running.api + "/api/v1/query",
            json={"prompt": "hi", "userId": "u1"},
            headers={"Authorization": f"Bearer {OTHER_KEY}", "X-PRSM-Job-Token": real},
            timeout=10,
        )
        counted = tokens_counted(running.redis_url, API_KEY)
        counted_to_worker = tokens_counted(running.redis_url, WORKER_KEY)
    assert (answered["status"], batched["status"]) == ("complete", "complete")
    assert all(r["status"] == "success" for r in results), results
    spent = answered["result"]["usage"]["tokens"] + sum(
        r["response"]["usage"]["tokens"] for r in results
    )
    assert counted == spent
    assert counted_to_worker == 0
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [
        (403, "job_token_refused")
    ] * 3
    assert not_a_worker.status_code == 403
    assert "only a worker's credential" in not_a_worker.json()["error"]["message"]


def test_a_job_over_its_submitters_budget_waits_for_the_window(tmp_path: Path) -> None:
    """A budget with room for one query every 2 seconds, a query job and a batch of two at
    once: all complete in their first attempt, every refusal having sent its job back to the
    queue until the window's end (the worker's client does not wait in the job's slot); no query
    ran twice (3 answered in all: the batch went on from where it waited)."""
    api_env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_ANSWER": " ".join(["word"] * 20),
        "PRSM_BUDGETS__DEFAULT__TOKENS_PER_MINUTE": "15",
        "PRSM_BUDGETS__MINUTE_SECONDS": "2",
    }
    ask = {"prompt": "hi", "userId": "u1", "maxTokens": 10}  # 11 tokens reserved
    batch = [{"id": str(n)} | ask for n in range(2)]
    with stack(tmp_path, api_env=api_env, worker=False) as running:
        env = worker_env(running.redis_url, running.api)
        with prsm_worker(tmp_path, env):
            jobs = [
                running.submit({"type": "priority-query", "data": ask}),
                running.submit({"type": "batch-query", "data": {"batchId": "b", "queries": batch}}),
            ]
            finished = [running.wait(job["jobId"], timeout=30) for job in jobs]
            results = running.http.get("/api/v1/batches/b").json()
        answered = metric(running.api, "prsm_queries_total", 'status="200"')
        refused = metric(running.api, "prsm_budget_refused_total")
        waits = sum(log.read_text().count("job waits") for log in tmp_path.glob("worker-*.log"))
    assert [(f["status"], f["attempts"]) for f in finished] == [("complete", 1)] * 2
    assert [r["status"] for r in results] == ["success"] * 2
    assert answered == 3
    assert refused >= 2
    assert waits == refused  # each refusal went back to the queue, none waited in its slot


def test_job_over_its_timeout_is_retried_then_failed_with_a_clear_error(tmp_path: Path) -> None:
    """A job slower than jobs.timeout_seconds times out on each of its attempts; it ends
    `failed` with code job_timeout, and the failure callback is sent."""
    api_env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_DELAY_SECONDS": "3",
        "PRSM_JOBS__TIMEOUT_SECONDS": "1",
        "PRSM_JOBS__ATTEMPTS": "2",
    }
    with stack(tmp_path, api_env=api_env) as running:
        accepted = running.submit(
            {
                "type": "priority-query",
                "data": {"prompt": "hi", "userId": "u", "requestId": "slow"},
                "callbackUrl": running.receiver.base_url,
            }
        )
        status = running.wait(accepted["jobId"], timeout=30)
        callback = running.callback_for("slow")
        callbacks = running.callbacks()
    seen = f"status {status}, callbacks {callbacks}"
    assert status["status"] == "failed", seen
    assert status["attempts"] == 2, seen
    assert status["error"]["code"] == "job_timeout", seen
    assert callback["status"] == "failed", seen
    assert len(callbacks) == 1, seen


def test_transient_failures_are_retried_until_the_api_is_back(tmp_path: Path) -> None:
    """The API is down when the job first runs; it is retried with backoff and completes."""
    from tests.support import free_port

    port = free_port()
    with EmbeddedRedis(tmp_path / "redis") as redis_url, httpx.Client(headers=AUTH) as http:
        env = worker_env(
            redis_url,
            f"http://127.0.0.1:{port}",
            PRSM_RETRIES="0",
            PRSM_JOBS__ATTEMPTS="10",
            PRSM_JOBS__RETRY_DELAY_SECONDS="0.5",
        )
        api_env = {"PRSM_REDIS_URL": redis_url, "PRSM_ENGINE__KIND": "fixed"}
        with prsm_worker(tmp_path, env):
            # Submit through the library: the API that would take it over HTTP is down.
            import asyncio

            from prsm.config import JobSettings
            from prsm.jobs.schema import QueryJobRequest
            from prsm.jobs.submit import JobService
            from prsm.redis_client import connect_redis

            async def submit() -> str:
                client = connect_redis(redis_url)
                service = JobService(client, JobSettings(attempts=10, retry_delay_seconds=0.5))
                request = QueryJobRequest.model_validate(
                    {"type": "priority-query", "data": {"prompt": "hi", "userId": "u"}}
                )
                accepted = await service.submit(
                    request, "retry-cid", caller=identity_of(API_KEY), key_id=key_id_of(API_KEY)
                )
                await client.aclose()
                return accepted.job_id

            job_id = asyncio.run(submit())
            time.sleep(1.5)  # a few attempts fail against the closed port
            with prsm_serve(tmp_path, env=api_env, port=port):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    status = http.get(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}").json()
                    if status["status"] == "complete":
                        break
                    time.sleep(0.1)
    assert status["status"] == "complete"
    assert status["attempts"] >= 2


def test_sigkill_a_worker_mid_batch_loses_no_job(tmp_path: Path) -> None:
    """240 jobs; SIGKILL the worker part-way, start another: every job completes.
    Jobs the dead worker was running are run again (counted), none is lost."""
    api_env = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_DELAY_SECONDS": "0.1",
               "PRSM_ENGINE__CONCURRENCY": "16"}  # fmt: skip
    with stack(tmp_path, api_env=api_env, worker=False) as running:
        env = worker_env(running.redis_url, running.api)
        ids = [
            running.submit(
                {
                    "type": "priority-query",
                    "data": {"prompt": "hi", "userId": "u", "requestId": f"r{i}"},
                    "callbackUrl": running.receiver.base_url,
                }
            )["jobId"]
            for i in range(240)
        ]
        with prsm_worker(tmp_path, env) as first:
            deadline = time.monotonic() + 30
            while len(running.receiver.requests) < 60 and time.monotonic() < deadline:
                time.sleep(0.02)
            # Kill while queries are in the engine, so the worker surely has jobs running
            # (the worker takes jobs five at a time: right after a round it may hold none).
            while not engine_busy(running.api) and time.monotonic() < deadline:
                time.sleep(0.005)
            first.send_signal(signal.SIGKILL)
            first.wait()
        killed_after = len(running.receiver.requests)
        with prsm_worker(tmp_path, env):
            statuses = [running.wait(job_id, timeout=90) for job_id in ids]
            deadline = time.monotonic() + 15
            while len({b["requestId"] for _, b in running.callbacks()}) < 240 and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
        delivered = Counter(body["requestId"] for _, body in running.callbacks())
    assert 60 <= killed_after < 240, "the kill should land mid-batch"
    assert [s["status"] for s in statuses] == ["complete"] * 240
    assert set(delivered) == {f"r{i}" for i in range(240)}, "a job was lost"
    duplicates = sum(n - 1 for n in delivered.values())
    rerun = sum(1 for s in statuses if s["attempts"] > 1)
    print(f"killed after {killed_after} callbacks; re-run {rerun}; duplicates {duplicates}")
    assert duplicates <= 5  # at most the jobs in flight when the worker died (concurrency 5)
    assert rerun >= 1  # the kill really interrupted running jobs


def test_sigterm_lets_a_running_job_finish(tmp_path: Path) -> None:
    """A worker told to stop while a 2 s job runs: the job completes (one attempt), and the
    worker exits 0 as soon as it has."""
    env = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_DELAY_SECONDS": "2"}
    with stack(tmp_path, api_env=env, worker=False) as running:
        worker_settings = worker_env(running.redis_url, running.api)
        with prsm_worker(tmp_path, worker_settings) as worker:
            accepted = running.submit(JOB_BODY)
            wait_until_active(running, accepted["jobId"])
            worker.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            exit_code = worker.wait(timeout=30)
            took = time.monotonic() - signalled
            status = running.wait(accepted["jobId"], timeout=10)
    assert exit_code == 0
    assert (status["status"], status["attempts"]) == ("complete", 1)
    assert took < 6  # the job's 2 s, not the 30 s grace nor SAQ's 10 s upkeep timers


def test_a_job_longer_than_the_grace_goes_to_another_worker(tmp_path: Path) -> None:
    """A 4 s job, a worker with a 1 s shutdown grace told to stop: the job is put back and a
    second worker completes it; nothing is lost."""
    env = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_DELAY_SECONDS": "4"}
    with stack(tmp_path, api_env=env, worker=False) as running:
        short = worker_env(running.redis_url, running.api, PRSM_JOBS__SHUTDOWN_GRACE_SECONDS="1")
        with prsm_worker(tmp_path, short) as worker:
            accepted = running.submit(JOB_BODY)
            wait_until_active(running, accepted["jobId"])
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        assert running.http.get(accepted["statusUrl"]).json()["status"] != "complete"
        with prsm_worker(tmp_path, worker_env(running.redis_url, running.api)):
            status = running.wait(accepted["jobId"], timeout=30)
    assert status["status"] == "complete"
    assert status["attempts"] == 2


JOB_BODY = {"type": "priority-query", "data": {"prompt": "hi", "userId": "u1"}}


def wait_until_active(running: Stack, job_id: str) -> None:
    deadline = time.monotonic() + 15
    while running.http.get(f"/api/v1/jobs/{job_id}").json()["status"] != "active":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


async def test_one_trace_from_the_gateway_through_the_queue_to_the_callback(
    tmp_path: Path,
) -> None:
    """Spans exported over OTLP by the gateway, the API, the worker: the caller's trace runs
    gateway → API (submission) → the queue → the worker's attempt → its query → the API
    (query, engine) → the callback's `traceparent`, each span the child of the one before;
    the query's event carries the trace id."""
    trace_id, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    async with collector_app() as collector:
        otel["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.url
        api_env = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_ANSWER": "Paris."} | otel
        with (
            EmbeddedRedis(tmp_path / "redis") as redis_url,
            prsm_serve(tmp_path, env={"PRSM_REDIS_URL": redis_url} | api_env) as api,
            scripted_server(Reply(200)) as receiver,
            prsm_worker(tmp_path, worker_env(redis_url, api.base_url, **otel)),
        ):
            config = {"pools": {"api": {"discovery": {"kind": "static", "urls": [api.base_url]}}},
                      "routes": [{"prefix": "/api", "pool": "api"}]}  # fmt: skip
            with prsm_gateway(tmp_path, config, otel) as gateway:
                query = {"prompt": "Capital?", "userId": "u1", "requestId": "traced"}
                hook = receiver.base_url + "/hook"
                body = {"type": "priority-query", "callbackUrl": hook, "data": query}
                headers = AUTH | {"traceparent": f"00-{trace_id}-{caller}-01"}
                async with httpx.AsyncClient(base_url=gateway.base_url) as http:
                    accepted = await http.post("/api/v1/jobs", json=body, headers=headers)
                assert accepted.status_code == 202, accepted.text
                [engine] = await collector.wait_for("prsm.engine.generate")
                [job] = await collector.wait_for("prsm.job priority-query")
                await collector.wait_for("POST /api")  # the gateway's, before it stops
                await until_called_back(receiver)
            events = redis.Redis.from_url(redis_url).xrange(keys.EVENT_STREAM)
    spans = {span.name: span for span in collector.spans}
    chain = ["POST /api", "POST /api/v1/jobs", "prsm.job priority-query", "prsm.query",
             "POST /api/v1/query", "prsm.engine.generate"]  # fmt: skip
    assert {spans[name].trace_id.hex() for name in chain} == {trace_id}
    assert not [span for span in collector.spans if span.name in ("GET", "POST")]  # all named
    assert spans[chain[0]].parent_span_id.hex() == caller
    for parent, child in itertools.pairwise(chain):
        assert spans[child].parent_span_id == spans[parent].span_id, (parent, child)
    sent = {k.lower(): v for k, v in receiver.requests[0][1].items()}["traceparent"]
    assert sent.split("-")[1:3] == [trace_id, job.span_id.hex()]
    [event] = [json.loads(fields[b"data"]) for _, fields in events]
    assert event["traceId"] == trace_id
    assert engine.trace_id.hex() == trace_id


FIXED = {"PRSM_ENGINE__KIND": "fixed"}


def test_trace_headers_go_on_through_the_queue_without_tracing(tmp_path: Path) -> None:
    """No OTEL_* anywhere (in a mesh the sidecars make the spans): a job submitted with W3C,
    B3 and `x-request-id` headers sends each of them, unchanged, with its query to the API
    and with its callback."""
    incoming = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=opaque",
        "x-request-id": "5d8bd6c9-mesh-request",
        "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
        "x-b3-spanid": "e457b5a2e4d86bd1",
        "x-b3-parentspanid": "05e3ac9a4f6e3b90",
        "x-b3-sampled": "1",
    }
    answer = {"data": {"answer": "Paris.", "confidence": 1.0, "model": "m",
                       "usage": {"tokens": 2, "promptTokens": 1, "completionTokens": 1}},
              "correlationId": "c"}  # fmt: skip
    with (
        EmbeddedRedis(tmp_path / "redis") as redis_url,
        prsm_serve(tmp_path, env={"PRSM_REDIS_URL": redis_url} | FIXED) as api,
        scripted_server(Reply(200, json.dumps(answer).encode())) as api_for_the_worker,
        scripted_server(Reply(200)) as receiver,
        prsm_worker(tmp_path, worker_env(redis_url, api_for_the_worker.base_url)),
    ):
        body = {"type": "priority-query", "callbackUrl": receiver.base_url + "/hook",
                "data": {"prompt": "Capital?", "userId": "u1"}}  # fmt: skip
        accepted = httpx.post(api.base_url + "/api/v1/jobs", json=body, headers=AUTH | incoming)
        assert accepted.status_code == 202, accepted.text
        wait_for(lambda: bool(receiver.requests), 15)
    [(_, queried)] = api_for_the_worker.requests
    [(_, called_back)] = receiver.requests
    for sent in (queried, called_back):
        lowered = {name.lower(): value for name, value in sent.items()}
        assert {name: lowered.get(name) for name in incoming} == incoming


async def until_called_back(receiver: ScriptedServer) -> None:
    deadline = time.monotonic() + 15
    while not receiver.requests:
        assert time.monotonic() < deadline, "no callback arrived"
        await asyncio.sleep(0.05)
