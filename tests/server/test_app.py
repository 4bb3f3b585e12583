from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from prsm.config import load_settings
from prsm.engines import FixedEngine
from prsm.errors import EngineUnavailableError, PromptTooLongError
from tests.conftest import api_client, make_settings
from tests.support import API_KEY

QUERY = {"prompt": "What is the capital of France?", "userId": "u1"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["correlationId"] == response.headers["x-correlation-id"]
    assert "Traceback" not in response.text
    return body


async def test_query_answers_the_contract(
    api: httpx.AsyncClient, fixed_engine: FixedEngine
) -> None:
    """A query returns data.answer/confidence/usage/model and the correlation id."""
    response = await api.post("/api/v1/query", json=QUERY | {"maxTokens": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {
        "answer": "Paris is the",
        "confidence": 0.9,
        "usage": {"tokens": 9, "promptTokens": 6, "completionTokens": 3},
        "model": "fixed-model",
    }
    assert body["correlationId"] == response.headers["x-correlation-id"]
    assert list(fixed_engine.calls) == [QUERY["prompt"]]


async def test_body_is_json_whatever_the_content_type(api: httpx.AsyncClient) -> None:
    """`curl -d` sends form content-type; the body is still read as JSON."""
    response = await api.post(
        "/api/v1/query",
        content=json.dumps(QUERY),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


async def test_correlation_id_is_kept_when_given(api: httpx.AsyncClient) -> None:
    """A sane X-Correlation-ID comes back unchanged, on the header and in the body."""
    response = await api.post("/api/v1/query", json=QUERY, headers={"x-correlation-id": "req-42"})
    assert response.headers["x-correlation-id"] == "req-42"
    assert response.json()["correlationId"] == "req-42"


async def test_unsafe_correlation_id_is_replaced(api: httpx.AsyncClient) -> None:
    """An id with spaces or over 128 characters is replaced by a generated one."""
    for bad in ("has space", "x" * 129):
        response = await api.get("/health", headers={"x-correlation-id": bad})
        assert response.headers["x-correlation-id"] != bad
        assert len(response.headers["x-correlation-id"]) == 32


async def test_every_response_has_a_correlation_id(api: httpx.AsyncClient) -> None:
    """Probes, errors and unknown paths all carry X-Correlation-ID."""
    for path in ("/health", "/ready", "/metrics", "/openapi.json", "/nope"):
        assert (await api.get(path)).headers.get("x-correlation-id")


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    """A body that is not JSON is 400 invalid_json."""
    response = await api.post("/api/v1/query", content=b'{"prompt": ')
    assert_error(response, 400, "invalid_json")


async def test_empty_body_is_400(api: httpx.AsyncClient) -> None:
    """No body at all is 400 invalid_json."""
    assert_error(await api.post("/api/v1/query"), 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "", "userId": "u1"}, "prompt"),
        ({"prompt": "   \n", "userId": "u1"}, "prompt"),
        ({"userId": "u1"}, "prompt"),
        ({"prompt": "hi"}, "userId"),
        ({"prompt": 5, "userId": "u1"}, "prompt"),
        ({"prompt": "hi", "userId": "u1", "maxTokens": 0}, "maxTokens"),
        ({"prompt": "hi", "userId": "u1", "maxTokens": 100000}, "maxTokens"),
        ({"prompt": "hi", "userId": "u1", "priority": "urgent"}, "priority"),
        ({"prompt": "hi", "userId": "u1", "context": "not an object"}, "context"),
        ({"prompt": "hi", "userId": "u1", "surprise": 1}, "surprise"),
        ([QUERY], "body"),
    ],
)
async def test_contract_violations_are_422_naming_the_field(
    api: httpx.AsyncClient, body: object, field: str
) -> None:
    """Empty prompts and schema violations are 422 with the field in the message."""
    response = await api.post("/api/v1/query", json=body)
    error = assert_error(response, 422, "validation_error")
    assert field in str(error["error"])


async def test_unknown_model_is_404(api: httpx.AsyncClient) -> None:
    """Asking for a model this instance does not serve is 404 unknown_model, as OpenAI's."""
    response = await api.post("/api/v1/query", json=QUERY | {"model": "gpt-9"})
    assert_error(response, 404, "unknown_model")


async def test_body_over_limit_is_413(api: httpx.AsyncClient) -> None:
    """A body over 1 MiB (the default) is 413, announced or streamed."""
    big = json.dumps(QUERY | {"prompt": "a" * (1 << 20)}).encode()
    assert_error(await api.post("/api/v1/query", content=big), 413, "payload_too_large")

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    response = await api.post("/api/v1/query", content=chunks())
    assert_error(response, 413, "payload_too_large")


async def test_body_under_limit_passes(api: httpx.AsyncClient) -> None:
    """A large prompt under the limit reaches the engine intact."""
    prompt = "word " * 100_000
    response = await api.post("/api/v1/query", json=QUERY | {"prompt": prompt})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_credentials"),
        ({"authorization": "Bearer wrong"}, "invalid_credentials"),
        ({"authorization": "Token " + API_KEY}, "invalid_credentials"),
    ],
)
async def test_missing_or_wrong_key_is_401(
    api: httpx.AsyncClient, headers: dict[str, str], code: str
) -> None:
    """Queries need a valid bearer key; 401 says how to authenticate."""
    api.headers.pop("authorization")
    response = await api.post("/api/v1/query", json=QUERY, headers=headers)
    assert_error(response, 401, code)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_probes_and_docs_are_open(api: httpx.AsyncClient) -> None:
    """health, ready, metrics, openapi and docs need no key; prsm_ready exports /ready."""
    api.headers.pop("authorization")
    health = await api.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    ready = await api.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["engine"]["ok"] is True
    exported = await api.get("/metrics")
    assert exported.status_code == 200
    assert 'prsm_ready{service="prsm-api"} 1.0' in exported.text  # what /ready last said
    spec = (await api.get("/openapi.json")).json()
    assert "/api/v1/query" in spec["paths"]
    assert (await api.get("/docs")).status_code == 200


