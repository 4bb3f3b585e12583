"""Many models in one API: each request reaches the model it names (by id or alias), the
default when it names none, a clear refusal otherwise; each model has its own queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from prsm import metrics
from prsm.config import load_settings
from prsm.errors import (
    GatewayTimeoutError,
    HTTPStatusError,
    RateLimitedError,
    ServiceUnavailableError,
    ValidationError,
)
from prsm.server.served import may_fall_back
from tests.conftest import api_client
from tests.server.test_streaming import FailsMidway
from tests.support import API_KEY, until

MODELS: list[dict[str, Any]] = [
    {"name": "small", "kind": "fixed", "fixed_answer": "small answer", "aliases": ["gpt-4o-mini"]},
    {
        "name": "big",
        "kind": "fixed",
        "fixed_answer": "big answer",
        "concurrency": 1,
        "max_queue": 0,
        "fixed_delay_seconds": 30,
    },
    {
        "name": "minilm",
        "kind": "bert",
        "serves": "embeddings",
        "context_size": 256,
        "aliases": ["text-embedding-3-small"],
    },
]


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hello?"}]}


@pytest.fixture(scope="module")
def settings() -> Any:
    return load_settings(api_keys=API_KEY, models=MODELS)


async def test_each_request_reaches_the_model_it_names(settings: Any) -> None:
    """By id, by alias (the answer names the id), and the first model when none is named."""
    async with api_client(settings) as client:
        small = await client.post("/v1/chat/completions", json=chat("gpt-4o-mini"))
        query = await client.post("/api/v1/query", json={"prompt": "Hi", "userId": "u"})
        embedded = await client.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["a", "b"]}
        )
    assert small.json()["model"] == "small"
    assert small.json()["choices"][0]["message"]["content"] == "small answer"
    assert query.json()["data"]["model"] == "small"
    assert embedded.json()["model"] == "minilm"
    assert [d["index"] for d in embedded.json()["data"]] == [0, 1]


async def test_unknown_and_wrong_kind_models_are_refused_clearly(settings: Any) -> None:
    """404 naming what is served; 400 for a chat model's embeddings or an embedding model's
    chat; the query route's refusal is PRSM's own 404."""
    async with api_client(settings) as client:
        unknown = await client.post("/v1/chat/completions", json=chat("gpt-5"))
        embed_chat = await client.post("/v1/chat/completions", json=chat("minilm"))
        chat_embed = await client.post("/v1/embeddings", json={"model": "big", "input": "x"})
        query = await client.post(
            "/api/v1/query", json={"prompt": "Hi", "userId": "u", "model": "gpt-5"}
        )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert "'small', 'gpt-4o-mini', 'big', 'minilm'" in unknown.json()["error"]["message"]
    assert (embed_chat.status_code, embed_chat.json()["error"]["code"]) == (400, "wrong_model_kind")
    assert (chat_embed.status_code, chat_embed.json()["error"]["code"]) == (400, "wrong_model_kind")
    assert (query.status_code, query.json()["error"]["code"]) == (404, "unknown_model")


async def test_the_model_list_names_every_id_and_alias(settings: Any) -> None:
    """As OpenAI lists ids; an alias found by id says the model it stands for."""
    async with api_client(settings) as client:
        listed = (await client.get("/v1/models")).json()["data"]
        alias = (await client.get("/v1/models/text-embedding-3-small")).json()
        missing = await client.get("/v1/models/gpt-5")
    assert [m["id"] for m in listed] == [
        "small", "gpt-4o-mini", "big", "minilm", "text-embedding-3-small"
    ]  # fmt: skip
    assert alias["prsm"] == {"serves": "embeddings", "model": "minilm"}
    assert missing.status_code == 404


async def test_a_saturated_model_does_not_hold_up_another(settings: Any) -> None:
    """`big` takes one query and queues none: while it works, a second is 503 at once, and
    `small` and the embeddings still answer."""
    async with api_client(settings) as client:
        busy = asyncio.create_task(client.post("/v1/chat/completions", json=chat("big")))
        models = client._transport.app.state.models  # type: ignore[attr-defined]
        big = models.named("big")
        await until(lambda: big.admission.in_flight == 1)
        refused = await client.post("/v1/chat/completions", json=chat("big"))
        small = await client.post("/v1/chat/completions", json=chat("small"))
        vectors = await client.post("/v1/embeddings", json={"model": "minilm", "input": "x"})
        busy.cancel()
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert (small.status_code, vectors.status_code) == (200, 200)


async def test_readiness_names_each_model(settings: Any) -> None:
    """`/ready` and `/started` list every model's engine."""
    async with api_client(settings) as client:
        ready = (await client.get("/ready")).json()
        started = await client.get("/started")
    assert {"engine:small", "engine:big", "engine:minilm"} <= set(ready["checks"])
    assert started.status_code == 200
    assert set(started.json()["checks"]) == {"engine:small", "engine:big", "engine:minilm"}


