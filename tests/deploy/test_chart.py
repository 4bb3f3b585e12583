"""The Helm chart: lint, render and validate every profile against Kubernetes' schemas, refuse
misspelled values, and render what the drain, the security rules and the gateway need."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from prsm.config import load_settings
from prsm.gateway.config import parse_gateway_config
from prsm.gateway.run import default_config
from tests.deploy.conftest import ROOT
from tests.deploy.typescript import kubernetes_type

pytestmark = pytest.mark.deploy

CHART = ROOT / "deploy" / "helm" / "prsm"
PROFILES = {
    "default": [],
    "external-redis": ["-f", str(ROOT / "deploy/helm/profiles/external-redis.yaml")],
    "sentinel": ["-f", str(ROOT / "deploy/helm/profiles/sentinel.yaml")],
    "everything": ["-f", str(ROOT / "deploy/helm/profiles/everything.yaml")],
    "blue-green": ["-f", str(ROOT / "deploy/helm/profiles/blue-green.yaml")],
    "mesh-canary": ["-f", str(ROOT / "deploy/helm/profiles/mesh-canary.yaml")],
    "two-models": ["-f", str(ROOT / "deploy/helm/profiles/two-models.yaml")],
}
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    """`helm template` of the chart with `args`: its objects."""
    text = subprocess.run(
        [str(helm), "template", "prsm", str(CHART), "--namespace", "ai", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def refused(helm: Path, *args: str) -> str:
    """`helm template` with `args` fails: its error output."""
    result = subprocess.run(
        [str(helm), "template", "prsm", str(CHART), *args], capture_output=True, text=True
    )
    assert result.returncode != 0, "helm template accepted it"
    return result.stderr


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def configmap_file(docs: list[dict[str, Any]], name: str, key: str) -> Any:
    return yaml.safe_load(objects(docs, "ConfigMap")[name]["data"][key])


@pytest.mark.parametrize("profile", PROFILES)
def test_lint_strict(helm: Path, profile: str) -> None:
    """`helm lint --strict` passes for each profile."""
    subprocess.run([str(helm), "lint", "--strict", str(CHART), *PROFILES[profile]], check=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_is_valid_kubernetes(
    helm: Path, kubernetes_validate: Path, tmp_path: Path, profile: str, version: str
) -> None:
    """Each profile's manifests pass `kubernetes-validate --strict` (unknown fields are errors)
    against Kubernetes 1.30 and the newest schemas; it has no schema only for the Istio, Argo
    Rollouts and Prometheus Operator kinds, which test_chart_mesh.py type-checks strictly."""
    docs = render(helm, "--kube-version", version, *PROFILES[profile])
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [str(kubernetes_validate), "--strict", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    custom = [doc for doc in docs if kubernetes_type(doc)]
    unchecked = {line.split("kind ")[1].split()[0] for line in result.stdout.splitlines()
                 if "Couldn't find schema" in line}  # fmt: skip
    assert unchecked == {doc["kind"] for doc in custom}
    assert result.stdout.count("passed for resource") == len(docs) - len(custom)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "api.replcas=3"], "'replcas' not allowed"),
        (["--set", "settings.server.drain_secnds=3"], "'drain_secnds' not allowed"),
        (["--set", "settings.engine.kind=gpt"], "/settings/engine/kind"),
        (
            ["--set", "gateway.config.routes[0].prefix=/x", "--set",
             "gateway.config.routes[0].pool=api", "--set",
             "gateway.config.routes[0].retries.perTryTimout=30"],
            "'perTryTimout' not allowed",
        ),
        (["--set", "settings.api_keys=leaked"], "'api_keys' not allowed"),
        (["--set", "redis.url=localhost:6379"], "/redis/url"),
        (["--set", "modelGroups[0].name=Big_Ones", "--set", "modelGroups[0].models[0].kind=bert"],
         "/modelGroups/0/name"),
        (["--set", "modelGroups[0].name=big", "--set", "modelGroups[0].models[0].kynd=bert"],
         "'kynd' not allowed"),
    ],
)  # fmt: skip
def test_misspelled_or_misplaced_values_are_refused(
    helm: Path, values: list[str], message: str
) -> None:
    """values.schema.json refuses a typo anywhere, secrets in settings, a malformed Redis URL."""
    assert message in refused(helm, *values)


def test_a_worker_without_redis_is_refused_with_the_fix(helm: Path) -> None:
    """No Redis and the worker on: the install stops and says what to set."""
    error = refused(helm, "--set", "redis.embedded.enabled=false")
    assert "the worker needs Redis: set redis.url" in error


@pytest.mark.parametrize("profile", PROFILES)
def test_rendered_settings_and_gateway_config_load_in_prsm(helm: Path, profile: str) -> None:
    """prsm.yaml and gateway.yaml as rendered are accepted by PRSM's own loaders."""
    docs = render(helm, *PROFILES[profile])
    settings = configmap_file(docs, "prsm-settings", "prsm.yaml")
    assert load_settings(**settings).environment == "production"
    gateway = configmap_file(docs, "prsm-gateway", "gateway.yaml")
    parse_gateway_config(gateway, redis_url="redis://r:6379/0")


