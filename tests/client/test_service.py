"""ServiceClient over real `prsm serve` instances on loopback."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from prsm import errors as prsm_errors
from prsm.client.service import ServiceClient
from prsm.contracts import NOT_RUN_HEADER, SHARED_OUTAGE_HEADER
from prsm.errors import (
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    PRSMError,
    ServiceUnavailableError,
)
from prsm.resilience import BreakerConfig, CircuitOpenError
from prsm.sd import StaticDiscovery
from tests.support import API_KEY, Reply, ServerProcess, fixed_instances, free_port, scripted_server


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    with fixed_instances(tmp_path_factory.mktemp("trio"), "abc") as servers:
        yield servers


def discovery(servers: dict[str, ServerProcess]) -> StaticDiscovery:
    return StaticDiscovery(s.base_url for s in servers.values())


async def test_round_robin_spreads_calls_over_every_instance(
    trio: dict[str, ServerProcess],
) -> None:
    """Nine calls, three instances: three each, in turn."""
    async with ServiceClient(discovery(trio), api_key=API_KEY) as prsm:
        answers = [(await prsm.query("hi", user_id="u")).answer for _ in range(9)]
    assert Counter(answers) == {"a": 3, "b": 3, "c": 3}
    assert all(set(answers[i : i + 3]) == {"a", "b", "c"} for i in (0, 3, 6))


async def test_caller_errors_do_not_fail_over(trio: dict[str, ServerProcess]) -> None:
    """A 401 is raised at once: another instance would say the same."""
    async with ServiceClient(discovery(trio), api_key="wrong") as prsm:
        with pytest.raises(AuthenticationError):
            await prsm.query("hi", user_id="u")
    deadline = time.monotonic() + 5  # access lines are written just after the answer
    while (rejected := sum(s.log.count('"status": 401') for s in trio.values())) < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert sum(s.log.count('"status": 401') for s in trio.values()) == rejected == 1


async def test_sigkill_one_instance_under_load_loses_only_the_calls_it_held(tmp_path: Path) -> None:
    """Steady load from 8 callers; one instance is SIGKILLed mid-way. The queries it held had
    been sent, so they may have run: each ends with ConnectionLostError and is not resent
    (at most one per caller). Every call started after the kill succeeds on the others, and
    the dead instance is ejected and serves nothing."""
    with fixed_instances(tmp_path, "xyz", PRSM_ENGINE__FIXED_DELAY_SECONDS="0.01") as servers:
        answers: list[tuple[float, str]] = []
        errors: list[tuple[float, BaseException]] = []
        stop_at = time.monotonic() + 4

        async def caller(prsm: ServiceClient) -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    result = await prsm.query("hi", user_id="u")
                except Exception as exc:  # the test counts every failure
                    errors.append((started, exc))
                else:
                    answers.append((time.monotonic(), result.answer))

        async def killer() -> float:
            await asyncio.sleep(1.5)
            servers["y"].process.send_signal(signal.SIGKILL)
            return time.monotonic()

        async with ServiceClient(discovery(servers), api_key=API_KEY, timeout=5) as prsm:
            results = await asyncio.gather(killer(), *(caller(prsm) for _ in range(8)))
    killed_at = results[0]
    assert len(errors) <= 8
    assert all(isinstance(exc, ConnectionLostError) for _, exc in errors), errors
    assert all(started < killed_at + 0.5 for started, _ in errors), errors
    before = Counter(a for t, a in answers if t < killed_at)
    late = Counter(a for t, a in answers if t > killed_at + 0.5)
    assert set(before) == {"x", "y", "z"}
    assert late["y"] == 0
    assert late["x"] > 0
    assert late["z"] > 0
    assert len(answers) > 200


async def test_no_instance_reachable_is_a_connect_error_then_the_breaker_opens() -> None:
    """Nothing listens: each call fails over, gives up with ConnectError; after enough of
    those the service breaker refuses calls outright."""
    dead = StaticDiscovery([f"http://127.0.0.1:{free_port()}" for _ in range(2)])
    config = BreakerConfig(minimum_calls=2, call_timeout=None, reset_timeout=60)
    async with ServiceClient(dead, api_key=API_KEY, breaker=config, timeout=1) as prsm:
        for _ in range(2):
            with pytest.raises(ConnectError):
                await prsm.query("hi", user_id="u")
        with pytest.raises(CircuitOpenError):
            await prsm.query("hi", user_id="u")


async def test_an_outage_every_instance_shares_is_not_held_against_any() -> None:
    """Both instances answer 503 marked `X-PRSM-Shared-Outage` (their Redis is down): each call
    ends at the first instance with its 503 and Retry-After — the other would say the same —
    and however many calls, no breaker opens: when Redis is back, every instance is called."""
    marks = {SHARED_OUTAGE_HEADER: "true", NOT_RUN_HEADER: "true", "retry-after": "1"}
    outage = Reply(503, b'{"error": {"code": "budget_unavailable", "message": "Redis"}}', marks)
    config = BreakerConfig(minimum_calls=2, call_timeout=None, reset_timeout=60)
    with scripted_server(outage) as a, scripted_server(outage) as b:
        instances = StaticDiscovery([a.base_url, b.base_url])
        async with ServiceClient(instances, api_key=API_KEY, breaker=config) as prsm:
            for _ in range(6):
                with pytest.raises(ServiceUnavailableError) as refused:
                    await prsm.query("hi", user_id="u")
                assert refused.value.retry_after == 1
        assert len(a.requests) == len(b.requests) == 3


async def test_calls_are_recorded_in_the_spec_client_metrics(
    trio: dict[str, ServerProcess],
) -> None:
    """Each call counts in prsm_queries_total and its duration histogram, tokens in
    prsm_tokens_used_total, under the client's service and tier; connections return to 0."""
    from prometheus_client import REGISTRY

    labels = {"service": "metrics-svc", "method": "query", "status": "200", "user_tier": "gold"}
    async with ServiceClient(
        discovery(trio), service="metrics-svc", api_key=API_KEY, user_tier="gold"
    ) as prsm:
        results = [await prsm.query("hi there", user_id="u") for _ in range(4)]
    assert REGISTRY.get_sample_value("prsm_queries_total", labels) == 4
    assert REGISTRY.get_sample_value("prsm_query_duration_seconds_count", labels) == 4
    tokens = {"service": "metrics-svc", "user_tier": "gold", "model": "fixed"}
    assert REGISTRY.get_sample_value("prsm_tokens_used_total", tokens) == sum(
        r.usage.tokens for r in results
    )
    for server in trio.values():
        active = {"service": "metrics-svc", "instance": server.base_url}
        assert REGISTRY.get_sample_value("prsm_active_connections", active) == 0


async def test_the_overall_deadline_is_a_prsm_timeout_error(tmp_path: Path) -> None:
    """An instance slower than the call's deadline: the caller gets prsm's TimeoutError (a
    PRSMError), not Python's bare TimeoutError."""
    slow = {"PRSM_ENGINE__FIXED_DELAY_SECONDS": "5"}
    with fixed_instances(tmp_path, "s", **slow) as servers:
        client = ServiceClient(
            StaticDiscovery([servers["s"].base_url]), api_key=API_KEY, timeout=10, deadline=0.5
        )
        async with client:
            with pytest.raises(PRSMError) as caught:
                await client.query("hi", user_id="u1")
    assert isinstance(caught.value, prsm_errors.TimeoutError)
    assert "deadline" in str(caught.value)
