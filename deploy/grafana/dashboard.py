"""Write PRSM's Grafana dashboard, `deploy/grafana/prsm.json` (the chart ships the same file).

Every panel is a PromQL query on PRSM's own metrics, filtered by the `instance` variable and
read from the `datasource` variable. `python deploy/grafana/dashboard.py` rewrites the file; a
test keeps it current, `@grafana/schema` type-checks it and a real Prometheus answers every
query (make deploy-check).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD_PATH = Path(__file__).resolve().parents[1] / "helm/prsm/files/grafana/prsm.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
ON = 'instance=~"$instance"'
WIDTH = 24


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[tuple[str, str], ...]  # (legend, PromQL)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8


def rate(metric: str, by: str = "", matchers: str = "") -> str:
    """`sum by (by) (rate(metric{instance, matchers}[$__rate_interval]))`."""
    selector = ", ".join(m for m in (ON, matchers) if m)
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{selector}}}[{RATE}]))"


def quantile(q: float, metric: str, by: str = "") -> str:
    grouping = ", ".join(filter(None, (by, "le")))
    return f"histogram_quantile({q}, {rate(metric + '_bucket', grouping)})"


def gauge(metric: str, by: str = "", aggregate: str = "sum") -> str:
    grouping = f" by ({by})" if by else ""
    return f"{aggregate}{grouping} ({metric}{{{ON}}})"


QUERIES = "prsm_queries_total"
ERRORS = rate(QUERIES, matchers='status=~"5.."')

ROWS: dict[str, list[Panel]] = {
    "Queries": [
        Panel(
            "Queries per second by status",
            "Answered queries, by HTTP status.",
            (("{{status}}", rate(QUERIES, "status")),),
            unit="reqps",
        ),
        Panel(
            "Error ratio (5xx)",
            "Share of queries answered 5xx; 0 while none fails.",
            (("5xx", f"({ERRORS} / {rate(QUERIES)}) or (0 * {rate(QUERIES)})"),),
            unit="percentunit",
        ),
        Panel(
            "Query time",
            "p50, p95 and p99 of query time.",
            tuple(
                (f"p{round(q * 100)}", quantile(q, "prsm_query_duration_seconds"))
                for q in (0.5, 0.95, 0.99)
            ),
            unit="s",
        ),
        Panel(
            "Tokens per second by model and tier",
            "Tokens generated, by model and user tier.",
            (("{{model}} {{user_tier}}", rate("prsm_tokens_used_total", "model, user_tier")),),
        ),
        Panel(
            "Active connections",
            "Requests being served now.",
            (("connections", gauge("prsm_active_connections")),),
        ),
        Panel(
            "Queries cancelled",
            "Queries stopped before their answer was complete, by reason.",
            (("{{reason}}", rate("prsm_queries_cancelled_total", "reason")),),
            unit="reqps",
        ),
        Panel(
            "Response cache",
            "Repeatable queries answered from the cache (hit), computed (miss), or missed "
            "because Redis failed (error); and bytes of answers kept per second.",
            (
                ("{{result}}", rate("prsm_cache_requests_total", "result")),
                ("bytes kept / s", rate("prsm_cache_stored_bytes_total")),
            ),
        ),
    ],
    "Engine": [
        Panel(
            "In flight",
            "Queries the engine generates now, by model.",
            (("{{model}}", gauge("prsm_engine_in_flight", "model")),),
        ),
        Panel(
            "Waiting",
            "Queries waiting for the engine, by model.",
            (("{{model}}", gauge("prsm_engine_waiting", "model")),),
        ),
        Panel(
            "Rejected",
            "Queries refused as saturated (503) or timed out waiting (504).",
            (("{{model}} {{reason}}", rate("prsm_engine_rejected_total", "model, reason")),),
            unit="reqps",
        ),
    ],
    "Gateway": [
        Panel(
            "Requests by route and status",
            "Requests answered by the gateway.",
            (("{{route}} {{status}}", rate("prsm_gateway_requests_total", "route, status")),),
            unit="reqps",
        ),
        Panel(
            "Rate limited",
            "Requests refused by a route's rate limit (429).",
            (("{{route}}", rate("prsm_gateway_rate_limited_total", "route")),),
            unit="reqps",
        ),
        Panel(
            "Upstream attempts by outcome",
            "Tries to reach an upstream instance: retries and failures show here.",
            (
                (
                    "{{pool}} {{outcome}}",
                    rate("prsm_gateway_upstream_attempts_total", "pool, outcome"),
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Circuit breakers",
            "1 for the state each breaker is in.",
            (
                (
                    "{{breaker}} {{state}}",
                    gauge("prsm_circuit_breaker_state", "breaker, state", "max"),
                ),
            ),
            kind="state-timeline",
            width=24,
        ),
    ],
    "Jobs": [
        Panel(
            "Jobs finished",
            "Jobs finished per second, by type and outcome.",
            (("{{type}} {{status}}", rate("prsm_jobs_total", "type, status")),),
            width=6,
        ),
        Panel(
            "Job duration p95",
            "95th percentile of job run time, by type.",
            (("{{type}}", quantile(0.95, "prsm_job_duration_seconds", "type")),),
            unit="s",
            width=6,
        ),
        Panel(
            "Queue depth",
            "Jobs waiting or scheduled, by type.",
            (("{{type}}", gauge("prsm_job_queue_depth", "type", "max")),),
            width=6,
        ),
        Panel(
            "Callbacks",
            "Callback deliveries per second, by outcome.",
            (("{{status}}", rate("prsm_callbacks_total", "status")),),
            width=6,
        ),
    ],
    "Events": [
        Panel(
            "Events published",
            "Query events written to Redis, by type.",
            (("{{type}}", rate("prsm_events_published_total", "type")),),
        ),
        Panel(
            "Events buffered",
            "Query events waiting to be written to Redis.",
            (("buffered", gauge("prsm_events_buffered")),),
        ),
        Panel(
            "Events dropped",
            "Query events lost, by reason: an alert fires on any.",
            (("{{reason}}", rate("prsm_events_dropped_total", "reason")),),
        ),
    ],
}


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [target(n, legend, expr) for n, (legend, expr) in enumerate(panel.targets)],
    }


def target(n: int, legend: str, expr: str) -> dict[str, Any]:
    return {"refId": chr(ord("A") + n), "datasource": DATASOURCE, "expr": expr,
            "legendFormat": legend}  # fmt: skip


def panels() -> list[dict[str, Any]]:
    laid_out: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS.items():
        laid_out.append(
            {"id": len(laid_out) + 1, "type": "row", "title": title, "collapsed": False,
             "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}, "panels": []}
        )  # fmt: skip
        y += 1
        x = 0
        for panel in row:
            if x + panel.width > WIDTH:
                x, y = 0, y + 8
            laid_out.append(panel_json(panel, len(laid_out) + 1, x, y))
            x += panel.width
        y += 8
    return laid_out


def variables() -> list[dict[str, Any]]:
    instances = 'label_values(up{job=~".*prsm.*"}, instance)'
    return [
        {"type": "datasource", "name": "datasource", "label": "Data source",
         "query": "prometheus", "hide": 0, "refresh": 1},
        {"type": "query", "name": "instance", "label": "Instance", "datasource": DATASOURCE,
         "query": {"query": instances, "refId": "instances"},
         "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*", "sort": 1,
         "current": {"text": "All", "value": "$__all"}},
    ]  # fmt: skip


def dashboard() -> dict[str, Any]:
    return {
        "uid": "prsm-overview",
        "title": "PRSM",
        "description": "PRSM's API, engine, gateway, jobs and events (docs/runbook.md for alerts)",
        "tags": ["prsm"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": variables()},
        "annotations": {"list": []},
        "panels": panels(),
        "links": [],
    }


def rendered() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(rendered())
    sys.stdout.write(f"wrote {DASHBOARD_PATH}\n")
