"""One way to name a Redis: a server's URL or a Sentinel deployment's; a client made from a
Sentinel URL follows its master across a failover without a restart (real sentinels)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import RedisError

from prsm.config import load_settings
from prsm.embedded_redis import SentinelDeployment
from prsm.errors import ConfigError
from prsm.redis_client import connect_redis, parse_sentinel_url
from tests.support import (
    API_KEY,
    prsm_serve,
    prsm_worker,
    wait_for,
    worker_env,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_a_sentinel_url_names_its_sentinels_master_db_and_passwords() -> None:
    """Addresses, master and database from the URL; the passwords from the settings when the
    URL names none, each in its place (the data servers', the sentinels')."""
    settings = load_settings(
        redis_url="redis+sentinel://s1:26379,[::1]:26380/prsm/2",
        redis_password="data pw",
        redis_sentinel_password="s&p",
    )
    assert settings.redis_url is not None
    target = parse_sentinel_url(settings.redis_url)
    assert target.sentinels == (("s1", 26379), ("::1", 26380))
    assert (target.master, target.db) == ("prsm", 2)
    assert (target.password, target.sentinel_password) == ("data pw", "s&p")
    assert "data pw" not in repr(target)


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://s1:26379", "redis+sentinel://s1/prsm", "redis+sentinel://s1:x/prsm",
     "redis+sentinel://s1:26379/prsm/zero", "redis+sentinel://:secret@/prsm"],
)  # fmt: skip
def test_a_malformed_sentinel_url_says_what_it_should_be(url: str) -> None:
    """No master, no port, a port or database that is no number, no sentinel: a ConfigError
    that never repeats the URL's password."""
    with pytest.raises(ConfigError) as refused:
        parse_sentinel_url(url)
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize("switch", ["kill", "failover"])
async def test_a_client_reaches_the_new_master_soon_after_the_switch(
    deployment: SentinelDeployment, switch: str
) -> None:
    """One client made once from the Sentinel URL, its pool holding several connections to
    the master, across a master SIGKILL or a `SENTINEL FAILOVER`. Within 3 s of the switch (a
    new master named and the old one dead or its replica) its writes reach the new master:
    its retries ask the sentinels again rather than redial the old address until they run
    out (redis-py #3874, #3560), and the connections kept to a demoted master (the sentinels
    close them; one that slipped through would be answered READONLY, #435) are made again to
    the new one. What was written before and replicated is there."""
    client = connect_redis(deployment.url)
    await client.set("before", "1")
    await client.wait(2, 2000)  # on both replicas
    await asyncio.gather(*(client.ping() for _ in range(5)))  # connections kept in the pool
    old = deployment.master_port()
    deployment.kill(old) if switch == "kill" else deployment.failover()
    wait_for(lambda: deployment.master_port() != old and not _serves_as_master(old), 30)
    switched = time.monotonic()
    while True:
        try:
            await client.set("after", "1")
            server = await client.info("server")
            if int(server["tcp_port"]) != old:
                break
        except (RedisError, OSError):
            pass
        assert time.monotonic() - switched < 3, "the client missed the new master 3 s on"
        await asyncio.sleep(0.05)
    assert int(server["tcp_port"]) == deployment.master_port()
    assert await client.get("before") == b"1"
    await client.aclose()


def _serves_as_master(port: int) -> bool:
    """Whether a server answers on `port` as a master."""
    import redis

    try:
        with redis.Redis(port=port, socket_timeout=1) as server:
            return bool(server.info("replication")["role"] == "master")
    except (RedisError, OSError):
        return False


def test_the_api_and_a_worker_on_sentinel_run_jobs_across_a_master_kill(
    deployment: SentinelDeployment, tmp_path: Path
) -> None:
    """`prsm serve` and `prsm worker` given the Sentinel URL: a job completes; the master is
    SIGKILLed; submissions and budgeted queries are refused meanwhile with 503 and
    `Retry-After` — never a 500, also while the sentinels elect and name no master
    (`MasterNotFoundError`, redis-py #3731) — accepted again within 15 s, and the job then
    submitted completes — no process restarted."""
    env = {"PRSM_REDIS_URL": deployment.url, "PRSM_ENGINE__KIND": "fixed",
           "PRSM_BUDGETS__DEFAULT__REQUESTS_PER_MINUTE": "10000"}  # fmt: skip
    job = {"type": "priority-query", "data": {"prompt": "hi", "userId": "u1"}}
    with (
        prsm_serve(tmp_path, env=env) as api,
        prsm_worker(tmp_path, worker_env(deployment.url, api.base_url)),
        httpx.Client(base_url=api.base_url, headers=AUTH, timeout=10) as http,
    ):
        assert completes(http, http.post("/api/v1/jobs", json=job).json())
        deployment.kill(deployment.master_port())
        killed, refusals = time.monotonic(), []
        while (accepted := http.post("/api/v1/jobs", json=job)).status_code != 202:
            refusals.append(accepted)
            if (queried := http.post("/api/v1/query", json=job["data"])).status_code != 200:
                refusals.append(queried)  # (the master may be back between the two)
            assert time.monotonic() - killed < 15, [r.text for r in refusals[-3:]]
            time.sleep(0.2)
        assert completes(http, accepted.json())
        assert http.post("/api/v1/query", json=job["data"]).status_code == 200
    assert all(r.status_code == 503 and "retry-after" in r.headers for r in refusals)
    codes = {r.json()["error"]["code"] for r in refusals}
    assert codes == {"jobs_unavailable", "budget_unavailable"}