def test_the_default_gateway_routes_are_prsm_gateways_own(helm: Path) -> None:
    """The chart's default routes equal `prsm gateway`'s default config; its pool finds the API
    pods from their EndpointSlices; with Redis, replicas share the rate-limit budgets."""
    docs = render(helm)
    gateway_yaml = configmap_file(docs, "prsm-gateway", "gateway.yaml")
    rendered = parse_gateway_config(gateway_yaml, redis_url="redis://r:6379/0")
    assert rendered.routes == default_config("http://unused:1").routes
    discovery = rendered.pools["api"].discovery
    assert (discovery.kind, discovery.service) == ("kubernetes", "prsm-api")  # type: ignore[union-attr]
    assert rendered.rate_limit_storage == "redis"
    service = objects(docs, "Service")["prsm-api"]
    assert service["spec"]["ports"][0]["name"] == "http"  # the port discovery looks for


def test_the_gateway_can_balance_by_prompt_prefix(helm: Path) -> None:
    """`gateway.balancer: prefix_affinity`: the default pools balance by prefix, each replica's
    record sized from the engine's KV cache (max_batch x context_size)."""
    docs = render(helm, "--set", "gateway.balancer=prefix_affinity",
                  "--set", "settings.engine.max_batch=4",
                  "--set", "settings.engine.context_size=4096")  # fmt: skip
    gateway_yaml = configmap_file(docs, "prsm-gateway", "gateway.yaml")
    pool = parse_gateway_config(gateway_yaml, redis_url="redis://r:6379/0").pools["api"]
    assert (pool.balancer, pool.affinity.cache_tokens) == ("prefix_affinity", 16384)
    assert "gateway/balancer" in refused(helm, "--set", "gateway.balancer=sticky")


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Everything that runs pods: Deployments, the API's Rollout, the embedded Redis."""
    return objects(docs, "Deployment") | objects(docs, "Rollout") | objects(docs, "StatefulSet")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


@pytest.mark.parametrize("profile", PROFILES)
def test_termination_grace_covers_prestop_and_the_drain(helm: Path, profile: str) -> None:
    """grace ≥ preStop + the process's own drain bound (+ uvicorn's 10 s to close): API by
    server.drain_timeout_seconds, gateway by its grace and longest route timeout, worker by
    jobs.shutdown_grace_seconds."""
    docs = render(helm, *PROFILES[profile])
    settings = load_settings(**configmap_file(docs, "prsm-settings", "prsm.yaml"))
    gateway_yaml = configmap_file(docs, "prsm-gateway", "gateway.yaml")
    routes = parse_gateway_config(gateway_yaml, redis_url="redis://r:6379/0").routes
    bounds = {
        "prsm-api": settings.server.drain_timeout_seconds + 10,
        "prsm-gateway": settings.gateway.drain_seconds + max(r.timeout for r in routes) + 11,
        "prsm-worker": settings.jobs.shutdown_grace_seconds + 10,
    }
    for name, deployment in (objects(docs, "Deployment") | objects(docs, "Rollout")).items():
        pod = deployment["spec"]["template"]["spec"]
        pre_stop = container(deployment).get("lifecycle", {}).get("preStop")
        sleep = int(pre_stop["exec"]["command"][1]) if pre_stop else 0
        bound = bounds["prsm-api" if name.startswith("prsm-api") else name]
        assert pod["terminationGracePeriodSeconds"] >= sleep + bound, name


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_is_locked_down(helm: Path, profile: str) -> None:
    """Non-root, read-only root file system, no capabilities, RuntimeDefault seccomp, no
    privilege escalation; only the gateway mounts a service account token."""
    docs = render(helm, *PROFILES[profile])
    assert workloads(docs)
    for name, workload in workloads(docs).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for each in pod["containers"]:
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is (name == "prsm-gateway"), name