async def test_openapi_documents_query_body_and_errors(api: httpx.AsyncClient) -> None:
    """The spec shows the request schema and the error answers."""
    operation = (await api.get("/openapi.json")).json()["paths"]["/api/v1/query"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"prompt", "userId"} <= set(schema["required"])
    assert {"400", "401", "413", "422", "503", "504"} <= set(operation["responses"])
    assert operation["security"] == [{"bearerAuth": ["read:ai"]}]


async def test_openapi_marks_every_authenticated_operation_with_its_scope(
    api: httpx.AsyncClient,
) -> None:
    """Every operation under /api/v1 and /v1 needs the bearer credential, with the scope it
    needs (so generated clients send it); the probes need none."""
    paths = (await api.get("/openapi.json")).json()["paths"]
    needs = {
        (method, path): operation.get("security")
        for path, operations in paths.items()
        for method, operation in operations.items()
    }
    authenticated = [key for key in needs if key[1].startswith(("/api/v1/", "/v1/"))]
    assert len(authenticated) >= 10
    for key in authenticated:
        write = key in {("post", "/api/v1/jobs"), ("delete", "/v1/responses/{response_id}")}
        assert needs[key] == [{"bearerAuth": ["write:ai" if write else "read:ai"]}], key
    assert needs[("get", "/health")] is None


async def test_openapi_lists_the_http_layer_s_answers_where_they_occur(
    api: httpx.AsyncClient,
) -> None:
    """Every operation documents 405 (another method on its path, in its API's error shape),
    408 and 431 (the HTTP layer's refusals); the ones that generate also 499 (the caller
    left); a probe does not."""
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert {"405", "408", "431"} <= set(operation["responses"]), (method, path)
    generating = [("/api/v1/query", "post"), ("/v1/chat/completions", "post"),
                  ("/v1/completions", "post"), ("/v1/responses", "post")]  # fmt: skip
    for path, method in generating:
        assert "499" in paths[path][method]["responses"]
    assert "499" not in paths["/health"]["get"]["responses"]
    openai_405 = paths["/v1/chat/completions"]["post"]["responses"]["405"]
    assert openai_405["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert paths["/api/v1/query"]["post"]["responses"]["405"]["content"]["application/json"][
        "schema"
    ]["$ref"].endswith("/ErrorResponse")
    wrong_method = await api.get("/v1/chat/completions")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_path_and_method_are_json(api: httpx.AsyncClient) -> None:
    """404 and 405 use the JSON error shape."""
    assert_error(await api.get("/api/v1/nothing"), 404, "not_found")
    assert_error(await api.get("/api/v1/query"), 405, "method_not_allowed")


