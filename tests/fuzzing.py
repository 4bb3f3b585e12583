"""Schemathesis against real processes: the API's OpenAPI description fuzzed against `prsm
serve` (fixed engine, Redis on, bearer key), directly (`tests/server/test_fuzz.py`) and
through `prsm gateway` (`tests/gateway/test_fuzz.py`), in two modules so that the two runs
take two test processes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from prsm.embedded_redis import EmbeddedRedis
from tests.support import API_KEY, ServerProcess, prsm_serve

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
SECONDS = "20"  # per service; the seed and the example cap keep runs comparable


@contextlib.contextmanager
def fuzzed_api(root: Path) -> Iterator[ServerProcess]:
    """The API as the fuzzers meet it: the fixed engine, Redis on."""
    root.mkdir(exist_ok=True)
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
