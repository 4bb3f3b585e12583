"""Prometheus metrics under the specification's names, shared by the server and the SDK.

With several server processes, `PROMETHEUS_MULTIPROC_DIR` must be set before this module is
imported (`prsm serve --workers N` does it); `render()` then sums every process's values.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30)
QUERY_LABELS = ("service", "method", "status", "user_tier")

QUERY_DURATION = Histogram(
    "prsm_query_duration_seconds",
    "Duration of PRSM queries",
    QUERY_LABELS,
    buckets=DURATION_BUCKETS,
)
QUERIES = Counter("prsm_queries_total", "Total number of PRSM queries", QUERY_LABELS)
CACHE_REQUESTS = Counter(
    "prsm_cache_requests_total",
    "Repeatable queries looked up in the response cache, by result (hit, miss, error)",
    ("service", "result"),
)
CACHE_STORED_BYTES = Counter(
    "prsm_cache_stored_bytes_total", "Bytes of answers written to the response cache", ("service",)
)
BUDGET_REFUSED = Counter(
    "prsm_budget_refused_total",
    "Queries refused because their caller's budget was spent",
    ("service",),
)
BUDGET_UNCOUNTED = Counter(
    "prsm_budget_uncounted_total",
    "Queries admitted without counting against a budget: Redis was unreachable",
    ("service",),
)
TOKENS = Counter(
    "prsm_tokens_used_total", "Total tokens consumed", ("service", "user_tier", "model")
)
PROMPT_TOKENS_CACHED = Counter(
    "prsm_prompt_tokens_cached_total",
    "Prompt tokens taken from the engine's prompt cache instead of being computed",
    ("service", "model"),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "prsm_time_to_first_token_seconds",
    "From a query's arrival (its wait for the engine included) to its first generated text",
    ("service", "model"),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "prsm_time_per_output_token_seconds",
    "Generation time per token after the first",
    ("service", "model"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
ACTIVE_CONNECTIONS = Gauge(
    "prsm_active_connections",
    "Number of active PRSM connections",
    ("service", "instance"),
    multiprocess_mode="livesum",
)
ENGINE_IN_FLIGHT = Gauge(
    "prsm_engine_in_flight",
    "Queries the engine is generating now, by model",
    ("service", "model"),
    multiprocess_mode="livesum",
)
ENGINE_WAITING = Gauge(
    "prsm_engine_waiting",
    "Queries waiting for the engine, by model",
    ("service", "model"),
    multiprocess_mode="livesum",
)
ENGINE_KV_CELLS_USED = Gauge(
    "prsm_engine_kv_cells_used",
    "KV-cache cells the queries in the engine's batch hold, by model (a free slot's cached "
    "prompt is not counted: the next query may take it)",
    ("service", "model"),
    multiprocess_mode="livesum",
)
ENGINE_KV_CELLS = Gauge(
    "prsm_engine_kv_cells",
    "KV-cache cells the engine has, by model: max_batch times context_size",
    ("service", "model"),
    multiprocess_mode="livesum",
)
ENGINE_KV_USAGE = Gauge(
    "prsm_engine_kv_cache_usage_ratio",
    "Share of the engine's KV cache in use, 0 to 1, by model (the model-server protocol's "
    "KVCacheUtilization, as vLLM's kv_cache_usage_perc)",
    ("service", "model"),
    multiprocess_mode="livemax",
)
READY = Gauge(
    "prsm_ready",
    "1 when the last readiness check (/ready) passed, 0 when it did not",
    ("service",),
    multiprocess_mode="livemax",
)
ENGINE_REJECTED = Counter(
    "prsm_engine_rejected_total",
    "Queries refused because the engine was saturated or too slow, by model",
    ("service", "model", "reason"),
)

MODEL_FALLBACKS = Counter(
    "prsm_model_fallbacks_total",
    "Queries a model could not take (overloaded, not ready) passed to its fallback",
    ("service", "model", "fallback"),
)
AFFINITY_PICKS = Counter(
    "prsm_affinity_picks_total",
    "Replicas chosen by prefix affinity, by how: matched (the longest cached match), guarded "
    "(the match was too busy: the least busy instead), unmatched (no match: the least busy)",
    ("pool", "decision"),
)
QUERIES_CANCELLED = Counter(
    "prsm_queries_cancelled_total",
    "Queries stopped before their answer was complete, by reason (client_gone: the caller "
    "disconnected)",
    ("service", "reason"),
)
AUTH_FAILURES = Counter(
    "prsm_auth_failures_total",
    "Requests refused by authentication or authorization, by error code",
    ("service", "code"),
)
HTTP_REFUSED = Counter(
    "prsm_http_refused_total",
    "Requests refused or connections closed by the HTTP layer before the app saw them "
    "(header_too_large, too_many_headers, header_timeout, body_timeout, idle_timeout)",
    ("reason",),
)


GATEWAY_REQUESTS = Counter(
    "prsm_gateway_requests_total", "Requests answered by the gateway", ("route", "status")
)
GATEWAY_DURATION = Histogram(
    "prsm_gateway_request_duration_seconds",
    "Gateway request time until the response headers",
    ("route",),
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30),
)
GATEWAY_ATTEMPTS = Counter(
    "prsm_gateway_upstream_attempts_total",
    "Tries to reach an upstream instance, by outcome",
    ("pool", "outcome"),
)
GATEWAY_CLIENTS_GONE = Counter(
    "prsm_gateway_clients_gone_total",
    "Requests whose caller disconnected before the answer was complete; their upstream "
    "request was closed",
    ("route",),
)
GATEWAY_RATE_LIMITED = Counter(
    "prsm_gateway_rate_limited_total", "Requests refused by a rate limit", ("route",)
)


def record_query(
    *,
    service: str,
    method: str,
    status: str,
    user_tier: str,
    duration: float,
    tokens: int = 0,
    model: str = "default",
) -> None:
    """One finished query (the specification's `PRSMMetrics.recordQuery`)."""
    key = (service, method, status, user_tier)
    child(QUERY_DURATION, *key).observe(duration)
    child(QUERIES, *key).inc()
    if tokens > 0:
        child(TOKENS, service, user_tier, model).inc(tokens)


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, made once per label set: labels() takes a lock and checks
    every value, which on the query path cost more than the observations themselves."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def record_token_times(service: str, model: str, *, first: float, rest: float, tokens: int) -> None:
    """A generation's time to its first text, and per token after it (when it had several)."""
    child(TIME_TO_FIRST_TOKEN, service, model).observe(first)
    if tokens > 1:
        child(TIME_PER_OUTPUT_TOKEN, service, model).observe(rest / (tokens - 1))


def record_cached_prompt(service: str, model: str, tokens: int) -> None:
    """Prompt tokens a generation took from the engine's prompt cache."""
    child(PROMPT_TOKENS_CACHED, service, model).inc(tokens)


def show_zero(metric: Any, *label_sets: tuple[str, ...]) -> None:
    """Export these label sets at 0 before anything happens to them, so that a rate, a panel or
    an alert on them reads 0 instead of finding nothing."""
    for labels in label_sets:
        metric.labels(*labels)


def render() -> tuple[bytes, str]:
    """The exposition text of every metric, and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
