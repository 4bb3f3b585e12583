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


def debian_tool(name: str, packages: str) -> str:
    """The path of a tool `.ci/run` installs from Debian, or a failure saying how to get it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: apt-get install {packages}")
    return found


@pytest.fixture(scope="session")
def podman_binary() -> str:
    return debian_tool("podman", "podman buildah mmdebstrap runc")


@pytest.fixture(scope="session")
def promtool() -> str:
    return debian_tool("promtool", "prometheus")
