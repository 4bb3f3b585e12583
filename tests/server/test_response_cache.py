"""The response cache with real processes and a real Redis: a repeated deterministic query is
answered from the cache (whole and streamed alike), never across tenants, never for sampling
without a seed, honouring `Cache-Control`; a change of model misses; identical queries arriving
together compute once; Redis down is a miss, not an error."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from prsm.config import CacheSettings
from prsm.embedded_redis import EmbeddedRedis
from prsm.engines import Generation
from prsm.server.response_cache import Lookup, ResponseCache
from prsm.up import EMBEDDING_MODEL
from tests.support import API_KEY, ServerProcess, free_port, metric, prsm_serve

OTHER_KEY = "other-key-0123456789"
CACHED = {"PRSM_CACHE__ENABLED": "true", "PRSM_ENGINE__KIND": "fixed",
          "PRSM_ENGINE__FIXED_ANSWER": "Paris is the capital.",
          "PRSM_ENGINE__FIXED_DELAY_SECONDS": "0.3"}  # fmt: skip
_numbers = itertools.count()


@pytest.fixture(scope="module")
def cached(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[ServerProcess]:
    """A fixed engine taking 0.3 s an answer and the embedding model, the cache on, two
    callers' keys."""
    env = CACHED | {"PRSM_REDIS_URL": redis_server.url, "PRSM_API_KEYS": f"{API_KEY},{OTHER_KEY}",
                    "PRSM_MODELS": json.dumps([{}, EMBEDDING_MODEL])}  # fmt: skip
    with prsm_serve(tmp_path_factory.mktemp("cache"), env=env) as server:
        yield server


def ask(server: ServerProcess, path: str, body: dict[str, Any], key: str = API_KEY,
        **headers: str) -> httpx.Response:  # fmt: skip
    headers |= {"Authorization": f"Bearer {key}"}
    return httpx.post(server.base_url + path, json=body, headers=headers, timeout=30)


def fresh() -> str:
    """A question no earlier test asked."""
    return f"Question number {next(_numbers)}: what is the capital of France?"


def generations(server: ServerProcess) -> float:
    """Answers the engine produced (its time-to-first-token count)."""
    return metric(server.base_url, "prsm_time_to_first_token_seconds_count")


def test_embeddings_are_kept_per_caller_and_read_back(cached: ServerProcess) -> None:
    """The same texts again: a hit with the same vectors; another caller, or `no-store`,
    computes its own."""
    body = {"model": EMBEDDING_MODEL["name"], "input": [fresh(), "and a second text"]}
    first, again = (ask(cached, "/v1/embeddings", body) for _ in range(2))
    other = ask(cached, "/v1/embeddings", body, key=OTHER_KEY)
    unstored = ask(cached, "/v1/embeddings", body, **{"Cache-Control": "no-store"})
    assert [r.headers["x-prsm-cache"] for r in (first, again, other)] == ["miss", "hit", "miss"]
    assert "x-prsm-cache" not in unstored.headers or unstored.headers["x-prsm-cache"] == "miss"
    assert again.json()["data"] == first.json()["data"]
    assert again.json()["usage"] == first.json()["usage"]


def test_a_repeated_query_is_answered_from_the_cache(cached: ServerProcess) -> None:
    """The same query twice: a miss computed by the engine, then a hit that is not, with the
    same answer (only the correlation id differs); another caller misses."""
    body = {"prompt": fresh(), "userId": "u1"}
    before = generations(cached)
    first = ask(cached, "/api/v1/query", body)
    second = ask(cached, "/api/v1/query", body)
    assert (first.headers["x-prsm-cache"], second.headers["x-prsm-cache"]) == ("miss", "hit")
    assert generations(cached) == before + 1
    assert _without_ids(second.text) == _without_ids(first.text)
    other = ask(cached, "/api/v1/query", body, key=OTHER_KEY)
    assert other.headers["x-prsm-cache"] == "miss"
    assert generations(cached) == before + 2


def test_sampling_without_a_seed_is_never_cached_and_a_seed_is(cached: ServerProcess) -> None:
    """OpenAI's chat at temperature 0.7: without a seed, looked up never (no header); with a
    seed, a hit the second time."""
    chat = {"model": "fixed", "messages": [{"role": "user", "content": fresh()}],
            "temperature": 0.7}  # fmt: skip
    unseeded = [ask(cached, "/v1/chat/completions", chat) for _ in range(2)]
    assert ["x-prsm-cache" in answer.headers for answer in unseeded] == [False, False]
    seeded = [ask(cached, "/v1/chat/completions", chat | {"seed": 3}) for _ in range(2)]
    assert [answer.headers["x-prsm-cache"] for answer in seeded] == ["miss", "hit"]
    assert seeded[1].json()["choices"] == seeded[0].json()["choices"]


def test_cache_control_no_cache_recomputes_and_no_store_leaves_nothing(
    cached: ServerProcess,
) -> None:
    """`no-store`: the cache is not consulted (no header) and keeps nothing; `no-cache`
    computes anew and keeps the answer."""
    body = {"prompt": fresh(), "userId": "u1"}
    unstored = ask(cached, "/api/v1/query", body, **{"Cache-Control": "no-store"})
    assert "x-prsm-cache" not in unstored.headers
    assert ask(cached, "/api/v1/query", body).headers["x-prsm-cache"] == "miss"  # not kept
    refreshed = ask(cached, "/api/v1/query", body, **{"Cache-Control": "no-cache"})
    assert refreshed.headers["x-prsm-cache"] == "miss"
    assert ask(cached, "/api/v1/query", body).headers["x-prsm-cache"] == "hit"


