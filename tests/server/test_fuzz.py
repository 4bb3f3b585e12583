"""Schemathesis fuzzes the API's OpenAPI description against real processes: `prsm serve`
(fixed engine, Redis on, bearer key) directly and through `prsm gateway`. No server error, and
every response conforms to the description (status, content type, body)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from prsm.embedded_redis import EmbeddedRedis
from tests.support import API_KEY, ServerProcess, prsm_gateway, prsm_serve

CHECKS = ",".join(
    (
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
        "positive_data_acceptance",
    )
)
CONFIG = Path(__file__).with_name("schemathesis.toml")
"""Where a schema-valid request is rightly refused (what JSON Schema cannot say of it)."""
SECONDS = "25"  # per service; the seed and the example cap keep runs comparable


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    with EmbeddedRedis(root / "redis") as redis_url:  # noqa: SIM117 - the server needs the URL
        with prsm_serve(
            root, env={"PRSM_ENGINE__KIND": "fixed", "PRSM_REDIS_URL": redis_url}
        ) as server:
            yield server


def schemathesis(schema_url: str, base_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(CONFIG),
        "run", schema_url,
        "--url", base_url, "-H", f"Authorization: Bearer {API_KEY}", "--checks", CHECKS,
        "--max-time", SECONDS, "--seed", "7", "--max-examples", "50", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def assert_clean(run: subprocess.CompletedProcess[str]) -> None:
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert " passed" in summary
    assert "failed" not in summary.lower().split("summary")[-1], summary


def test_the_api_survives_fuzzing(api: ServerProcess) -> None:
    """Every operation, its examples, coverage, fuzzing and stateful phases (job submission
    then status): no 5xx, every answer as described."""
    assert_clean(schemathesis(api.base_url + "/openapi.json", api.base_url))


def test_the_gateway_survives_fuzzing(api: ServerProcess, tmp_path: Path) -> None:
    """The same description through the gateway, for the API's operations."""
    config = {"pools": {"api": {"discovery": {"kind": "static", "urls": [api.base_url]}}},
              "routes": [{"prefix": "/api/v1", "pool": "api"}]}  # fmt: skip
    with prsm_gateway(tmp_path, config) as gateway:
        run = schemathesis(
            api.base_url + "/openapi.json", gateway.base_url, "--include-path-regex", "^/api/"
        )
    assert_clean(run)
