"""The chart's Istio, Argo Rollouts and Prometheus Operator objects: type-checked strictly
against their published types in every profile, and rendering what the specification asks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from prsm.gateway.config import OutlierSettings, Retries
from tests.deploy.conftest import ROOT
from tests.deploy.test_chart import PROFILES, objects, refused, render, workloads
from tests.deploy.typescript import DASHBOARD_TYPE, kubernetes_type, type_errors

pytestmark = pytest.mark.deploy

SPECIFICATION_STEPS = [
    {"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 30},
    {"pause": {"duration": "2m"}}, {"setWeight": 50}, {"pause": {"duration": "3m"}},
    {"setWeight": 100},
]  # fmt: skip


def typed(docs: list[dict[str, Any]]) -> list[tuple[tuple[str, str], Any]]:
    pairs = [(kubernetes_type(doc), doc) for doc in docs]
    return [(found, doc) for found, doc in pairs if found is not None]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = objects(docs, kind).values()
    return found


def test_every_profile_type_checks_strictly(helm: Path) -> None:
    """Every Istio, Argo Rollouts and Prometheus Operator object of every profile, and the
    Grafana dashboard the chart ships, compile against their published types: no unknown
    field, no wrong type, nothing required missing."""
    checked: list[tuple[tuple[str, str], Any]] = []
    for args in PROFILES.values():
        checked += typed(render(helm, *args))
    kinds = {doc["kind"] for _, doc in checked}
    assert kinds == {
        "Gateway", "VirtualService", "DestinationRule", "PeerAuthentication",
        "AuthorizationPolicy", "Rollout", "AnalysisTemplate", "PodMonitor", "PrometheusRule",
    }  # fmt: skip
    dashboard = json.loads((ROOT / "deploy/grafana/prsm.json").read_text())
    assert type_errors([*checked, (DASHBOARD_TYPE, dashboard)]) == ""


@pytest.mark.parametrize(
    ("kind", "path", "wrong", "right"),
    [
        ("VirtualService", ("spec", "http", 0, "retries"), "perTryTimout", "perTryTimeout"),
        ("DestinationRule", ("spec", "trafficPolicy", "outlierDetection"), "baseEjectionTme",
         "baseEjectionTime"),
        ("Rollout", ("spec", "strategy", "canary"), "stepz", "steps"),
        ("AnalysisTemplate", ("spec", "metrics", 0), "successCondtion", "successCondition"),
        ("Rollout", ("spec", "template", "spec", "containers", 0), "imagePullPolicyy",
         "imagePullPolicy"),
        ("PodMonitor", ("spec",), "podTargetLabel", "podTargetLabels"),
    ],
)  # fmt: skip
def test_a_misspelled_field_fails_the_type_check(
    helm: Path, kind: str, path: tuple[str | int, ...], wrong: str, right: str
) -> None:
    """One key renamed deep inside a rendered object: tsc names it."""
    docs = render(helm, *PROFILES["everything"])
    doc = copy.deepcopy(next(iter(objects(docs, kind).values())))
    parent = doc
    for step in path:
        parent = parent[step]
    parent[wrong] = parent.pop(right)
    errors = type_errors([(kubernetes_type(doc), doc)])  # type: ignore[list-item]
    assert f"'\"{wrong}\"' does not exist" in errors, errors


def test_a_misspelled_dashboard_key_fails_the_type_check() -> None:
    """The dashboard with a panel's `gridPos` misspelled does not compile."""
    dashboard = json.loads((ROOT / "deploy/grafana/prsm.json").read_text())
    dashboard["panels"][1]["gridPosition"] = dashboard["panels"][1].pop("gridPos")
    assert "'\"gridPosition\"' does not exist" in type_errors([(DASHBOARD_TYPE, dashboard)])


def test_the_virtual_service_is_the_specifications_route(helm: Path) -> None:
    """/api/v1/ prefix, 3 retries of 30 s, a timeout, no fault by default; the rest of the
    paths to the stable pods; hosts: the API's mesh name and the listed ones."""
    docs = render(helm, "--set", "istio.enabled=true", "--set", "istio.hosts={ai.example.com}")
    service = only(docs, "VirtualService")["spec"]
    assert service["hosts"] == ["prsm-api.ai.svc.cluster.local", "ai.example.com"]
    assert service["gateways"] == ["mesh", "prsm-api"]
    primary, other = service["http"]
    assert primary["match"] == [{"uri": {"prefix": "/api/v1/"}}]
    assert primary["retries"]["attempts"] == 3
    assert primary["retries"]["perTryTimeout"] == "30s"
    assert primary["timeout"] == "300s"
    assert "fault" not in primary
    assert [r["destination"]["subset"] for r in primary["route"]] == ["stable"]
    assert "match" not in other
    assert only(docs, "Gateway")["spec"]["servers"][0]["hosts"] == ["ai.example.com"]