def test_a_streamed_hit_replays_the_same_events(cached: ServerProcess) -> None:
    """Streamed twice: the second is a hit whose events are the first's, piece for piece."""
    body = {"prompt": fresh(), "userId": "u1", "stream": True}
    first, second = (ask(cached, "/api/v1/query", body) for _ in range(2))
    assert (first.headers["x-prsm-cache"], second.headers["x-prsm-cache"]) == ("miss", "hit")
    assert first.text.count("event: delta") > 1
    assert _without_ids(second.text) == _without_ids(first.text)


def test_a_streamed_hit_of_several_answers_keeps_each_answer_s_pieces(
    cached: ServerProcess,
) -> None:
    """`n: 2` streamed twice on OpenAI's chat: the hit's deltas carry the same choice indexes
    as the first stream's, so each answer reads the same."""
    chat = {"model": "fixed", "messages": [{"role": "user", "content": fresh()}], "n": 2,
            "temperature": 0, "stream": True}  # fmt: skip

    def texts(answer: httpx.Response) -> list[str]:
        found = ["", ""]
        for line in answer.text.splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line.removeprefix("data: "))["choices"]:
                    found[choice["index"]] += choice["delta"].get("content") or ""
        return found

    first, second = (ask(cached, "/v1/chat/completions", chat) for _ in range(2))
    assert (first.headers["x-prsm-cache"], second.headers["x-prsm-cache"]) == ("miss", "hit")
    assert texts(second) == texts(first) == ["Paris is the capital."] * 2


def test_identical_queries_arriving_together_compute_once(cached: ServerProcess) -> None:
    """Twenty identical queries at once: one generation, one miss, nineteen hits, all the same
    answer."""
    body = {"prompt": fresh(), "userId": "u1"}
    before = generations(cached)

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=cached.base_url, timeout=30) as http:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            calls = [http.post("/api/v1/query", json=body, headers=headers) for _ in range(20)]
            return await asyncio.gather(*calls)

    answers = asyncio.run(together())
    assert sorted(a.headers["x-prsm-cache"] for a in answers) == ["hit"] * 19 + ["miss"]
    assert {a.json()["data"]["answer"] for a in answers} == {"Paris is the capital."}
    assert generations(cached) == before + 1


def test_another_model_misses_and_redis_down_is_a_miss(
    tmp_path: Path, redis_server: EmbeddedRedis, cached: ServerProcess
) -> None:
    """An instance serving another model (as a change of weights renames it) on the same
    Redis misses what the first kept; an instance whose Redis is down answers, missing, and
    warns once for the outage."""
    body = {"prompt": fresh(), "userId": "u1"}
    assert ask(cached, "/api/v1/query", body).headers["x-prsm-cache"] == "miss"
    other_model = CACHED | {"PRSM_REDIS_URL": redis_server.url, "PRSM_ENGINE__MODEL_NAME": "m2"}
    (tmp_path / "m2").mkdir()
    (tmp_path / "dead").mkdir()
    with prsm_serve(tmp_path / "m2", env=other_model) as server:
        assert ask(server, "/api/v1/query", body).headers["x-prsm-cache"] == "miss"
    dead = CACHED | {"PRSM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with prsm_serve(tmp_path / "dead", env=dead, ready_path="/health") as server:
        answers = [ask(server, "/api/v1/query", body) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        assert [a.headers["x-prsm-cache"] for a in answers] == ["miss", "miss"]
        failed = metric(server.base_url, "prsm_cache_requests_total", 'result="error"')
        assert failed >= 2
        assert server.log_path.read_text().count("response cache read failed") == 1  # once


def _without_ids(text: str) -> str:
    return re.sub(r'"(correlationId|id)":"[^"]*"', "", text)


async def test_a_query_waiting_on_one_whose_caller_left_computes_its_own(
    redis: aioredis.Redis,
) -> None:
    """Two identical queries, the second waiting for the first's answer: the first's caller
    leaves (its generation is cancelled); the second is not cancelled with it, but computes
    its own answer."""
    cache = ResponseCache(redis, CacheSettings(enabled=True), "test")
    lookup = Lookup("same-question", read=True, write=True)
    started = asyncio.Event()
    answer = Generation(text="Paris.", prompt_tokens=3, completion_tokens=2, confidence=0.9,
                        model="fixed")  # fmt: skip

    async def never(_sink: object) -> Generation:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def own(_sink: object) -> Generation:
        return answer

    first = asyncio.create_task(cache.answer(lookup, None, never))
    await started.wait()
    second = asyncio.create_task(cache.answer(lookup, None, own))
    await suspended_in(second, "_joined")  # the second waits on the first
    first.cancel()
    assert await second == (answer, False)
    assert first.cancelled()


async def suspended_in(task: asyncio.Task[object], function: str) -> None:
    """Let the loop run until `task` is waiting inside `function` (its chain of awaited
    coroutines reaches it)."""
    for _ in range(100_000):
        awaiting: Any = task.get_coro()
        while awaiting is not None and getattr(awaiting, "__name__", "") != function:
            awaiting = getattr(awaiting, "cr_await", None)
        if awaiting is not None:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the task never waited in {function}")
