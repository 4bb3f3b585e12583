"""A real Prometheus scrapes a running PRSM stack (API, worker and gateway on the embedded
Redis) under a short load; every recording rule, every dashboard query and every analysis
query then returns data through Prometheus' HTTP API: the metric names and labels in the YAML
and JSON are the ones the code exports."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from prsm.embedded_redis import EmbeddedRedis
from tests.deploy.conftest import ROOT, debian_tool
from tests.deploy.test_chart import PROFILES, objects, render
from tests.support import (
    API_KEY,
    Reply,
    free_port,
    prsm_gateway,
    prsm_serve,
    prsm_worker,
    scripted_server,
    stop_process,
    wait_for,
    wait_until_ready,
    worker_env,
)

pytestmark = pytest.mark.deploy

RULES = ROOT / "deploy" / "prometheus" / "prsm-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "prsm.json"
# What the chart's PodMonitor adds to every series of a rolled-out pod.
POD_TEMPLATE_HASH = "6f9c7d5b8"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
RATE_LIMIT = 20  # per minute, on the gateway's route: the load goes past it


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant query's result vector; a query Prometheus refuses fails the test."""
        response = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def wait_for_scrape(self) -> None:
        """Until every target has been scraped once more: a counter that appears with a value
        shows no increase until a later sample grows it."""
        now = time.time()
        wait_for(lambda: len(self.query(f"timestamp(up) > {now}")) == 3, 30)


@contextlib.contextmanager
def prometheus(tmp_path: Path, targets: dict[str, str]) -> Iterator[Prometheus]:
    """`prometheus` on loopback scraping each job's /metrics every second, with PRSM's rules."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {
                        "targets": [address],
                        "labels": {"rollouts_pod_template_hash": POD_TEMPLATE_HASH},
                    }
                ],
            }
            for job, address in targets.items()
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [debian_tool("prometheus", "prometheus"), f"--config.file={config_path}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url + "/-/ready", time.monotonic() + 60, process)
        yield Prometheus(url)
    finally:
        stop_process(process)


def host_port(url: str) -> str:
    return url.removeprefix("http://")


def run_load(api: str, gateway: str, receiver: str, server: Prometheus) -> None:
    """Queries through the gateway past its rate limit; bursts straight at the API that its
    one-query engine turns partly away (503); a malformed query (422); a job with a callback."""
    with httpx.Client(headers=AUTH, timeout=30) as http:
        burst(http, api)
        server.wait_for_scrape()
        statuses = [
            http.post(
                gateway + "/api/v1/query", json={"prompt": f"q{n}", "userId": "u1"}
            ).status_code
            for n in range(RATE_LIMIT + 5)
        ]
        assert statuses.count(200) == RATE_LIMIT, statuses
        assert statuses.count(429) == 5, statuses
        burst(http, api)
        assert (
            http.post(api + "/api/v1/query", json={"prompt": "", "userId": "u3"}).status_code == 422
        )
        job = http.post(
            api + "/api/v1/jobs",
            json={
                "type": "priority-query",
                "data": {"prompt": "job", "userId": "u4"},
                "callbackUrl": receiver,
            },
        ).json()["jobId"]
        wait_for(lambda: http.get(f"{api}/api/v1/jobs/{job}").json()["status"] == "complete", 30)


def burst(http: httpx.Client, api: str) -> None:
    """Four queries at once at an engine that takes one and queues none: some are 503."""
    with ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(
                lambda n: http.post(api + "/api/v1/query", json={"prompt": f"b{n}",
                                                                 "userId": "u2"}).status_code,
                range(4),
            )
        )  # fmt: skip
    assert set(statuses) == {200, 503}, statuses


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """The stack, loaded, and a Prometheus that has scraped it before and after the load."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    api_env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_DELAY_SECONDS": "0.5",
        "PRSM_ENGINE__MAX_QUEUE": "0",
        # On, so that the dashboard's cache panel has series (every query asks anew: misses).
        "PRSM_CACHE__ENABLED": "true",
    }
    worker_port = free_port()
    with (
        EmbeddedRedis(tmp_path / "redis") as redis_url,
        prsm_serve(tmp_path, env={"PRSM_REDIS_URL": redis_url} | api_env) as api,
        scripted_server(Reply(200)) as receiver,
        prsm_worker(
            tmp_path,
            worker_env(redis_url, api.base_url, PRSM_JOBS__METRICS_PORT=str(worker_port)),
        ),
        prsm_gateway(
            tmp_path,
            {
                "pools": {"api": {"discovery": {"kind": "static", "urls": [api.base_url]}}},
                "routes": [
                    {
                        "prefix": "/api/v1",
                        "pool": "api",
                        "rate_limit": {"limit": f"{RATE_LIMIT}/minute"},
                    }
                ],
            },
        ) as gateway,
        prometheus(
            tmp_path,
            {
                "prsm-api": host_port(api.base_url),
                "prsm-gateway": host_port(gateway.base_url),
                "prsm-worker": f"127.0.0.1:{worker_port}",
            },
        ) as server,
    ):
        wait_for(lambda: len(server.query("up == 1")) == 3, 30)
        run_load(api.base_url, gateway.base_url, receiver.base_url + "/hook", server)
        server.wait_for_scrape()
        wait_for(lambda: server.query("prsm:gateway_requests:rate5m"), 30)
        yield server