def completes(http: httpx.Client, accepted: dict[str, str]) -> bool:
    """Whether the job `accepted` names completes within 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if http.get(accepted["statusUrl"]).json()["status"] == "complete":
            return True
        time.sleep(0.1)
    return False


def test_a_master_refusing_writes_is_an_outage_not_a_500(
    deployment: SentinelDeployment, tmp_path: Path
) -> None:
    """`min-replicas-to-write 1` on the master and its replicas gone: every write is refused
    (NOREPLICAS). A job submission and a budgeted query are 503 with `Retry-After` (as for a
    Redis that is down), never a 500, marked as an outage every instance shares; no job is
    claimed as queued."""
    import redis

    master = redis.Redis(port=deployment.master_port())
    master.config_set("min-replicas-to-write", 1)
    master.config_set("min-replicas-max-lag", 2)
    for replica in deployment.data_ports[1:]:
        deployment.kill(replica)
    wait_for(lambda: _refuses_writes(master), 15)
    env = {"PRSM_REDIS_URL": deployment.url, "PRSM_ENGINE__KIND": "fixed",
           "PRSM_BUDGETS__DEFAULT__TOKENS_PER_MINUTE": "1000"}  # fmt: skip
    with prsm_serve(tmp_path, env=env) as api:
        job = {"type": "priority-query", "data": {"prompt": "hi", "userId": "u1"}}
        submitted = httpx.post(api.base_url + "/api/v1/jobs", json=job, headers=AUTH)
        query = httpx.post(api.base_url + "/api/v1/query", json=job["data"], headers=AUTH)
    assert (submitted.status_code, submitted.json()["error"]["code"]) == (503, "jobs_unavailable")
    assert (query.status_code, query.json()["error"]["code"]) == (503, "budget_unavailable")
    assert "retry-after" in submitted.headers
    assert "retry-after" in query.headers
    # Every instance shares this Redis: a gateway passes these on instead of blaming this one.
    assert submitted.headers["x-prsm-shared-outage"] == query.headers["x-prsm-shared-outage"]
    assert query.headers["x-prsm-shared-outage"] == "true"
    master.close()


def _refuses_writes(master: Any) -> bool:
    from redis.exceptions import ResponseError

    try:
        master.set("probe", "1")
    except ResponseError as exc:
        return "NOREPLICAS" in str(exc)
    return False


def test_no_acknowledged_job_is_lost_in_a_manual_failover(
    deployment: SentinelDeployment, tmp_path: Path
) -> None:
    """`redis_confirm_replicas` = every replica (2): submissions go on while `SENTINEL FAILOVER`
    switches masters — the old one keeps taking writes a while, which the switch then
    discards, and the replica not promoted keeps confirming them (with 1, jobs were lost). Every
    job answered 202 is found after the switch; the others were 503 + `Retry-After`."""
    env = {"PRSM_REDIS_URL": deployment.url, "PRSM_ENGINE__KIND": "fixed",
           "PRSM_REDIS_CONFIRM_REPLICAS": "2"}  # fmt: skip
    job = {"type": "scheduled-query", "delaySeconds": 3600, "data": {"prompt": "hi", "userId": "u"}}
    old = deployment.master_port()
    acknowledged, refused = [], []
    with (
        prsm_serve(tmp_path, env=env) as api,
        httpx.Client(base_url=api.base_url, headers=AUTH) as http,
    ):
        submitted_after_switch = 0
        deployment.failover()
        deadline = time.monotonic() + 30
        while submitted_after_switch < 50:  # the switch, then writes to the new master
            assert time.monotonic() < deadline, "the failover did not end within 30 s"
            answer = http.post("/api/v1/jobs", json=job)
            if answer.status_code == 202:
                acknowledged.append(answer.json()["jobId"])
                switched = deployment.master_port() != old
                submitted_after_switch += switched
            else:
                refused.append(answer)
        wait_for(lambda: _replicates_from(old, deployment.master_port()), 20)
        found = [http.get(f"/api/v1/jobs/{job_id}").status_code for job_id in acknowledged]
    assert found == [200] * len(acknowledged)
    assert all(r.status_code == 503 and "retry-after" in r.headers for r in refused)


def test_no_query_beyond_its_budget_is_admitted_across_a_manual_failover(
    deployment: SentinelDeployment, tmp_path: Path
) -> None:
    """`redis_confirm_replicas` = every replica, a budget of 150 requests: queries go on
    across `SENTINEL FAILOVER` — while the old master still takes charges the switch will
    discard — and after it, until the new master refuses one for the budget. At most 150 were
    admitted (without confirming, some 200 were); the others were 429 or 503."""
    env = {"PRSM_REDIS_URL": deployment.url, "PRSM_ENGINE__KIND": "fixed",
           "PRSM_REDIS_CONFIRM_REPLICAS": "2", "PRSM_BUDGETS__MINUTE_SECONDS": str(10**9),
           "PRSM_BUDGETS__DEFAULT__REQUESTS_PER_MINUTE": "150"}  # fmt: skip
    query = {"prompt": "hi", "userId": "u"}
    old = deployment.master_port()
    statuses: list[int] = []
    with (
        prsm_serve(tmp_path, env=env) as api,
        httpx.Client(base_url=api.base_url, headers=AUTH) as http,
    ):
        statuses += [http.post("/api/v1/query", json=query).status_code for _ in range(60)]
        deployment.failover()
        deadline = time.monotonic() + 40
        while not _replicates_from(old, deployment.master_port()):  # the old master demoted
            assert time.monotonic() < deadline, "the failover did not end within 40 s"
            statuses.append(http.post("/api/v1/query", json=query).status_code)
        while statuses[-1] != 429:  # then on the new master until the budget refuses
            assert time.monotonic() < deadline, "no refusal for the budget on the new master"
            statuses.append(http.post("/api/v1/query", json=query).status_code)
    assert statuses.count(200) <= 150
    assert set(statuses) <= {200, 429, 503}


def test_a_job_no_replica_confirms_is_not_acknowledged(
    deployment: SentinelDeployment, tmp_path: Path
) -> None:
    """`redis_confirm_replicas: 1` and the replicas gone: the master takes the write, no
    replica confirms it, so the submission is 503 `jobs_unavailable` saying the job may run;
    a retry with its Idempotency-Key finds that job but is not acknowledged either while no
    replica holds it."""
    for replica in deployment.data_ports[1:]:
        deployment.kill(replica)
    env = {"PRSM_REDIS_URL": deployment.url, "PRSM_ENGINE__KIND": "fixed",
           "PRSM_REDIS_CONFIRM_REPLICAS": "1"}  # fmt: skip
    job = {"type": "priority-query", "data": {"prompt": "hi", "userId": "u1"}}
    keyed = AUTH | {"Idempotency-Key": "k1"}
    with prsm_serve(tmp_path, env=env) as api:
        submitted = httpx.post(api.base_url + "/api/v1/jobs", json=job, headers=keyed)
        again = httpx.post(api.base_url + "/api/v1/jobs", json=job, headers=keyed)
    assert (submitted.status_code, submitted.json()["error"]["code"]) == (503, "jobs_unavailable")
    assert "may run" in submitted.json()["error"]["message"]
    assert "retry-after" in submitted.headers
    # The retry finds the job the first left on the master: still unconfirmed, still 503.
    assert (again.status_code, again.json()["error"]["code"]) == (503, "jobs_unavailable")


def test_a_charge_no_replica_confirms_is_refused_and_taken_back(
    deployment: SentinelDeployment, tmp_path: Path
) -> None:
    """`redis_confirm_replicas: 1`, a budget, the replicas gone: each budgeted query is 503
    `budget_unavailable` (never admitted on a charge a failover could lose), and its charge is
    taken back: refused queries do not use up the budget."""
    import redis

    for replica in deployment.data_ports[1:]:
        deployment.kill(replica)
    env = {"PRSM_REDIS_URL": deployment.url, "PRSM_ENGINE__KIND": "fixed",
           "PRSM_REDIS_CONFIRM_REPLICAS": "1",
           "PRSM_BUDGETS__DEFAULT__REQUESTS_PER_MINUTE": "5"}  # fmt: skip
    with prsm_serve(tmp_path, env=env) as api:
        answers = [
            httpx.post(api.base_url + "/api/v1/query", json={"prompt": "hi", "userId": "u"},
                       headers=AUTH)
            for _ in range(3)
        ]  # fmt: skip
    assert {(a.status_code, a.json()["error"]["code"]) for a in answers} == {
        (503, "budget_unavailable")
    }
    with redis.Redis(port=deployment.master_port()) as master:
        counts = [int(master.get(key) or 0) for key in master.scan_iter("*budget*")]
    assert counts  # the charges were made
    assert set(counts) == {0}  # and taken back


def _replicates_from(port: int, master: int) -> bool:
    """Whether the server on `port` is a replica of `master`, in sync."""
    import redis

    with redis.Redis(port=port) as server:
        info = server.info("replication")
    return (
        info["role"] == "slave"
        and info["master_port"] == master
        and info["master_link_status"] == "up"
    )