def test_probes_and_the_specifications_resources(helm: Path) -> None:
    """API: startup /started, readiness /ready, liveness /health; the worker: readiness /ready
    and liveness /health on its metrics port; requests 512Mi/250m, limits 2Gi/1000m; the
    engine's threads follow the CPU limit."""
    deployments = objects(render(helm), "Deployment")
    api, worker = deployments["prsm-api"], deployments["prsm-worker"]
    probes = {kind: container(api)[kind]["httpGet"]["path"] for kind in
              ("startupProbe", "readinessProbe", "livenessProbe")}  # fmt: skip
    assert probes == {"startupProbe": "/started", "readinessProbe": "/ready",
                      "livenessProbe": "/health"}  # fmt: skip
    worker_probes = {kind: container(worker)[kind]["httpGet"] for kind in
                     ("readinessProbe", "livenessProbe")}  # fmt: skip
    assert worker_probes == {"readinessProbe": {"path": "/ready", "port": "metrics"},
                             "livenessProbe": {"path": "/health", "port": "metrics"}}  # fmt: skip
    assert container(api)["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1000m", "memory": "2Gi"},
    }
    assert env_of(api)["PRSM_ENGINE__THREADS"] == "1"
    two_cpus = objects(render(helm, "--set", "api.resources.limits.cpu=2"), "Deployment")
    assert env_of(two_cpus["prsm-api"])["PRSM_ENGINE__THREADS"] == "2"


def test_discovery_role_is_read_only_endpointslices(helm: Path) -> None:
    """The only permission: get/list/watch EndpointSlices in the release's namespace."""
    [role] = objects(render(helm), "Role").values()
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]}
    ]  # fmt: skip


def test_existing_secret_replaces_the_charts_own(helm: Path) -> None:
    """With auth.existingSecret no Secret is rendered and every key is read from the named one."""
    docs = render(helm, *PROFILES["external-redis"])
    assert objects(docs, "Secret") == {}
    names = {
        ref["secretKeyRef"]["name"]
        for deployment in objects(docs, "Deployment").values()
        for ref in env_of(deployment).values()
        if isinstance(ref, dict)
    }
    assert names == {"prsm-keys"}
    assert objects(docs, "StatefulSet") == {}  # redis.url given: no embedded Redis


def test_the_sentinel_profile_names_the_sentinels_and_confirms_on_every_replica(
    helm: Path,
) -> None:
    """Every PRSM workload gets the Sentinel URL and both passwords from the Secret; jobs are
    acknowledged once both replicas hold them; no embedded Redis."""
    docs = render(helm, *PROFILES["sentinel"])
    for deployment in objects(docs, "Deployment").values():
        env = env_of(deployment)
        assert env["PRSM_REDIS_URL"].startswith("redis+sentinel://")
        secret = env["PRSM_REDIS_SENTINEL_PASSWORD"]["secretKeyRef"]
        assert (secret["name"], secret["key"]) == ("prsm-keys", "redis-sentinel-password")
    settings = load_settings(**configmap_file(docs, "prsm-settings", "prsm.yaml"))
    assert settings.redis_confirm_replicas == 2
    assert objects(docs, "StatefulSet") == {}


def test_components_can_be_turned_off(helm: Path) -> None:
    """worker and gateway off: only the API's objects (and no Redis requirement)."""
    docs = render(
        helm, "--set", "worker.enabled=false", "--set", "gateway.enabled=false",
        "--set", "redis.embedded.enabled=false",
    )  # fmt: skip
    assert set(objects(docs, "Deployment")) == {"prsm-api"}
    assert objects(docs, "Role") == {}
    assert "PRSM_REDIS_URL" not in env_of(objects(docs, "Deployment")["prsm-api"])