async def test_saturated_engine_answers_503_with_retry_after() -> None:
    """With concurrency 1 and room for 1 waiter, a third concurrent query gets 503."""
    engine = FixedEngine("slow answer", delay=0.3)
    settings = make_settings(concurrency=1, max_queue=1, retry_after_seconds=2)
    async with api_client(settings, engine) as api:
        responses = await asyncio.gather(*(api.post("/api/v1/query", json=QUERY) for _ in range(3)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 503]
    refused = next(r for r in responses if r.status_code == 503)
    assert_error(refused, 503, "saturated")
    assert refused.headers["retry-after"] == "2"


async def test_slow_engine_answers_504() -> None:
    """A generation longer than engine.timeout_seconds is 504 engine_timeout."""
    engine = FixedEngine("too slow", delay=5)
    async with api_client(make_settings(timeout_seconds=0.05), engine) as api:
        response = await api.post("/api/v1/query", json=QUERY)
    assert_error(response, 504, "engine_timeout")


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (PromptTooLongError("too long"), 422, "prompt_too_long"),
        (EngineUnavailableError("backend down"), 503, "engine_unavailable"),
    ],
)
async def test_engine_errors_map_to_statuses(error: Exception, status: int, code: str) -> None:
    """Engine errors become their documented statuses."""
    async with api_client(make_settings(), FixedEngine(error=error)) as api:
        assert_error(await api.post("/api/v1/query", json=QUERY), status, code)


async def test_unexpected_error_is_500_without_details() -> None:
    """A bug inside the engine is a plain 500: no message, no traceback, for the client."""
    engine = FixedEngine(error=RuntimeError("secret internal detail"))
    async with api_client(make_settings(), engine) as api:
        response = await api.post("/api/v1/query", json=QUERY)
    assert_error(response, 500, "internal_error")
    assert "secret internal detail" not in response.text


async def test_engine_that_fails_to_load_makes_ready_503(tmp_path: Path) -> None:
    """/ready and /started are 503 naming the engine (prsm_ready 0); queries 503 not_ready;
    /health 200."""
    from prsm.server import create_app

    settings = load_settings(
        api_keys=API_KEY, engine={"kind": "llama", "model_path": tmp_path / "missing.gguf"}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.models.wait_loaded()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["engine"]["ok"] is False
            assert "missing.gguf" in ready.json()["checks"]["engine"]["detail"]
            assert 'prsm_ready{service="prsm-api"} 0.0' in (await client.get("/metrics")).text
            assert (await client.get("/health")).status_code == 200
            started = await client.get("/started")
            assert (started.status_code, started.json()["status"]) == (503, "starting")
            response = await client.post(
                "/api/v1/query", json=QUERY, headers={"authorization": f"Bearer {API_KEY}"}
            )
            assert_error(response, 503, "not_ready")


async def test_metrics_count_queries_by_status_and_tier(api: httpx.AsyncClient) -> None:
    """prsm_queries_total and prsm_tokens_used_total carry the spec's labels."""
    await api.post("/api/v1/query", json=QUERY, headers={"authorization": "Bearer premium-key"})
    text = (await api.get("/metrics")).text
    assert (
        'prsm_queries_total{method="query",service="prsm-api",status="200",user_tier="premium"}'
        in text
    )
    assert 'prsm_tokens_used_total{model="fixed-model",service="prsm-api",user_tier="premium"}' in (
        text
    )
    assert "prsm_query_duration_seconds_bucket" in text
    assert 'le="30.0"' in text


async def test_405_names_the_allowed_methods(api: httpx.AsyncClient) -> None:
    """A wrong method answers 405 JSON with the Allow header RFC 9110 requires."""
    response = await api.get("/api/v1/query")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_failed_authentication_is_counted_and_logged_at_warning(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong keys leave a trace: prsm_auth_failures_total by code, and a warning naming the
    client's address (never the key)."""
    from prsm import metrics

    counter = metrics.AUTH_FAILURES.labels("prsm-api", "invalid_credentials")
    before = counter._value.get()
    with caplog.at_level("WARNING", logger="prsm.server"):
        for _ in range(3):
            response = await api.post(
                "/api/v1/query", json=QUERY, headers={"authorization": "Bearer wrong-key-123"}
            )
            assert response.status_code == 401
    assert counter._value.get() - before == 3
    warnings = [r for r in caplog.records if r.getMessage() == "authentication refused"]
    assert len(warnings) == 3
    assert all(r.levelname == "WARNING" and r.clientIp for r in warnings)  # type: ignore[attr-defined]
    assert "wrong-key-123" not in caplog.text


async def test_docs_assets_are_served_from_the_package(api: httpx.AsyncClient) -> None:
    """/docs and /redoc point at assets this server serves itself, not at a CDN."""
    page = (await api.get("/docs")).text
    assert "cdn.jsdelivr" not in page
    assert "unpkg" not in page
    assert "/static-offline-docs/swagger-ui-bundle.js" in page
    script = await api.get("/static-offline-docs/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert len(script.content) > 100_000
    assert "/static-offline-docs/redoc.standalone.js" in (await api.get("/redoc")).text
