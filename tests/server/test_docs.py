"""The API's documentation pages render in a real browser with no network but loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, prsm_serve

CHROMIUM = shutil.which("chromium")
# CI installs Debian's chromium (.ci/run): there the test runs, never skips.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium); CI installs it",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with prsm_serve(tmp_path_factory.mktemp("docs"), env={"PRSM_ENGINE__KIND": "fixed"}) as s:
        yield s


def rendered(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran, every host but loopback unresolvable."""
    assert CHROMIUM is not None, "chromium is not installed"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000", "--dump-dom", url,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_swagger_ui_renders_every_operation_offline(server: ServerProcess, tmp_path: Path) -> None:
    """/docs shows the query, job and probe operations: Swagger UI came from the server."""
    dom = rendered(server.base_url + "/docs", tmp_path)
    assert dom.count('class="opblock-summary-path"') >= 7
    for path in ("/api/v1/query", "/api/v1/jobs", "/health", "/ready", "/metrics"):
        assert path in dom


def test_redoc_renders_offline(server: ServerProcess, tmp_path: Path) -> None:
    """/redoc renders the same description with ReDoc."""
    dom = rendered(server.base_url + "/redoc", tmp_path)
    assert "/api/v1/query" in dom
    assert "Idempotency-Key" in dom
