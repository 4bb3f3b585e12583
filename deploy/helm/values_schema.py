"""Write the Helm chart's values.schema.json, so that a misspelled value fails `helm install`.

Every chart value is described here, strictly (an unknown key anywhere is an error), and the
free-form parts are checked against PRSM's own models: `settings` against the settings tree
(less the secrets, which the chart takes under `auth` and `redis`), `gateway.config` against
the gateway's. `python deploy/helm/values_schema.py` rewrites the file; a test keeps it current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, get_args

from prsm.config import Settings
from prsm.gateway.config import GatewayConfig, PoolConfig

SCHEMA_PATH = Path(__file__).parent / "prsm" / "values.schema.json"
# Settings the chart sets itself: secrets, its own Services, ports and processes.
CHART_OWNED_SETTINGS = ("api_keys", "api_key", "redis_url", "redis_password", "base_url")
CHART_OWNED_NESTED = {
    "jobs": ("callback_secret", "metrics_host", "metrics_port"),
    "engine": ("openai_api_key",),
    "server": ("host", "port", "workers"),
    "gateway": ("host", "port", "config"),
}

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
COUNT: Schema = {"type": "integer", "minimum": 0}
SECONDS: Schema = {"type": "number", "minimum": 0}
ANY_OBJECT: Schema = {"type": "object"}
ANY_LIST: Schema = {"type": "array"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
QUANTITY: Schema = {"type": ["string", "number"]}
DURATION: Schema = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"}


GROUP_NAME = "^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$"
"""A model group's name: part of its Deployment's and Service's names (DNS labels)."""


