"""Token budgets with real processes: three API instances on one Redis admit no more than a
caller's budget in all and nearly all of it; another caller is unaffected; refusals are 429
with `Retry-After` (OpenAI's `rate_limit_error` on /v1) and every answer carries OpenAI's
rate-limit headers; the window rolls over; an instance killed with a reservation open does
not hold budget past its window."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis
import redis.asyncio as aioredis

from prsm.config import load_settings
from prsm.embedded_redis import EmbeddedRedis
from tests.conftest import api_client
from tests.support import (
    API_KEY,
    ServerProcess,
    free_port,
    idle_soon,
    metric,
    prsm_serve,
    wait_for,
)

OTHER_KEY = "other-key-0123456789"
LONG_ANSWER = " ".join(["word"] * 400)  # answers always run to their maxTokens


def budgeted(redis: EmbeddedRedis, tokens_per_minute: int, **more: str) -> dict[str, str]:
    return {
        "PRSM_REDIS_URL": redis.url,
        "PRSM_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_ANSWER": LONG_ANSWER,
        "PRSM_BUDGETS__DEFAULT__TOKENS_PER_MINUTE": str(tokens_per_minute),
    } | more


@contextlib.contextmanager
def instances(tmp_path: Path, env: dict[str, str], count: int) -> Iterator[list[ServerProcess]]:
    with contextlib.ExitStack() as stack:
        servers = []
        for n in range(count):
            (tmp_path / str(n)).mkdir()
            servers.append(stack.enter_context(prsm_serve(tmp_path / str(n), env=env)))
        yield servers


def query(words: int, max_tokens: int) -> dict[str, object]:
    return {"prompt": " ".join(["ask"] * words), "userId": "u1", "maxTokens": max_tokens}


def test_three_instances_admit_the_budget_and_no_more(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """60 queries of mixed sizes at once from one key, spread over three instances, against
    2,000 tokens a minute: the tokens of the answered ones are at most 2,000 and at least 90 %
    of it; the refused are 429 with Retry-After and the headers; another key is unaffected."""
    rng = random.Random(7)
    sizes = [(rng.randint(3, 30), rng.randint(10, 60)) for _ in range(60)]
    env = budgeted(redis_server, 2000, PRSM_BUDGETS__MINUTE_SECONDS="3600")
    with instances(tmp_path, env, 3) as servers:

        async def burst(key: str) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as http:
                calls = [
                    http.post(
                        servers[n % 3].base_url + "/api/v1/query",
                        json=query(*size),
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for n, size in enumerate(sizes)
                ]
                return await asyncio.gather(*calls)

        answers = asyncio.run(burst(API_KEY))
        other = asyncio.run(burst(OTHER_KEY))
    answered = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    used = sum(a.json()["data"]["usage"]["tokens"] for a in answered)
    assert 1800 <= used <= 2000, used
    assert {a.status_code for a in refused} == {429}
    assert all(a.json()["error"]["code"] == "budget_exceeded" for a in refused)
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert all(a.headers["x-ratelimit-limit-tokens"] == "2000" for a in answers)
    other_used = sum(a.json()["data"]["usage"]["tokens"] for a in other if a.status_code == 200)
    assert 1800 <= other_used <= 2000  # its own budget, untouched by the first key's


def test_openai_clients_see_a_rate_limit_error_and_the_window_rolls_over(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """A budget of 100 tokens in 2-second windows: on /v1 the official client raises its
    RateLimitError (OpenAI's `rate_limit_error`, `Retry-After`); after the window, admitted
    again, the refusal's headers giving each window's own count. A reservation an instance was
    killed holding is gone with its window. A query that
    may cost more than a whole window is 400 `budget_too_small`: no wait would help."""
    env = budgeted(redis_server, 100, PRSM_BUDGETS__MINUTE_SECONDS="2",
                   PRSM_BUDGETS__DEFAULT__REQUESTS_PER_MINUTE="50",
                   PRSM_ENGINE__FIXED_DELAY_SECONDS="30")  # fmt: skip
    with instances(tmp_path, env, 1) as [server]:
        # A query reserving 8 + 80 tokens, then its instance SIGKILLed mid-answer.
        killer = asyncio.run(_start_and_kill(server))
        assert killer
    env["PRSM_ENGINE__FIXED_DELAY_SECONDS"] = "0"
    (tmp_path / "second").mkdir()
    with prsm_serve(tmp_path / "second", env=env) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0)
        ask = {"model": "fixed", "messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 60}  # fmt: skip
        wait_for(lambda: _admitted(client, ask), 6)  # the killed one's window has ended
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(**ask)  # type: ignore[call-overload]
        assert refused.value.code == "budget_exceeded"
        assert int(refused.value.response.headers["retry-after"]) <= 2
        # Each window's own count: the requests window, not the full one, has room left.
        assert int(refused.value.response.headers["x-ratelimit-remaining-requests"]) < 50
        wait_for(lambda: _admitted(client, ask), 6)  # the next window
        with pytest.raises(openai.BadRequestError) as too_big:  # no window could admit it
            client.chat.completions.create(**ask | {"max_tokens": 120})  # type: ignore[call-overload]
        assert too_big.value.code == "budget_too_small"


def _admitted(client: openai.OpenAI, ask: dict[str, object]) -> bool:
    try:
        client.chat.completions.create(**ask)  # type: ignore[call-overload]
    except openai.RateLimitError:
        return False
    return True


async def _start_and_kill(server: ServerProcess) -> bool:
    """Start a long query, SIGKILL the instance once it is being answered; whether it was."""
    async with httpx.AsyncClient(timeout=5) as http:
        call = asyncio.ensure_future(http.post(
            server.base_url + "/api/v1/query", json=query(8, 80),
            headers={"Authorization": f"Bearer {API_KEY}"},
        ))  # fmt: skip
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            metrics = (await http.get(server.base_url + "/metrics")).text
            if (
                "prsm_engine_in_flight{" in metrics
                and "} 1.0" in metrics.split("prsm_engine_in_flight{")[1].split("\n")[0]
            ):
                server.process.send_signal(signal.SIGKILL)
                with contextlib.suppress(httpx.HTTPError):
                    await call
                return True
            await asyncio.sleep(0.05)
    return False


def test_streams_their_callers_leave_are_charged_what_they_received(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """Three chat streams of `max_tokens` 60 (OpenAI's client), each closed by its caller
    after 20 words: each is charged its prompt and at least the 20 tokens it received, not
    its prompt alone (a caller must not buy answers by leaving early)."""
    # 60 words in 6 s: 0.1 s a word, so a caller leaves well before the answer's end.
    env = budgeted(redis_server, 300, PRSM_BUDGETS__MINUTE_SECONDS="3600",
                   PRSM_ENGINE__FIXED_DELAY_SECONDS="6")  # fmt: skip
    counted = redis.Redis.from_url(redis_server.url)
    counted.flushall()  # the session's Redis: other tests' windows are still counting
    prompt = [{"role": "user", "content": "say many words"}]  # 3 tokens to the fixed engine
    with prsm_serve(tmp_path, env=env) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0)
        for _ in range(3):
            stream = client.chat.completions.create(
                model="fixed",
                messages=prompt,
                max_tokens=60,
                stream=True,  # type: ignore[arg-type]
            )
            received = 0
            for chunk in stream:
                received += bool(chunk.choices and chunk.choices[0].delta.content)
                if received == 20:
                    break
            stream.close()
        idle_soon(server.base_url)
        wait_for(lambda: _tokens_counted(counted) < 3 * (3 + 60), 5)  # all three settled
    assert 3 * (3 + 20) <= _tokens_counted(counted) < 3 * (3 + 60)


def test_a_cache_hit_costs_nothing_and_says_what_remains(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """With the response cache on, the same query twice: the hit reserves nothing, and its
    rate-limit headers say what the miss left."""
    env = budgeted(redis_server, 1000, PRSM_BUDGETS__MINUTE_SECONDS="3600",
                   PRSM_CACHE__ENABLED="true")  # fmt: skip
    redis.Redis.from_url(redis_server.url).flushall()
    with prsm_serve(tmp_path, env=env) as server:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        url = server.base_url + "/api/v1/query"
        miss, hit = (httpx.post(url, json=query(5, 20), headers=auth, timeout=30) for _ in "ab")
    assert (miss.headers["x-prsm-cache"], hit.headers["x-prsm-cache"]) == ("miss", "hit")
    used = miss.json()["data"]["usage"]["tokens"]
    assert used == 25
    assert hit.headers["x-ratelimit-remaining-tokens"] == str(1000 - used)
    assert hit.headers["x-ratelimit-limit-tokens"] == "1000"


def _tokens_counted(stored: redis.Redis) -> int:
    return sum(int(stored.get(key) or 0) for key in stored.keys("prsm:budget:*:tokens-*"))


@pytest.mark.parametrize(("choice", "status"), [("refuse", 503), ("admit", 200)])
def test_redis_unreachable_refuses_or_admits_as_configured(
    tmp_path: Path, choice: str, status: int
) -> None:
    """Budgets whose Redis is down: `refuse` (the default) is 503 `budget_unavailable` with
    Retry-After; `admit` answers, counted as admitted uncounted."""
    env = {
        "PRSM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_BUDGETS__DEFAULT__TOKENS_PER_MINUTE": "1000",
        "PRSM_BUDGETS__ON_REDIS_DOWN": choice,
    }
    with prsm_serve(tmp_path, env=env, ready_path="/health") as server:
        answer = httpx.post(server.base_url + "/api/v1/query", json=query(3, 10),
                            headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)  # fmt: skip
        uncounted = metric(server.base_url, "prsm_budget_uncounted_total")
    assert answer.status_code == status
    if choice == "refuse":
        assert answer.json()["error"]["code"] == "budget_unavailable"
        assert answer.headers["retry-after"] == "1"
    else:
        assert uncounted == 1


async def test_a_budget_on_one_model_limits_it_and_not_the_others(
    redis: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    """`budgets.default.models.big`: queries to `big` (by id or alias) stop at its limit,
    named in the 429; `small` goes on answering from the caller's whole budget."""
    settings = load_settings(
        api_keys=API_KEY,
        redis_url=redis_server.url,
        models=[
            {"name": "small", "kind": "fixed", "fixed_answer": "one two"},
            {"name": "big", "kind": "fixed", "fixed_answer": "one two", "aliases": ["gpt-4o"]},
        ],
        budgets={
            "default": {"tokens_per_minute": 1000, "models": {"big": {"requests_per_minute": 2}}}
        },
    )
    async with api_client(settings) as client:
        asked = [
            await client.post("/api/v1/query", json={"prompt": "hi", "userId": "u", "model": m})
            for m in ("big", "gpt-4o", "big", "small", "small")
        ]
    assert [a.status_code for a in asked] == [200, 200, 429, 200, 200]
    assert "big requests budget" in asked[2].json()["error"]["message"]
    assert asked[3].headers["x-ratelimit-limit-tokens"] == "1000"
