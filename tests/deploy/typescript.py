"""Strict checks by TypeScript's compiler: each object becomes a typed object literal, so a
field its schema does not name (`perTryTimout`), a wrong type or a missing required field is a
compile error. The types are the published ones: @kubernetes-models (generated from Istio's,
Argo Rollouts' and the Prometheus Operator's CRDs) and @grafana/schema (the dashboard model).
deploy/check/package.json pins them; `make deploy-check` installs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import ROOT

CHECK = ROOT / "deploy" / "check"
TSC = CHECK / "node_modules" / ".bin" / "tsc"
# (apiVersion, kind) → (module, interface).
KUBERNETES_TYPES = {
    ("networking.istio.io/v1", kind): ("@kubernetes-models/istio/networking.istio.io/v1", kind)
    for kind in ("Gateway", "VirtualService", "DestinationRule")
} | {
    ("security.istio.io/v1", kind): ("@kubernetes-models/istio/security.istio.io/v1", kind)
    for kind in ("PeerAuthentication", "AuthorizationPolicy")
} | {
    ("argoproj.io/v1alpha1", kind): ("@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1", kind)
    for kind in ("Rollout", "AnalysisTemplate")
} | {
    ("monitoring.coreos.com/v1", kind): (
        "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", kind
    )
    for kind in ("PodMonitor", "PrometheusRule")
}  # fmt: skip
DASHBOARD_TYPE = ("@grafana/schema", "Dashboard")
TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "module": "esnext",
        "moduleResolution": "bundler",
        "target": "es2022",
        "skipLibCheck": True,
        "types": [],
    },
    "include": ["*.ts"],
}


def tsc() -> Path:
    if not TSC.exists():
        pytest.fail("TypeScript is missing: `make deploy-check` installs deploy/check's packages")
    return TSC


def kubernetes_type(doc: dict[str, Any]) -> tuple[str, str] | None:
    """The module and interface of a rendered object's kind (None: not one of these CRDs)."""
    found = KUBERNETES_TYPES.get((doc["apiVersion"], doc["kind"]))
    return None if found is None else (found[0], f"I{found[1]}")


def type_errors(typed: list[tuple[tuple[str, str], Any]]) -> str:
    """tsc's errors for these (type, value) pairs, each one `const` of that type ("" when
    every value is of its type)."""
    lines = []
    for n, ((module, interface), value) in enumerate(typed):
        alias = f"T{n}"
        lines.append(f'import type {{ {interface} as {alias} }} from "{module}";')
        lines.append(f"export const value{n}: {alias} = {json.dumps(value, indent=1)};")
    workdir = Path(tempfile.mkdtemp(prefix=".typecheck-", dir=CHECK))
    try:
        (workdir / "tsconfig.json").write_text(json.dumps(TSCONFIG))
        (workdir / "values.ts").write_text("\n".join(lines) + "\n")
        result = subprocess.run(
            [str(tsc()), "-p", str(workdir)], capture_output=True, text=True, timeout=300
        )
    finally:
        shutil.rmtree(workdir)
    return result.stdout + result.stderr if result.returncode else ""