def test_network_policy_lets_only_the_gateway_worker_and_listed_namespaces_in(
    helm: Path,
) -> None:
    """The API's NetworkPolicy names the gateway and worker pods and the listed namespaces."""
    docs = render(helm, "--set", "networkPolicy.allowNamespaces={monitoring}")
    [rule] = objects(docs, "NetworkPolicy")["prsm-api"]["spec"]["ingress"]
    peers = [
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        or p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in rule["from"]
    ]
    assert peers == ["gateway", "worker", "monitoring"]


def test_the_chart_secret_holds_a_worker_key_the_api_accepts(helm: Path) -> None:
    """The worker's key is among the API's keys (tier internal); given keys come first."""
    import base64

    docs = render(helm, "--set", "auth.apiKeys={k1:premium}")
    data = {k: base64.b64decode(v).decode() for k, v in objects(docs, "Secret")[
        "prsm-secrets"]["data"].items()}  # fmt: skip
    keys = data["api-keys"].split(",")
    assert keys[0] == "k1:premium"
    assert keys[1] == f"{data['worker-api-key']}:internal"
    assert len(data["callback-secret"]) >= 32


def test_a_values_file_with_a_misspelled_key_is_refused(helm: Path, tmp_path: Path) -> None:
    """`helm template -f values.yaml` where the file misspells a key deep in a route: refused,
    naming the key; the same file spelled right renders."""
    route = {"prefix": "/api/ai", "pool": "api", "retries": {"perTryTimout": 30}}
    values = {"gateway": {"config": {"routes": [route]}}}
    misspelled = tmp_path / "values.yaml"
    misspelled.write_text(yaml.safe_dump(values))
    assert "'perTryTimout' not allowed" in refused(helm, "-f", str(misspelled))
    route["retries"] = {"per_try_timeout": 30}
    misspelled.write_text(yaml.safe_dump(values))
    assert objects(render(helm, "-f", str(misspelled)), "Deployment")


def test_a_model_group_runs_on_pods_of_its_own_and_the_gateway_routes_to_it(helm: Path) -> None:
    """The two-model profile: the embedding model's Deployment and Service beside the API's,
    its pods serving only its models; the API's Service no longer selects them; the gateway
    has a pool per group, routes /v1 by model, and gets the key it asks the pools' model
    lists with (only then)."""
    docs = render(helm, *PROFILES["two-models"])
    deployments, services = objects(docs, "Deployment"), objects(docs, "Service")
    group = deployments["prsm-api-embeddings"]["spec"]["template"]
    env = {e["name"]: e.get("value") for e in group["spec"]["containers"][0]["env"]}
    models = load_settings(models=json.loads(env["PRSM_MODELS"])).served_models()
    assert [(m.name, m.serves) for m in models] == [("all-MiniLM-L6-v2", "embeddings")]
    assert "PRSM_MODELS" not in {
        e["name"]
        for e in deployments["prsm-api"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    scaled = objects(docs, "HorizontalPodAutoscaler")["prsm-api-embeddings"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "prsm-api-embeddings"
    assert "replicas" not in deployments["prsm-api-embeddings"]["spec"]
    labels = group["metadata"]["labels"]
    assert services["prsm-api-embeddings"]["spec"]["selector"].items() <= labels.items()
    assert not services["prsm-api"]["spec"]["selector"].items() <= labels.items()
    config = configmap_file(docs, "prsm-gateway", "gateway.yaml")
    gateway = parse_gateway_config(config, redis_url="redis://r:6379/0")
    assert set(gateway.pools) == {"api", "models-embeddings"}
    assert [r.prefix for r in gateway.routes if r.models is not None] == ["/v1"]
    gateway_env = {
        name: objects(render_of, "Deployment")["prsm-gateway"]["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
        for name, render_of in (("two-models", docs), ("default", render(helm)))
    }
    assert "PRSM_API_KEY" in {e["name"] for e in gateway_env["two-models"]}
    assert "PRSM_API_KEY" not in {e["name"] for e in gateway_env["default"]}