def strict(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these keys."""
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def resources() -> Schema:
    amounts = strict({"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY})
    return strict({"requests": amounts, "limits": amounts})


def component(*, service: bool) -> Schema:
    """What api, worker and gateway have in common."""
    properties: dict[str, Schema] = {
        "enabled": BOOLEAN,
        "replicas": COUNT,
        "resources": resources(),
        "preStopSeconds": COUNT,
        "autoscaling": strict(
            {
                "enabled": BOOLEAN,
                "minReplicas": {"type": "integer", "minimum": 1},
                "maxReplicas": {"type": "integer", "minimum": 1},
                "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1},
                "podsMetric": strict({"name": STRING, "averageValue": QUANTITY}),
            }
        ),
        "podDisruptionBudget": strict(
            {"enabled": BOOLEAN, "maxUnavailable": {"type": ["integer", "string"]}}
        ),
        "topologySpread": strict(
            {
                "enabled": BOOLEAN,
                "maxSkew": {"type": "integer", "minimum": 1},
                "whenUnsatisfiable": {"enum": ["ScheduleAnyway", "DoNotSchedule"]},
            }
        ),
        "podAnnotations": STRING_MAP,
        "podLabels": STRING_MAP,
        "nodeSelector": STRING_MAP,
        "tolerations": ANY_LIST,
        "affinity": ANY_OBJECT,
        "extraEnv": ANY_LIST,
    }
    if service:
        properties["service"] = strict(
            {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "annotations": STRING_MAP,
            }
        )
    return strict(properties)


def istio() -> Schema:
    """Mesh routing: Istio's own field names where the value is passed through."""
    percentage = {"type": "number", "minimum": 0, "maximum": 100}
    service_account = {"type": "string", "pattern": "^[a-z0-9-]+/[a-z0-9-]+$"}
    return strict(
        {
            "enabled": BOOLEAN,
            "hosts": {"type": "array", "items": STRING},
            "gateway": strict(
                {
                    "selector": STRING_MAP,
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "tlsCredentialName": STRING,
                    "serviceAccount": service_account,
                }
            ),
            "prefix": {"type": "string", "pattern": "^/"},
            "timeout": DURATION,
            "retries": strict(
                {
                    "attempts": {"type": "integer", "minimum": 0},
                    "perTryTimeout": DURATION,
                    "retryOn": STRING,
                }
            ),
            "fault": strict(
                {
                    "delay": strict({"percentage": percentage, "fixedDelay": DURATION}),
                    "abort": strict(
                        {
                            "percentage": percentage,
                            "httpStatus": {"type": "integer", "minimum": 200, "maximum": 599},
                        }
                    ),
                }
            ),
            "outlierDetection": strict(
                {
                    "consecutive5xxErrors": COUNT,
                    "interval": DURATION,
                    "baseEjectionTime": DURATION,
                    "maxEjectionPercent": percentage,
                }
            ),
            "connectionPool": strict(
                {
                    "tcp": strict({"maxConnections": COUNT, "connectTimeout": DURATION}),
                    "http": strict({"http1MaxPendingRequests": COUNT, "idleTimeout": DURATION}),
                }
            ),
            "canary": strict(
                {"enabled": BOOLEAN, "weight": percentage, "replicas": COUNT, "tag": STRING}
            ),
            "allowServiceAccounts": {"type": "array", "items": service_account},
            "metricsNamespaces": {"type": "array", "items": STRING},
        }
    )


def rollout() -> Schema:
    return strict(
        {
            "strategy": {"enum": ["none", "blueGreen", "canary"]},
            "blueGreen": strict({"autoPromotionEnabled": BOOLEAN, "scaleDownDelaySeconds": COUNT}),
            "canary": strict({"steps": {"type": "array", "items": ANY_OBJECT, "minItems": 1}}),
            "analysis": strict(
                {
                    "prometheusUrl": {"type": "string", "pattern": "^https?://"},
                    "interval": DURATION,
                    "window": DURATION,
                    "count": {"type": "integer", "minimum": 1},
                    "failureLimit": COUNT,
                    "minSuccessRate": {"type": "number", "minimum": 0, "maximum": 1},
                    "maxP99Seconds": {"type": "number", "exclusiveMinimum": 0},
                }
            ),
        }
    )


def model_schema(model: type[Any], left_out: tuple[str, ...] = ()) -> tuple[Schema, Schema]:
    """A pydantic model's JSON schema without `left_out` fields, and its definitions."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    for name in left_out:
        schema["properties"].pop(name)
    schema.pop("required", None)  # the chart fills in what a user leaves out
    schema["additionalProperties"] = False
    return schema, definitions


def settings_schema() -> tuple[Schema, Schema]:
    schema, definitions = model_schema(Settings, CHART_OWNED_SETTINGS)
    for section, names in CHART_OWNED_NESTED.items():
        nested = definitions[schema["properties"][section]["$ref"].rsplit("/", 1)[1]]
        for name in names:
            nested["properties"].pop(name)
    return schema, definitions


def values_schema() -> Schema:
    settings, settings_definitions = settings_schema()
    gateway_config, gateway_definitions = model_schema(GatewayConfig)
    clash = settings_definitions.keys() & gateway_definitions.keys()
    if clash:
        raise SystemExit(f"settings and gateway config both define {sorted(clash)}")
    gateway = component(service=True)
    gateway["properties"]["config"] = gateway_config
    balancers = PoolConfig.model_fields["balancer"].annotation
    gateway["properties"]["balancer"] = {"enum": list(get_args(balancers))}
    api = component(service=True)
    api["properties"]["workers"] = {"type": "integer", "minimum": 1, "maximum": 64}
    api["properties"]["startupProbe"] = strict(
        {
            "periodSeconds": {"type": "integer", "minimum": 1},
            "failureThreshold": {"type": "integer", "minimum": 1},
        }
    )
    schema = strict(
        {
            "image": strict(
                {
                    "repository": STRING,
                    "tag": STRING,
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                }
            ),
            "imagePullSecrets": ANY_LIST,
            "nameOverride": STRING,
            "fullnameOverride": STRING,
            "commonLabels": STRING_MAP,
            "settings": settings,
            "auth": strict(
                {
                    "existingSecret": STRING,
                    "apiKeys": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "callbackSecret": STRING,
                    "openaiApiKey": STRING,
                }
            ),
            "redis": strict(
                {
                    "url": {"type": "string", "pattern": r"^(|rediss?://.+|redis\+sentinel://.+)$"},
                    "password": STRING,
                    "embedded": strict(
                        {
                            "enabled": BOOLEAN,
                            "storage": QUANTITY,
                            "storageClassName": STRING,
                            "resources": resources(),
                        }
                    ),
                }
            ),
            "api": api,
            "modelGroups": {
                "type": "array",
                "items": strict(
                    {
                        "name": {"type": "string", "pattern": GROUP_NAME},
                        "replicas": {"type": "integer", "minimum": 0},
                        "resources": resources(),
                        "autoscaling": strict(
                            {
                                "enabled": BOOLEAN,
                                "minReplicas": {"type": "integer", "minimum": 1},
                                "maxReplicas": {"type": "integer", "minimum": 1},
                                "targetCPUUtilizationPercentage": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "maximum": 100,
                                },
                            }
                        ),
                        "models": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"$ref": "#/$defs/ModelSettings"},
                        },
                    },
                    required=("name", "models"),
                ),
            },
            "worker": component(service=False),
            "gateway": gateway,
            "serviceAccount": strict(
                {"create": BOOLEAN, "name": STRING, "annotations": STRING_MAP}
            ),
            "rbac": strict({"create": BOOLEAN}),
            "networkPolicy": strict(
                {"enabled": BOOLEAN, "allowNamespaces": {"type": "array", "items": STRING}}
            ),
            "istio": istio(),
            "rollout": rollout(),
            "monitoring": strict(
                {
                    "podMonitor": strict(
                        {"enabled": BOOLEAN, "interval": DURATION, "labels": STRING_MAP}
                    ),
                    "prometheusRule": strict({"enabled": BOOLEAN, "labels": STRING_MAP}),
                    "dashboard": strict(
                        {"enabled": BOOLEAN, "labels": STRING_MAP, "folder": STRING}
                    ),
                }
            ),
            "podSecurityContext": ANY_OBJECT,
            "securityContext": ANY_OBJECT,
        }
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "PRSM Helm chart values",
        **schema,
        "$defs": settings_definitions | gateway_definitions,
    }


def rendered() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(rendered())
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