def recording_rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "record" in rule]


def dashboard_queries() -> list[str]:
    """Every panel target, with Grafana's variables as a viewer of all instances has them."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<series>, <label>): the series
            exprs.append(re.sub(r"^label_values\((.*), \w+\)$", r"\1", variable["query"]["query"]))
    return [e.replace("$__rate_interval", "1m").replace("$instance", ".*") for e in exprs]


def analysis_queries(helm: Path) -> dict[str, str]:
    """The AnalysisTemplates' queries, with the args a rollout of the scraped pods passes."""
    docs = render(helm, *PROFILES["blue-green"], "--set", "rollout.analysis.window=1m")
    queries = {}
    for name, template in objects(docs, "AnalysisTemplate").items():
        [metric] = template["spec"]["metrics"]
        query = metric["provider"]["prometheus"]["query"]
        queries[name] = query.replace("{{args.service}}", "prsm-api").replace(
            "{{args.pod-template-hash}}", POD_TEMPLATE_HASH
        )
    return queries


def test_every_recording_rule_is_recorded(scraped: Prometheus) -> None:
    """Prometheus evaluates each recording rule to data, as it records it."""
    rules = recording_rules()
    assert len(rules) == 7
    for rule in rules:
        assert scraped.query(rule["expr"]), rule["record"]
        wait_for(lambda rule=rule: scraped.query(rule["record"]), 10)  # type: ignore[misc]


def test_the_error_ratio_is_the_share_of_5xx(scraped: Prometheus) -> None:
    """The recorded error ratio of the API is above 0 (the burst's 503s) and below 1."""
    [api] = scraped.query('prsm:query_errors:ratio_rate5m{job="prsm-api"}')
    assert 0 < float(api["value"][1]) < 1


def test_every_dashboard_query_returns_data(scraped: Prometheus) -> None:
    """Each panel query (and the instance variable's) returns at least one series."""
    queries = dashboard_queries()
    assert len(queries) >= 22
    empty = [expr for expr in queries if not scraped.query(expr)]
    assert empty == []


def test_every_analysis_query_returns_a_judgeable_value(scraped: Prometheus, helm: Path) -> None:
    """success-rate and latency of the scraped pods: one number each, in range."""
    queries = analysis_queries(helm)
    assert set(queries) == {"prsm-success-rate", "prsm-latency"}
    [rate] = scraped.query(queries["prsm-success-rate"])
    assert 0 < float(rate["value"][1]) < 1  # the burst's 503s count against it
    [latency] = scraped.query(queries["prsm-latency"])
    assert 0 < float(latency["value"][1]) <= 30


def test_a_saturated_engine_sets_off_its_alert(scraped: Prometheus) -> None:
    """The burst's rejections make PRSMEngineSaturated pending (it fires after its `for`)."""
    wait_for(lambda: scraped.query('ALERTS{alertname="PRSMEngineSaturated"}'), 10)
    [alert] = scraped.query('ALERTS{alertname="PRSMEngineSaturated"}')
    assert alert["metric"]["alertstate"] == "pending"
    assert alert["metric"]["job"] == "prsm-api"


def test_a_misspelled_metric_finds_nothing(scraped: Prometheus) -> None:
    """The check can fail: a dashboard query with one letter off returns no series."""
    [query] = [q for q in dashboard_queries() if "prsm_tokens_used_total" in q]
    assert scraped.query(query)
    assert scraped.query(query.replace("prsm_tokens_used_total", "prsm_token_used_total")) == []
