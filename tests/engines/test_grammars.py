"""Answer grammars compiled off the event loop: bounded in size, depth and time, kept by
digest, asked for only once the cheap checks passed; the API keeps answering meanwhile."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prsm.engines import grammars
from prsm.engines.constraints import ResponseFormat
from prsm.engines.tools import NO_TOOLS
from prsm.errors import UnenforceableSchemaError
from tests.support import API_KEY, ServerProcess, prsm_serve, wait_for

AUTH = {"authorization": f"Bearer {API_KEY}"}
JSON_AUTH = AUTH | {"content-type": "application/json"}


def wide_schema(fields: int) -> dict[str, Any]:
    """An object of `fields` objects of 20 patterned strings: about 1 KB of JSON a field."""
    strings = {f"s{j}": {"type": "string", "pattern": "^[a-z]{1,8}$"} for j in range(20)}
    properties = {f"field_{i}": {"type": "object", "properties": strings} for i in range(fields)}
    return {"type": "object", "properties": properties}


def chat(schema: dict[str, Any], model: str = "fixed") -> dict[str, Any]:
    spec = {"name": "answer", "schema": schema}
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "response_format": {"type": "json_schema", "json_schema": spec}}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with prsm_serve(
        tmp_path_factory.mktemp("grammars"), env={"PRSM_ENGINE__KIND": "fixed"}
    ) as served:
        yield served


def test_health_answers_while_four_large_schemas_compile(server: ServerProcess) -> None:
    """Four requests with ~220 KB schemas at once (each a quarter second of compiling):
    /health, probed every 20 ms, never waits 100 ms (compiled on the event loop, one waited
    over 400 ms), and all four are answered."""
    waits: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.base_url) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.get("/health").raise_for_status()
                waits.append(time.perf_counter() - started)
                time.sleep(0.02)

    statuses: list[int] = []
    # Four distinct schemas, encoded beforehand: the probes time the server, not this process.
    bodies = [json.dumps(chat(wide_schema(210) | {"description": f"{n}"})) for n in range(4)]

    def ask(body: str) -> None:
        answer = httpx.post(server.base_url + "/v1/chat/completions", content=body,
                            headers=JSON_AUTH, timeout=60)  # fmt: skip
        statuses.append(answer.status_code)

    prober = threading.Thread(target=probe)
    prober.start()
    wait_for(lambda: len(waits) >= 5, 5)
    askers = [threading.Thread(target=ask, args=(body,)) for body in bodies]
    for thread in askers:
        thread.start()
    for thread in askers:
        thread.join()
    done.set()
    prober.join()
    assert statuses == [200] * 4
    assert len(waits) > 10
    assert max(waits) < 0.1, sorted(waits)[-3:]


def deep(levels: int) -> dict[str, Any]:
    """An object schema nesting `levels` objects."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


@pytest.mark.parametrize(
    ("schema", "says"),
    [(wide_schema(300), "more than the 262144 allowed"), (deep(40), "deeper than 64 levels")],
)
def test_schemas_too_large_or_deep_are_400_naming_the_parameter(
    server: ServerProcess, schema: dict[str, Any], says: str
) -> None:
    """Past the size or depth bound: 400 `invalid_schema` naming where the schema was spelled."""
    answer = httpx.post(server.base_url + "/v1/chat/completions", json=chat(schema),
                        headers=AUTH, timeout=30)  # fmt: skip
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == (
        "invalid_schema",
        "response_format.json_schema.schema",
    )
    assert says in error["message"]


def test_an_unknown_model_is_refused_before_its_schema_is_read(server: ServerProcess) -> None:
    """A schema that cannot be enforced, for a model not served: 404 `model_not_found`, the
    cheap check first (the schema is never compiled)."""
    body = chat({"type": "string", "format": "no-such-format"}, model="not-served")
    answer = httpx.post(server.base_url + "/v1/chat/completions", json=body, headers=AUTH)
    assert answer.status_code == 404


async def test_a_grammar_is_compiled_once_then_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same schema twice (the server's check, then the engine): compiled once; a schema
    that cannot be enforced is kept as refused too."""
    compiled: list[object] = []

    def counting(*args: Any) -> str | None:
        compiled.append(args)
        return real(*args)

    real = grammars.answer_grammar
    monkeypatch.setattr(grammars, "answer_grammar", counting)
    good = ResponseFormat(
        "json_schema", {"type": "object", "properties": {"n": {"type": "integer"}}}
    )
    first = await grammars.compiled_grammar(NO_TOOLS, good)
    assert await grammars.compiled_grammar(NO_TOOLS, good) == first
    bad = ResponseFormat("json_schema", {"type": "string", "format": "kept-refusal"})
    for _ in range(2):
        with pytest.raises(UnenforceableSchemaError):
            await grammars.compiled_grammar(NO_TOOLS, bad)
    assert len(compiled) == 2


async def test_a_compilation_past_its_time_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A schema that takes longer than the limit to compile: refused, saying so, and not
    kept (it may compile in time on a quieter server)."""

    def slow(*args: Any) -> str | None:
        time.sleep(0.3)
        return "grammar"

    monkeypatch.setattr(grammars, "answer_grammar", slow)
    monkeypatch.setattr(grammars, "COMPILE_SECONDS", 0.05)
    late = ResponseFormat("json_schema", {"type": "object", "description": "slow"})
    with pytest.raises(UnenforceableSchemaError, match="did not compile within"):
        await grammars.compiled_grammar(NO_TOOLS, late)
    monkeypatch.setattr(grammars, "COMPILE_SECONDS", 5.0)
    assert await grammars.compiled_grammar(NO_TOOLS, late) == "grammar"
