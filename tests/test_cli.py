"""The `prsm` command, run as a new user would: as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import API_KEY, ServerProcess, prsm_serve


def prsm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")}
    return subprocess.run(
        [sys.executable, "-m", "prsm", *args],
        env=base | {"COLUMNS": "200"} | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_query_prints_the_answer(fixed_server: ServerProcess) -> None:
    """`prsm query` prints the answer on stdout and the details on stderr."""
    done = prsm(
        "query", "Capital of France?", "--base-url", fixed_server.base_url, "--api-key", API_KEY
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Paris."
    assert "confidence" in done.stderr
    assert "correlation id" in done.stderr


def test_query_json_output(fixed_server: ServerProcess) -> None:
    """`--json` prints the whole result as JSON."""
    env = {"PRSM_BASE_URL": fixed_server.base_url, "PRSM_API_KEY": API_KEY}
    done = prsm("query", "hi", "--json", "--user", "u7", env=env)
    result = json.loads(done.stdout)
    assert result["answer"] == "Paris."
    assert result["usage"]["tokens"] > 0


def test_query_failure_is_one_line_without_traceback(fixed_server: ServerProcess) -> None:
    """A wrong key exits 1 with a readable message, no traceback."""
    done = prsm("query", "hi", "--base-url", fixed_server.base_url, "--api-key", "nope")
    assert done.returncode == 1
    assert "invalid API key" in done.stderr
    assert "Traceback" not in done.stderr


def test_health(fixed_server: ServerProcess) -> None:
    """`prsm health` reports the server healthy."""
    done = prsm("health", "--base-url", fixed_server.base_url)
    assert done.returncode == 0
    assert done.stdout.startswith("healthy")


def test_config_lists_settings_with_env_names() -> None:
    """`prsm config` shows keys, current values, defaults and environment variables."""
    done = prsm("config", env={"PRSM_ENGINE__CONCURRENCY": "2"})
    assert done.returncode == 0
    assert "engine.concurrency = 2" in done.stdout
    assert "(changed)" in done.stdout
    assert "PRSM_ENGINE__CONCURRENCY" in done.stdout
    assert "default 1" in done.stdout


def test_bad_configuration_exits_2_naming_the_key(tmp_path: Path) -> None:
    """An unknown key in the file is reported by name with exit code 2."""
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  prot: 1\n")
    done = prsm("config", "--config", str(path))
    assert done.returncode == 2
    assert "server.prot: unknown setting" in done.stderr


def test_serve_without_keys_makes_a_dev_key_that_query_uses(tmp_path: Path) -> None:
    """No PRSM_API_KEYS: serve prints a usable curl line and saves the key 0600 for `query`."""
    state = tmp_path / "state"
    answer = "A long answer that is wider than any terminal, " * 3
    env = {
        "PRSM_API_KEYS": "",
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_ANSWER": answer,
        "PRSM_STATE_DIR": str(state),
    }
    with prsm_serve(tmp_path, env=env) as server:
        key = (state / "dev-api-key").read_text().strip()
        curl = next(line for line in server.log.splitlines() if "curl -X POST" in line)
        assert f"Bearer {key}" in curl
        assert '"userId":"u1"' in curl
        assert (state / "dev-api-key").stat().st_mode & 0o777 == 0o600
        done = prsm(
            "query", "hi", "--base-url", server.base_url, env={"PRSM_STATE_DIR": str(state)}
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == answer.strip() + "\n"  # printed as is, not wrapped


def test_key_id_names_a_key_as_the_server_logs_it(fixed_server: ServerProcess) -> None:
    """`prsm key-id` reads a key from standard input and prints the `keyId` the server logs
    (and budgets name) for its caller."""
    done = subprocess.run(
        [sys.executable, "-m", "prsm", "key-id"],
        input=API_KEY + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip()
    asked = prsm("query", "hi", "--base-url", fixed_server.base_url, "--api-key", API_KEY)
    assert asked.returncode == 0, asked.stderr
    logged = {e.get("keyId") for e in fixed_server.log_entries() if e.get("userId") == "cli"}
    assert printed in logged
