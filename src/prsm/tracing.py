"""OpenTelemetry tracing: the specification's `prsm.query` span, W3C `traceparent` propagation,
server and engine spans, export over OTLP.

PRSM's processes (`prsm serve`, `prsm worker`) install the OpenTelemetry SDK only when the
standard variables ask for an exporter (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp|console|none` — `none`
makes and propagates spans but exports nothing; `OTEL_SDK_DISABLED=true` wins); everything else
(`OTEL_SERVICE_NAME`, headers, sampling, batching) is read by the SDK itself. As a library the
SDK client never installs anything: it traces into whatever tracer provider the application
set up.

The API's server spans (one per request, continuing the caller's `traceparent`) come from
`server_span` for the routes `prsm.server.direct` serves (the query, the OpenAI routes, job
submission, the probes) and from FastAPI's native telemetry for the others; the engine span
under them comes from here.

Off costs nothing: with no tracer provider installed, `active()` is False and no span object
is made; FastAPI's telemetry is off too. Tracing or not, work done later for a request (a job)
keeps the trace headers it came with (`kept_context`: W3C `traceparent`/`tracestate`, and the
B3 `x-b3-*`/`b3` and `x-request-id` that Istio's sidecars use), and every call made for it —
the worker's queries to the API, its callbacks — sends them on (`inject`, inside
`job_span`): in a mesh the sidecars make the spans, and each app must forward the headers, or
the trace breaks at the queue. With the SDK on, the W3C ones come from PRSM's own span.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)

from prsm._version import __version__
from prsm.errors import HTTPStatusError

log = logging.getLogger("prsm.tracing")
QUERY_SPAN = "prsm.query"
ENGINE_SPAN = "prsm.engine.generate"
_in_query_span: ContextVar[bool] = ContextVar("prsm_in_query_span", default=False)
_installed: list[Any] = []  # the provider `configure` installed, for `shutdown`


_tracers: dict[int, tuple[Any, trace.Tracer]] = {}


def active() -> bool:
    """Whether a real tracer provider is installed (by `configure` or by the application)."""
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


def tracer() -> trace.Tracer:
    """PRSM's tracer from the current provider (looked up again if the provider changes)."""
    provider = trace.get_tracer_provider()
    known = _tracers.get(id(provider))
    if known is None or known[0] is not provider:
        _tracers.clear()
        known = _tracers[id(provider)] = (provider, provider.get_tracer("prsm", __version__))
    return known[1]


def configure(service_name: str) -> bool:
    """Install the SDK with the exporter the `OTEL_*` variables ask for; False when they ask
    for none (or tracing is already set up by someone else)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or active():
        return active()
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not exporter and not endpoint:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    span_exporter: SpanExporter | None
    if exporter == "none":  # the SDK on (spans made, context propagated), nothing exported
        span_exporter = None
    elif exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        if exporter not in ("", "otlp"):
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported here; using otlp", exporter)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, override the default name.
    resource = Resource({SERVICE_NAME: service_name}).merge(Resource.create())
    provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _installed.append(provider)
    return True


def shutdown() -> None:
    """Export what is buffered and stop, if `configure` installed the SDK (at process exit)."""
    while _installed:
        _installed.pop().shutdown()


FORWARDED_HEADERS = (
    "traceparent", "tracestate", "baggage", "x-request-id", "b3",
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
)  # fmt: skip
"""The trace headers kept with a job and sent on for it: W3C's and those Istio's docs ask
every app to forward."""
_W3C = ("traceparent", "tracestate", "baggage")
"""The W3C headers: what OpenTelemetry's propagator reads and writes."""
_forwarding: ContextVar[Mapping[str, str] | None] = ContextVar("prsm_forwarding", default=None)


def kept_context(incoming: Mapping[str, str]) -> dict[str, str]:
    """The trace headers to keep with work done later for a request (a job): those of
    `FORWARDED_HEADERS` it came with; with the SDK on, the W3C ones of the current span
    (the request's server span, continuing the caller's) instead."""
    kept = {name: incoming[name] for name in FORWARDED_HEADERS if name in incoming}
    if active():
        kept = {name: value for name, value in kept.items() if name not in _W3C}
        propagate.inject(kept)
    return kept


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to outgoing headers: the SDK's (`traceparent`,
    `tracestate`) when it is on, and the headers kept with the job being run (`job_span`)."""
    if active():
        propagate.inject(headers)
    for name, value in (_forwarding.get() or {}).items():
        if name not in headers:
            headers[name] = value


def current_trace_id() -> str | None:
    """The current span's trace id in hex (events carry it), if a trace is being made."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


