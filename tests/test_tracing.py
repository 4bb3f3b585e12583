"""Tracing: the `prsm.query` span, W3C propagation into a real `prsm serve`, whose server and
engine spans arrive over OTLP/HTTP at a receiver speaking the OTLP protobuf format."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from prsm import AsyncPRSMClient, tracing
from prsm.client._core import ClientCore
from prsm.client.service import ServiceClient
from prsm.errors import AuthenticationError
from prsm.sd import StaticDiscovery
from tests.support import API_KEY, Collector, ServerProcess, collector_app, free_port, prsm_serve


def _reset_tracer_provider() -> None:
    # What opentelemetry-test-utils' reset_trace_globals does: the API allows one provider
    # per process, tests need a fresh one each.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def client_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_tracer_provider()
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    _reset_tracer_provider()


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    async with collector_app() as state:
        yield state


@pytest.fixture
def traced_api(tmp_path: Path, collector: Collector) -> Iterator[ServerProcess]:
    env = {
        "PRSM_ENGINE__KIND": "fixed",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    with prsm_serve(tmp_path, env=env) as api:
        yield api


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_off_makes_no_span_and_sends_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """No exporter asked for (or the SDK disabled): nothing installed, no span, no header."""
    assert tracing.configure("prsm-api") is False
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.configure("prsm-api") is False
    assert not tracing.active()
    request = ClientCore(None, "k", 5, 0, None).query_request(
        "hi", user_id="u", context=None, max_tokens=None, priority=None, correlation_id=None
    )
    assert "traceparent" not in request.headers
    with tracing.query_span("hi", "u", "prsm-api") as span:
        assert span.span is None


async def test_trace_runs_from_client_through_server_to_engine(
    client_spans: InMemorySpanExporter, collector: Collector, traced_api: ServerProcess
) -> None:
    """One query: the client's `prsm.query` span (the specification's attributes and events)
    is the parent of the API's server span, under which the endpoint runs the engine span."""
    async with AsyncPRSMClient(traced_api.base_url, api_key=API_KEY) as client:
        result = await client.query("What is the capital of France?", user_id="u1")
    [query] = by_name(client_spans.get_finished_spans(), "prsm.query")
    assert query.kind is SpanKind.CLIENT
    assert dict(query.attributes or {}) == {
        "component": "prsm-client",
        "user.id": "u1",
        "prompt.length": len("What is the capital of France?"),
        "service.name": "prsm-api",
        "response.tokens": result.usage.tokens,
        "response.confidence": result.confidence,
        "http.status_code": 200,
    }
    assert [e.name for e in query.events] == ["query.start", "query.complete"]

    [server] = await collector.wait_for("POST /api/v1/query")
    [engine] = await collector.wait_for("prsm.engine.generate")
    context = query.get_span_context()
    assert server.trace_id == context.trace_id.to_bytes(16, "big")
    assert server.parent_span_id == context.span_id.to_bytes(8, "big")
    assert server.kind == OtlpSpan.SPAN_KIND_SERVER
    assert engine.trace_id == server.trace_id
    assert engine.parent_span_id == server.span_id
    engine_attributes = {a.key: a.value for a in engine.attributes}
    output_tokens = engine_attributes["gen_ai.usage.output_tokens"].int_value
    assert output_tokens == result.usage.completion_tokens


async def test_an_openai_chat_completion_carries_the_genai_attributes(
    collector: Collector, traced_api: ServerProcess
) -> None:
    """A chat completion's engine span: OpenTelemetry's GenAI attributes, operation `chat`."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            traced_api.base_url + "/v1/chat/completions",
            json={"model": "fixed", "messages": [{"role": "user", "content": "Hi"}],
                  "max_tokens": 7},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )  # fmt: skip
    usage = response.json()["usage"]
    spans = await collector.wait_for("prsm.engine.generate")
    [engine] = [s for s in spans if any(a.value.string_value == "chat" for a in s.attributes)]
    attributes = {a.key: a.value for a in engine.attributes}
    assert attributes["gen_ai.operation.name"].string_value == "chat"
    assert attributes["gen_ai.request.model"].string_value == "fixed"
    assert attributes["gen_ai.request.max_tokens"].int_value == 7
    assert attributes["gen_ai.usage.input_tokens"].int_value == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"].int_value == usage["completion_tokens"]
    reasons = attributes["gen_ai.response.finish_reasons"].array_value.values
    assert [r.string_value for r in reasons] == ["stop"]


async def test_a_failed_query_marks_its_span(
    client_spans: InMemorySpanExporter, collector: Collector, traced_api: ServerProcess
) -> None:
    """A 401 marks the client's span as an error; the server's span of it is exported too
    (waited for here, so that the server has nothing left to flush when it stops)."""
    async with AsyncPRSMClient(traced_api.base_url, api_key="wrong") as client:
        with pytest.raises(AuthenticationError):
            await client.query("hi", user_id="u1")
    [server] = await collector.wait_for("POST /api/v1/query")
    [query] = by_name(client_spans.get_finished_spans(), "prsm.query")
    assert server.parent_span_id == query.get_span_context().span_id.to_bytes(8, "big")
    assert query.status.status_code is StatusCode.ERROR
    assert (query.attributes or {})["http.status_code"] == 401
    assert (query.attributes or {})["error"] is True
    assert "error" in [e.name for e in query.events]


async def test_a_service_client_call_is_one_span_across_failover(
    client_spans: InMemorySpanExporter, collector: Collector, traced_api: ServerProcess
) -> None:
    """A dead instance first, then the live one: still one `prsm.query` span, parent of the
    server span that answered."""
    dead = f"http://127.0.0.1:{free_port()}"
    discovery = StaticDiscovery([dead, traced_api.base_url])
    async with ServiceClient(discovery, api_key=API_KEY, service="prsm-api") as prsm:
        await prsm.query("hi", user_id="u1")
    [query] = by_name(client_spans.get_finished_spans(), "prsm.query")
    [server] = await collector.wait_for("POST /api/v1/query")
    assert server.parent_span_id == query.get_span_context().span_id.to_bytes(8, "big")