async def test_a_refused_model_is_recorded_as_a_failed_query(settings: Any) -> None:
    """The unknown model's 404 reaches the metrics as any refusal does."""
    before = refusals()
    async with api_client(settings) as client:
        await client.post("/v1/chat/completions", json=chat("nope"))
    assert refusals() == before + 1


def refusals() -> float:
    """Chat queries answered 404, counted by prsm_queries_total (any caller tier)."""
    (family,) = metrics.QUERIES.collect()
    return sum(
        float(s.value)
        for s in family.samples
        if s.name.endswith("_total")
        and s.labels["method"] == "chat"
        and s.labels["status"] == "404"
    )


FALLING_BACK: list[dict[str, Any]] = [
    {"name": "flaky", "kind": "fixed", "fallbacks": ["small"]},  # served by FailsMidway
    {"name": "big", "kind": "fixed", "aliases": ["gpt-4o"], "fallbacks": ["gpt-4o-mini"],
     "concurrency": 1, "max_queue": 0, "fixed_delay_seconds": 30},
    {"name": "small", "kind": "fixed", "fixed_answer": "small answer", "aliases": ["gpt-4o-mini"]},
]  # fmt: skip


class FlakyEngine(FailsMidway):
    """Says two words, then loses its backend; answers as `flaky`."""

    model = "flaky"


@contextlib.asynccontextmanager
async def big_busy(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """`big` working on one query (it takes one, and queues none) for the block."""
    busy = asyncio.create_task(client.post("/v1/chat/completions", json=chat("big")))
    big = client._transport.app.state.models.named("big")  # type: ignore[attr-defined]
    await until(lambda: big.admission.in_flight == 1)
    try:
        yield
    finally:
        busy.cancel()
        await until(lambda: big.admission.in_flight == 0)


async def test_an_overloaded_model_falls_back_even_by_alias() -> None:
    """While `big` is full, a query for it (or for its alias: the fallbacks are the model's)
    is answered by its fallback, named so; `big` takes queries again the moment it has room,
    with no cooldown to outlast."""
    settings = load_settings(api_keys=API_KEY, models=FALLING_BACK)
    before = fallbacks("big", "small")
    async with api_client(settings, FlakyEngine()) as client:  # type: ignore[arg-type]
        async with big_busy(client):
            by_id = await client.post("/v1/chat/completions", json=chat("big"))
            by_alias = await client.post("/v1/chat/completions", json=chat("gpt-4o"))
            streamed = await client.post(
                "/v1/chat/completions", json=chat("big") | {"stream": True}
            )
            response = await client.post("/v1/responses", json={"model": "big", "input": "Hi"})
            events = await client.post(
                "/v1/responses", json={"model": "big", "input": "Hi", "stream": True}
            )
        async with big_busy(client):  # admitted by `big` itself, not passed on
            pass
    for answer in (by_id, by_alias):
        assert answer.json()["model"] == "small"
        assert answer.headers["x-prsm-fallback-from"] == "big"
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line[6:7] == "{"]
    assert {c["model"] for c in chunks} == {"small"}
    assert streamed.headers["x-prsm-fallback-from"] == "big"
    assert fallbacks("big", "small") == before + 5
    assert response.json()["model"] == "small"
    created = json.loads(events.text.split("data: ", 2)[1].split("\n")[0])
    assert created["response"]["model"] == "small"


async def test_a_stream_that_fails_midway_ends_with_an_error_and_no_fallback() -> None:
    """Once text was sent, a failure is the stream's error event, never another model's
    answer spliced on; the chain still works for the next query."""
    settings = load_settings(api_keys=API_KEY, models=FALLING_BACK)
    async with api_client(settings, FlakyEngine()) as client:  # type: ignore[arg-type]
        broken = await client.post("/v1/chat/completions", json=chat("flaky") | {"stream": True})
        async with big_busy(client):
            after = await client.post("/v1/chat/completions", json=chat("big"))
    assert "Half an" in broken.text
    assert '"code":"engine_unavailable"' in broken.text
    assert "small answer" not in broken.text
    assert "x-prsm-fallback-from" not in broken.headers
    assert after.json()["model"] == "small"


@pytest.mark.parametrize(
    ("error", "falls_back"),
    [
        (ServiceUnavailableError("full", code="saturated", not_run=True), True),
        (ServiceUnavailableError("backend gone", code="engine_unavailable"), False),
        (RateLimitedError("budget spent", code="budget_exceeded"), False),
        (GatewayTimeoutError("too slow", code="engine_timeout"), False),
        (ValidationError("bad schema", code="invalid_schema"), False),
    ],
)
def test_only_a_query_that_provably_did_not_run_falls_back(
    error: HTTPStatusError, falls_back: bool
) -> None:
    """Overloaded or not ready: yes; the caller's own error, a budget, a timeout (the query
    may have run), a backend lost mid-way: no."""
    assert may_fall_back(error) is falls_back


def fallbacks(model: str, fallback: str) -> float:
    return float(metrics.MODEL_FALLBACKS.labels("prsm-api", model, fallback)._value.get())