def test_the_mesh_canary_splits_90_10_with_fault_injection(helm: Path) -> None:
    """mesh-canary: stable 90 / canary 10 to subsets the two API Deployments' pods carry, the
    canary on its own tag; the abort drill as asked."""
    docs = render(helm, *PROFILES["mesh-canary"])
    primary = only(docs, "VirtualService")["spec"]["http"][0]
    weights = {r["destination"]["subset"]: r["weight"] for r in primary["route"]}
    assert weights == {"stable": 90, "canary": 10}
    assert primary["fault"] == {"abort": {"percentage": {"value": 1}, "httpStatus": 503}}
    subsets = {s["name"]: s["labels"] for s in only(docs, "DestinationRule")["spec"]["subsets"]}
    deployments = objects(docs, "Deployment")
    for track, name in (("stable", "prsm-api"), ("canary", "prsm-api-canary")):
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert subsets[track].items() <= labels.items()
    assert deployments["prsm-api-canary"]["spec"]["replicas"] == 1
    image = deployments["prsm-api-canary"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":0.2.0-rc1")
    # The Service sends to both: its selector is in every API pod's labels.
    selector = objects(docs, "Service")["prsm-api"]["spec"]["selector"]
    for name in ("prsm-api", "prsm-api-canary"):
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


def test_mesh_retries_and_ejection_match_prsm_gateway(helm: Path) -> None:
    """Istio retries on what `prsm gateway` retries on, as long a try, as often; it ejects a
    pod after as many failures, for as long, at most the same share."""
    docs = render(helm, "--set", "istio.enabled=true")
    retries = only(docs, "VirtualService")["spec"]["http"][0]["retries"]
    ours = Retries()
    assert retries["retryOn"].split(",") == list(ours.retry_on)
    assert retries["attempts"] == ours.attempts
    assert retries["perTryTimeout"] == f"{ours.per_try_timeout:g}s"
    outliers = only(docs, "DestinationRule")["spec"]["trafficPolicy"]["outlierDetection"]
    gateway = OutlierSettings()
    assert outliers["consecutive5xxErrors"] == gateway.consecutive_failures
    assert outliers["baseEjectionTime"] == f"{gateway.base_ejection_seconds:g}s"
    assert outliers["maxEjectionPercent"] == gateway.max_ejection_share * 100


