"""The code in the README and the docs runs as shown, against a real API and gateway.

Run: every `python` block, and every `sh` block made only of `curl` commands, unless the line
before the block is `<!-- not run: <why> -->`. The documented ports (the API on :8000, the
gateway on :3000, as `make run` starts them) are mapped to this test's servers, and the
working directory holds `.prsm/dev-api-key` as `make run` leaves it. When a `json` block
follows a `curl` block, the output has the same keys as the example.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prsm.gateway.run import default_config
from prsm.up import EMBEDDING_MODEL
from tests.support import API_KEY, prsm_gateway, prsm_serve

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\s*$")
NOT_RUN = re.compile(r"<!-- not run: .+ -->")
PORTS = {"api": (":8000",), "gateway": (":3000",)}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    runs: bool
    shown_output: str | None

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with whether each is run."""
    lines = path.read_text().splitlines()
    found: list[tuple[int, str, str, bool]] = []
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent, lang = len(opened["indent"]), opened["lang"]
        end = i + 1
        while not lines[end].strip().startswith("```"):
            end += 1
        code = "\n".join(line[indent:] for line in lines[i + 1 : end])
        marked = i > 0 and NOT_RUN.search(lines[i - 1]) is not None
        found.append((i + 1, lang, code, not marked))
        i = end + 1
    page = str(path.relative_to(ROOT))
    result = []
    for n, (line, lang, code, unmarked) in enumerate(found):
        runs = unmarked and (lang == "python" or (lang == "sh" and _only_curl(code)))
        following = found[n + 1] if n + 1 < len(found) else None
        shown = following[2] if following is not None and following[1] == "json" else None
        result.append(Block(page, line, lang, code, runs, shown))
    return result


def _only_curl(code: str) -> bool:
    commands = [c for c in code.replace("\\\n", " ").splitlines() if c.strip()]
    return bool(commands) and all(c.lstrip().startswith("curl ") for c in commands)


RUN = [block for page in PAGES for block in blocks(page) if block.runs]


def test_the_docs_have_runnable_examples() -> None:
    """The README's first query, SDK and OpenAI examples are among the blocks run, and every
    block that cannot run says why."""
    names = {block.page for block in RUN}
    assert "README.md" in names
    assert sum(block.lang == "python" for block in RUN) >= 4
    assert sum(block.lang == "sh" for block in RUN) >= 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An API (the fixed engine: quick and deterministic) with a gateway in front, as
    `make run` has them, and a working directory like the one `make run` leaves."""
    tmp = tmp_path_factory.mktemp("docs")
    env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_ANSWER": "Paris is the capital.",
        "PRSM_ENGINE__MODEL_NAME": "SmolLM2-135M-Instruct.Q4_1-q8_0",  # the served model's name
        "PRSM_MODELS": json.dumps([{}, EMBEDDING_MODEL]),  # the models `prsm up` serves
    }
    with prsm_serve(tmp, env=env) as api:
        config = default_config(api.base_url).model_dump(mode="json", exclude_defaults=True)
        with prsm_gateway(tmp, config) as gateway:
            workdir = tmp / "work"
            (workdir / ".prsm").mkdir(parents=True)
            (workdir / ".prsm" / "dev-api-key").write_text(API_KEY + "\n")
            yield {"api": api.base_url, "gateway": gateway.base_url, "cwd": str(workdir)}


def _mapped(code: str, stack: dict[str, str]) -> str:
    for part, ports in PORTS.items():
        port = stack[part].rsplit(":", 1)[1]
        for documented in ports:
            code = re.sub(
                rf"(https?://)?(localhost|127\.0\.0\.1){documented}\b",
                lambda m, p=port: f"{m[1] or ''}127.0.0.1:{p}",
                code,
            )
    return code


def _run(block: Block, stack: dict[str, str]) -> str:
    code = _mapped(block.code, stack)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")}
    command = [sys.executable, "-c", code] if block.lang == "python" else ["bash", "-c", code]
    done = subprocess.run(
        command, cwd=stack["cwd"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _keys(item) for key, item in value.items()}
    return None


@pytest.mark.parametrize("block", RUN, ids=[block.name for block in RUN])
def test_example_runs(block: Block, stack: dict[str, str]) -> None:
    """The block exits 0; a curl whose output the docs show returns the same keys."""
    output = _run(block, stack)
    if block.lang == "sh" and block.shown_output is not None:
        assert _keys(json.loads(output)) == _keys(json.loads(block.shown_output))