@contextlib.contextmanager
def job_span(
    job_type: str, job_id: str, attempt: int, kept: Mapping[str, str] | None
) -> Iterator[trace.Span | None]:
    """A CONSUMER span for one attempt of a job, continuing the trace the job was submitted
    in (`kept`: its `traceparent`, stored with the job); what the attempt does — its query to
    the API, its callback — is traced under it, and sends the kept headers on, tracing or not."""
    forwarding = _forwarding.set(dict(kept or {}))
    try:
        with _job_span(job_type, job_id, attempt, kept) as span:
            yield span
    finally:
        _forwarding.reset(forwarding)


@contextlib.contextmanager
def _job_span(
    job_type: str, job_id: str, attempt: int, kept: Mapping[str, str] | None
) -> Iterator[trace.Span | None]:
    if not active():
        yield None
        return
    parent = propagate.extract(dict(kept)) if kept else None
    attributes: dict[str, str | int] = {
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "messaging.message.id": job_id,
        "prsm.job.attempt": attempt,
    }
    span = tracer().start_span(
        f"prsm.job {job_type}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    except BaseException as exc:
        _record_error(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()


@dataclass(slots=True)
class QuerySpan:
    """The `prsm.query` span of one SDK call, or a stand-in that records nothing."""

    span: trace.Span | None

    def answered(self, tokens: int, confidence: float) -> None:
        """Record the answer's tokens and confidence on the span."""
        if self.span is not None:
            self.span.set_attributes(
                {
                    "response.tokens": tokens,
                    "response.confidence": confidence,
                    "http.status_code": 200,
                }
            )
            self.span.add_event("query.complete")


@contextlib.contextmanager
def query_span(prompt: str, user_id: str, service: str) -> Iterator[QuerySpan]:
    """The specification's `prsm.query` span around one call, failovers and retries included.

    Only the outermost PRSM call makes one (a `ServiceClient` call does, the per-instance client
    under it does not), so one query is one span whichever client was used.
    """
    if not active() or _in_query_span.get():
        yield QuerySpan(None)
        return
    token = _in_query_span.set(True)
    try:
        with tracer().start_as_current_span(
            QUERY_SPAN,
            kind=SpanKind.CLIENT,
            attributes={
                "component": "prsm-client",
                "user.id": user_id,
                "prompt.length": len(prompt),
                "service.name": service,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            span.add_event("query.start")
            try:
                yield QuerySpan(span)
            except Exception as exc:
                _record_error(span, exc)
                raise
    finally:
        _in_query_span.reset(token)


def _record_error(span: trace.Span, exc: BaseException) -> None:
    status = exc.status_code if isinstance(exc, HTTPStatusError) else None
    span.set_attribute("error", True)
    if status is not None:
        span.set_attribute("http.status_code", status)
    span.add_event(
        "error",
        {"error.object": type(exc).__name__, "error.message": str(exc)},
    )
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)))


@contextlib.contextmanager
def server_span(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Iterator[trace.Span]:
    """A SERVER span for one request, continuing the caller's `traceparent` (the gateway's, and
    the API's direct routes'). Call only when `active()`.

    The name says method and route; attributes cost more than the rest of the span in the
    SDK (bench/gateway_throughput.py), so only the status is added, by the caller. The span is
    made current by hand: `start_as_current_span` adds two context-manager layers."""
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _TRACE_HEADERS}
    parent = propagate.extract(carrier) if carrier else None
    span = tracer().start_span(f"{method} {path}", context=parent, kind=SpanKind.SERVER)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


_TRACE_HEADERS = frozenset(name.encode() for name in _W3C)


def name_server_span(method: str, route: str) -> None:
    """Name the current server span (one another layer began) by its route."""
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


@contextlib.contextmanager
def engine_span(
    model: str, max_tokens: int, operation: str = "query"
) -> Iterator[trace.Span | None]:
    """A span around one generation in the API service (child of the request's span), with
    the OpenTelemetry GenAI attributes: `chat` for chat completions and responses,
    `text_completion` for PRSM queries and completions."""
    if not active():
        yield None
        return
    attributes = {
        "gen_ai.operation.name": "chat" if operation in ("chat", "response") else "text_completion",
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": max_tokens,
    }
    with tracer().start_as_current_span(ENGINE_SPAN, attributes=attributes) as span:
        yield span