def test_mtls_is_strict_and_only_named_callers_reach_the_api(helm: Path) -> None:
    """PeerAuthentication STRICT for the release's pods; the API lets in the release's service
    account, the ingress gateway's, the listed ones, and /metrics for the monitoring namespace."""
    docs = render(helm, *PROFILES["everything"])
    assert only(docs, "PeerAuthentication")["spec"]["mtls"] == {"mode": "STRICT"}
    policy = only(docs, "AuthorizationPolicy")["spec"]
    assert policy["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    callers, metrics = policy["rules"]
    assert callers["from"][0]["source"]["principals"] == [
        "cluster.local/ns/ai/sa/prsm",
        "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        "cluster.local/ns/orders/sa/orders-service",
    ]
    assert metrics["to"] == [{"operation": {"methods": ["GET"], "paths": ["/metrics"]}}]
    assert "to" not in callers  # the callers reach every path


def test_blue_green_replaces_the_api_deployment(helm: Path) -> None:
    """blueGreen: a Rollout instead of the API Deployment, active = the API's Service (the one
    the gateway discovers), a preview Service, promotion by hand, the analysis before and
    after; the autoscaler then scales the Rollout."""
    docs = render(helm, *PROFILES["blue-green"], "--set", "api.autoscaling.enabled=true")
    assert "prsm-api" not in objects(docs, "Deployment")
    rollout = only(docs, "Rollout")
    strategy = rollout["spec"]["strategy"]["blueGreen"]
    assert strategy["activeService"] == "prsm-api"
    assert strategy["previewService"] == "prsm-api-preview"
    assert strategy["autoPromotionEnabled"] is False
    services = objects(docs, "Service")
    assert {"prsm-api", "prsm-api-preview"} <= services.keys()
    templates = set(objects(docs, "AnalysisTemplate"))
    for phase in ("prePromotionAnalysis", "postPromotionAnalysis"):
        assert {t["templateName"] for t in strategy[phase]["templates"]} == templates
        args = {a["name"]: a for a in strategy[phase]["args"]}
        assert args["service"]["value"] == "prsm-api"
        assert args["pod-template-hash"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
    target = objects(docs, "HorizontalPodAutoscaler")["prsm-api"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("argoproj.io/v1alpha1", "Rollout")
    assert workloads(docs)["prsm-api"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == (
        "serve"
    )


def test_canary_follows_the_specifications_steps_through_istio(helm: Path) -> None:
    """canary: 10 % → 1 m → 30 % → 2 m → 50 % → 3 m → 100 %, the analysis from the first pause,
    traffic through the chart's VirtualService route and DestinationRule subsets, which start
    at 100/0 and take the pods by hash (Argo adds it)."""
    docs = render(helm, *PROFILES["everything"])
    canary = only(docs, "Rollout")["spec"]["strategy"]["canary"]
    assert canary["steps"] == SPECIFICATION_STEPS
    istio = canary["trafficRouting"]["istio"]
    service = objects(docs, "VirtualService")[istio["virtualService"]["name"]]
    [route] = [r for r in service["spec"]["http"] if r["name"] in istio["virtualService"]["routes"]]
    assert {r["destination"]["subset"]: r["weight"] for r in route["route"]} == {
        "stable": 100, "canary": 0}  # fmt: skip
    rule = objects(docs, "DestinationRule")[istio["destinationRule"]["name"]]
    subsets = {s["name"] for s in rule["spec"]["subsets"]}
    assert subsets == {istio["destinationRule"]["canarySubsetName"],
                       istio["destinationRule"]["stableSubsetName"]}  # fmt: skip
    assert {t["templateName"] for t in canary["analysis"]["templates"]} == set(
        objects(docs, "AnalysisTemplate")
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "rollout.strategy=canary"], "set istio.enabled=true"),
        (["--set", "rollout.strategy=blueGreen", "--set", "istio.enabled=true",
          "--set", "istio.canary.enabled=true"], "leave it off"),
        (["--set", "rollout.strategy=rolling"], "/rollout/strategy"),
        (["--set", "istio.retries.perTryTimout=30s"], "'perTryTimout' not allowed"),
        (["--set", "istio.timeout=5 minutes"], "/istio/timeout"),
    ],
)  # fmt: skip
def test_inconsistent_mesh_values_are_refused(helm: Path, values: list[str], message: str) -> None:
    """A canary rollout without Istio, two canaries at once, an unknown strategy, a typo and a
    duration Istio would not parse: refused with the reason."""
    assert message in refused(helm, *values)


def test_analysis_templates_judge_the_new_pods_by_our_metrics(helm: Path) -> None:
    """success-rate: share of prsm_queries_total not 5xx, latency: p99 of
    prsm_query_duration_seconds, both on the analysed pods' hash, with the configured bounds."""
    docs = render(helm, *PROFILES["blue-green"], "--set-json", "rollout.analysis.maxP99Seconds=4")
    templates = objects(docs, "AnalysisTemplate")
    [rate] = templates["prsm-success-rate"]["spec"]["metrics"]
    [latency] = templates["prsm-latency"]["spec"]["metrics"]
    for metric in (rate, latency):
        query = metric["provider"]["prometheus"]["query"]
        assert 'rollouts_pod_template_hash="{{args.pod-template-hash}}"' in query
        assert 'service="{{args.service}}"' in query
    assert "prsm_queries_total" in rate["provider"]["prometheus"]["query"]
    assert rate["successCondition"].endswith("result[0] >= 0.95")
    assert "prsm_query_duration_seconds_bucket" in latency["provider"]["prometheus"]["query"]
    assert latency["successCondition"].endswith("result[0] <= 4")


def test_monitoring_objects_ship_the_repositorys_rules_and_dashboard(helm: Path) -> None:
    """The PrometheusRule holds deploy/prometheus/prsm-rules.yaml's groups; the dashboard
    ConfigMap, labelled for Grafana's sidecar, deploy/grafana/prsm.json; the PodMonitor keeps
    the rollout hash and names jobs as the rules expect."""
    docs = render(helm, *PROFILES["everything"])
    rules = yaml.safe_load((ROOT / "deploy/prometheus/prsm-rules.yaml").read_text())
    assert only(docs, "PrometheusRule")["spec"] == rules
    dashboard = objects(docs, "ConfigMap")["prsm-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboard["data"]["prsm.json"])
    assert shipped == json.loads((ROOT / "deploy/grafana/prsm.json").read_text())
    monitor = only(docs, "PodMonitor")["spec"]
    assert monitor["podTargetLabels"] == ["rollouts-pod-template-hash"]
    assert {e["port"] for e in monitor["podMetricsEndpoints"]} == {"http", "metrics"}
    relabel = monitor["podMetricsEndpoints"][0]["relabelings"][0]
    assert (relabel["targetLabel"], relabel["replacement"]) == ("job", "prsm-$1")
