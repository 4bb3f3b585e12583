"""`prsm serve` as a real process with the embedded model, driven over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import httpx
import pydantic
import pytest

from prsm import AsyncPRSMClient, PRSMClient
from prsm.errors import GatewayTimeoutError, ValidationError
from tests.support import API_KEY, ServerProcess, prsm_serve

AUTH = {"Authorization": f"Bearer {API_KEY}"}
FRANCE = b'{"prompt":"What is the capital of France?","userId":"u1"}'


def test_the_readme_curl_is_answered(llama_server: ServerProcess) -> None:
    """The README's curl (no Content-Type) gets a real answer from the model."""
    response = httpx.post(
        llama_server.base_url + "/api/v1/query", content=FRANCE, headers=AUTH, timeout=60
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert "Paris" in data["answer"]
    assert 0 < data["confidence"] <= 1
    assert (
        data["usage"]["tokens"] == data["usage"]["promptTokens"] + data["usage"]["completionTokens"]
    )
    assert data["model"] == "SmolLM2-135M-Instruct.Q4_1-q8_0"


def test_sync_sdk_against_the_real_model(llama_server: ServerProcess) -> None:
    """PRSMClient gets a typed answer within max_tokens."""
    with PRSMClient(base_url=llama_server.base_url, api_key=API_KEY) as client:
        result = client.query("Name a colour.", user_id="u2", max_tokens=8)
        assert client.health().status == "healthy"
    assert result.answer
    assert result.usage.completion_tokens <= 8


async def test_async_sdk_against_the_real_model(llama_server: ServerProcess) -> None:
    """AsyncPRSMClient mirrors the sync one."""
    async with AsyncPRSMClient(base_url=llama_server.base_url, api_key=API_KEY) as client:
        result = await client.query("Name a fruit.", user_id="u3", max_tokens=8)
        assert (await client.health()).status == "healthy"
    assert result.answer
    assert result.usage.completion_tokens <= 8


def test_every_log_line_of_a_query_carries_its_correlation_id(llama_server: ServerProcess) -> None:
    """The query's log lines, access log included, are JSON with its correlation id."""
    headers = AUTH | {"X-Correlation-ID": "e2e-log-check"}
    httpx.post(llama_server.base_url + "/api/v1/query", content=FRANCE, headers=headers, timeout=60)
    mine = llama_server.wait_for_log(lambda e: e.get("correlationId") == "e2e-log-check", 2)
    assert {e["logger"] for e in mine} >= {"prsm.query", "prsm.access"}
    query_line = next(e for e in mine if e["logger"] == "prsm.query")
    assert query_line["userId"] == "u1"
    assert query_line["status"] == 200


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"prompt": ', AUTH, 400),
        (b'{"prompt": "", "userId": "u"}', AUTH, 422),
        (b'{"prompt": "hi"}', AUTH, 422),
        (b'{"prompt": "hi", "userId": "u", "maxTokens": -1}', AUTH, 422),
        (b'{"prompt": "' + b"a" * (1 << 20) + b'", "userId": "u"}', AUTH, 413),
        (FRANCE, {}, 401),
        (FRANCE, {"Authorization": "Bearer wrong"}, 401),
    ],
)
def test_bad_input_from_outside(
    llama_server: ServerProcess, body: bytes, headers: dict[str, str], status: int
) -> None:
    """Each bad input gets its status and a JSON error; the server stays up."""
    response = httpx.post(
        llama_server.base_url + "/api/v1/query", content=body, headers=headers, timeout=60
    )
    assert response.status_code == status
    assert response.json()["error"]["code"]
    assert response.json()["correlationId"] == response.headers["x-correlation-id"]
    assert httpx.get(llama_server.base_url + "/health").status_code == 200


def test_engine_timeout_is_504(tmp_path: Path) -> None:
    """A generation longer than the engine timeout is 504 through the SDK."""
    env = {"PRSM_ENGINE__TIMEOUT_SECONDS": "0.05"}
    with prsm_serve(tmp_path, env=env) as server, PRSMClient(server.base_url, API_KEY) as client:
        with pytest.raises(GatewayTimeoutError) as caught:
            client.query("Write a long story.", user_id="u", max_tokens=500)
        assert caught.value.code == "engine_timeout"
        # The engine was freed: a query that fits the timeout... is not possible at 0.05 s,
        # but health and readiness still answer at once.
        assert httpx.get(server.base_url + "/ready").status_code == 200


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_summed_across_two_workers(tmp_path: Path) -> None:
    """With --workers 2, every /metrics answer counts the queries of both processes."""
    env = {"PRSM_ENGINE__KIND": "fixed"}
    with prsm_serve(tmp_path, "--workers", "2", env=env) as server:
        with httpx.Client(base_url=server.base_url, headers=AUTH) as client:
            for i in range(30):
                # A new connection each time, so that both processes take some.
                response = httpx.post(
                    server.base_url + "/api/v1/query",
                    json={"prompt": "hi", "userId": f"u{i}"},
                    headers=AUTH | {"Connection": "close"},
                )
                assert response.status_code == 200
            readings = [client.get("/metrics").text for _ in range(6)]
        served_by = {e["pid"] for e in server.log_entries() if e.get("logger") == "prsm.query"}
    assert len(served_by) == 2, "both worker processes should have answered queries"
    for text in readings:
        assert _metric(text, "prsm_queries_total", status="200") == 30
        assert _metric(text, "prsm_query_duration_seconds_count", status="200") == 30


class Pet(pydantic.BaseModel):
    """A structured answer the SDK asks for."""

    name: str = pydantic.Field(max_length=30)
    kind: Literal["cat", "dog", "fish"]
    age: int = pydantic.Field(ge=0, le=30)


def test_the_sdk_gets_a_pydantic_object_from_the_real_model(llama_server: ServerProcess) -> None:
    """`query(..., schema=Pet)`: the server holds the answer to Pet's schema while decoding,
    and `result.parsed` is a Pet; the answer itself is that JSON."""
    with PRSMClient(base_url=llama_server.base_url, api_key=API_KEY) as client:
        result = client.query("Describe a pet.", user_id="u1", max_tokens=80, schema=Pet)
    assert isinstance(result.parsed, Pet)
    assert Pet.model_validate_json(result.answer) == result.parsed


async def test_a_json_schema_gives_json_and_an_unenforceable_one_is_refused(
    llama_server: ServerProcess,
) -> None:
    """A JSON Schema in, parsed JSON out (async client); a schema the engine cannot enforce
    is 422 `invalid_schema` naming the part, before any generation."""
    colour = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}},
              "required": ["colour"]}  # fmt: skip
    async with AsyncPRSMClient(base_url=llama_server.base_url, api_key=API_KEY) as client:
        result = await client.query("Name a colour.", user_id="u1", max_tokens=20, schema=colour)
        with pytest.raises(ValidationError) as refused:
            await client.query("Hi", user_id="u1", schema={"not": {"type": "string"}})
    assert result.parsed["colour"] in ("red", "blue")
    assert refused.value.code == "invalid_schema"
    assert "not" in refused.value.message
