"""Where the deployment checks find their tools: `make deploy-check` installs them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "layer" / "helm" / "helm"
KUBERNETES_VALIDATE = ROOT / ".venv" / "bin" / "kubernetes-validate"


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.exists():
        pytest.fail("helm is missing: `make deploy-check` installs it into .tools/")
    return HELM


@pytest.fixture(scope="session")
def kubernetes_validate() -> Path:
    if not KUBERNETES_VALIDATE.exists():
        pytest.fail("kubernetes-validate is missing: `make deploy-check` installs it")
    return KUBERNETES_VALIDATE


@pytest.fixture(scope="session")
def podman_binary() -> str:
    found = shutil.which("podman")
    if found is None:
        pytest.fail("podman is missing: apt-get install podman buildah mmdebstrap runc")
    return found
