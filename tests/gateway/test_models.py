"""The gateway routes by the body's `model`: each pool's models learned from its own list,
aliases resolved once, the union listed, an unknown model refused at the gateway."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from prsm.gateway.config import Route
from prsm.gateway.models import ModelDirectory, Served, body_model, json_object, with_model
from tests.support import (
    API_KEY,
    GatewayProcess,
    Reply,
    free_port,
    prsm_gateway,
    prsm_serve,
    scripted_server,
)

CHAT_POOL = [
    {"name": "small", "kind": "fixed", "fixed_answer": "small", "aliases": ["gpt-4o-mini"]}
]
OTHER_POOL = [
    {"name": "big", "kind": "fixed", "fixed_answer": "big"},
    {
        "name": "minilm",
        "kind": "bert",
        "serves": "embeddings",
        "aliases": ["text-embedding-3-small"],
    },
]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def pool(url: str) -> dict[str, Any]:
    return {"discovery": {"kind": "static", "urls": [url]}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Two API instances with different models behind one `/v1` route by model."""
    tmp = tmp_path_factory.mktemp("by-model")
    with contextlib.ExitStack() as stack:
        urls = []
        for name, models in (("chat", CHAT_POOL), ("other", OTHER_POOL)):
            (tmp / name).mkdir()
            env = {"PRSM_MODELS": json.dumps(models)}
            urls.append(stack.enter_context(prsm_serve(tmp / name, env=env)).base_url)
        config = {
            "pools": {"chat": pool(urls[0]), "other": pool(urls[1])},
            "routes": [{"prefix": "/v1", "pool": "chat", "models": {}}],
        }
        yield stack.enter_context(prsm_gateway(tmp, config, env={"PRSM_API_KEY": API_KEY}))


def test_official_clients_reach_each_model_by_name(gateway: GatewayProcess) -> None:
    """The official client, LangChain's chat model and embeddings: each name (and alias)
    reaches the pool that serves it; answers name the model's id."""
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=API_KEY, max_retries=0)
    ask = [{"role": "user", "content": "Hi"}]
    small = client.chat.completions.create(model="gpt-4o-mini", messages=ask)  # type: ignore[arg-type]
    big = client.chat.completions.create(model="big", messages=ask)  # type: ignore[arg-type]
    assert (small.model, small.choices[0].message.content) == ("small", "small")
    assert (big.model, big.choices[0].message.content) == ("big", "big")
    chat = ChatOpenAI(model="big", base_url=gateway.base_url + "/v1", api_key=API_KEY)  # type: ignore[arg-type]
    assert chat.invoke("Hi").content == "big"
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=gateway.base_url + "/v1",
        api_key=API_KEY,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
    )
    assert len(embeddings.embed_query("Hello")) == 384


LLAMAINDEX_PYTHON = Path(__file__).parents[2] / ".venv-llamaindex" / "bin" / "python"


def test_llamaindex_reaches_each_model_by_name(gateway: GatewayProcess) -> None:
    """LlamaIndex's OpenAI-like chat model (chat, stream, complete) and embeddings, in their
    own venv: the alias and the id each reach their model through the gateway."""
    assert LLAMAINDEX_PYTHON.exists(), "`make test` makes .venv-llamaindex"
    script = Path(__file__).with_name("llamaindex_client.py")
    run = subprocess.run(
        [str(LLAMAINDEX_PYTHON), str(script), gateway.base_url + "/v1", API_KEY],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout) == {
        "chat": {"gpt-4o-mini": "small", "big": "big"},
        "stream": "big",
        "complete": "small",
        "embeddings": [384, 384],
    }


def test_the_model_list_is_every_pool_s(gateway: GatewayProcess) -> None:
    """`GET /v1/models` at the gateway: the union, asked with the caller's own key (none:
    the pools' 401)."""
    with httpx.Client(base_url=gateway.base_url) as http:
        listed = http.get("/v1/models", headers=AUTH).json()
        anonymous = http.get("/v1/models")
    ids = {m["id"] for m in listed["data"]}
    assert ids == {"small", "gpt-4o-mini", "big", "minilm", "text-embedding-3-small"}
    assert anonymous.status_code == 401


def test_a_model_no_pool_serves_is_refused_at_the_gateway(gateway: GatewayProcess) -> None:
    """OpenAI's 404 `model_not_found`, naming the models there are."""
    with httpx.Client(base_url=gateway.base_url) as http:
        missing = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-5", "messages": [{"role": "user", "content": "Hi"}]},
            headers=AUTH,
        )
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "'text-embedding-3-small'" in error["message"]


def test_a_body_naming_no_model_goes_by_the_route_s_pool(gateway: GatewayProcess) -> None:
    """No JSON model (or no JSON at all): the route's own pool, which answers for itself."""
    with httpx.Client(base_url=gateway.base_url, headers=AUTH) as http:
        unnamed = http.post("/v1/chat/completions", json={"messages": []})
        not_json = http.post("/v1/chat/completions", content=b"not json")
    assert unnamed.status_code == not_json.status_code == 400
    assert "x-correlation-id" in unnamed.headers


def test_the_model_is_read_from_a_json_object_only() -> None:
    """Arrays, strings, broken JSON and a non-string model name none."""
    assert body_model(json_object(b' {"model": "a", "input": "x"}')) == "a"
    for body in (b"", b"[1]", b'{"model": 3}', b'{"model": "a"', b"model"):
        assert body_model(json_object(body)) is None
    assert json.loads(with_model(b'{"model": "alias", "n": 1}', "id")) == {"model": "id", "n": 1}


def test_a_configured_map_wins_and_needs_no_key(tmp_path: Path, gateway: GatewayProcess) -> None:
    """`map` alone (no learning, no key): its names go to its pools; others are 404."""
    upstream = gateway_upstreams(gateway)
    config = {
        "pools": {"a": pool(upstream["chat"]), "b": pool(upstream["other"])},
        "routes": [{"prefix": "/v1", "pool": "a", "models": {"learn": False, "map": {"big": "b"}}}],
    }
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        big = http.post(
            "/v1/chat/completions",
            json={"model": "big", "messages": [{"role": "user", "content": "Hi"}]},
            headers=AUTH,
        )
        small = http.post(
            "/v1/chat/completions",
            json={"model": "small", "messages": [{"role": "user", "content": "Hi"}]},
            headers=AUTH,
        )
    assert big.json()["model"] == "big"
    assert small.status_code == 404


def gateway_upstreams(gateway: GatewayProcess) -> dict[str, str]:
    config = json.loads(next(gateway.log_path.parent.glob("gateway-*.yaml")).read_text())
    return {name: p["discovery"]["urls"][0] for name, p in config["pools"].items()}


def fallback_config(big_pool: str, small_pool: str) -> dict[str, Any]:
    by_model = {"learn": False, "map": {"big": "big", "small": "small"},
                "fallbacks": {"big": ["small"]}}  # fmt: skip
    return {
        "pools": {"big": pool(big_pool), "small": pool(small_pool)},
        "routes": [{"prefix": "/v1", "pool": "small", "models": by_model}],
    }


def test_a_model_whose_pool_cannot_take_it_falls_back(
    tmp_path: Path, gateway: GatewayProcess
) -> None:
    """`big`'s pool unreachable, or refusing before it ran: `small` answers, named, with
    `X-PRSM-Fallback-From`; a 502 that may have run is passed on, never sent twice."""
    small = gateway_upstreams(gateway)["chat"]
    ask = {"model": "big", "messages": [{"role": "user", "content": "Hi"}]}
    not_run = Reply(503, b'{"error": "busy"}', {"X-PRSM-Not-Run": "true"})
    with (
        scripted_server(not_run) as refusing,
        scripted_server(Reply(502, b'{"error": "broke"}')) as broken,
    ):
        answers = {}
        bigs = {"gone": f"http://127.0.0.1:{free_port()}", "refusing": refusing.base_url,
                "broken": broken.base_url}  # fmt: skip
        for name, big in bigs.items():
            (tmp_path / name).mkdir()
            with prsm_gateway(tmp_path / name, fallback_config(big, small)) as gw:
                answers[name] = httpx.post(
                    gw.base_url + "/v1/chat/completions", json=ask, headers=AUTH, timeout=30
                )
    for name in ("gone", "refusing"):
        assert answers[name].json()["model"] == "small"
        assert answers[name].headers["x-prsm-fallback-from"] == "big"
    assert answers["broken"].status_code == 502
    assert "x-prsm-fallback-from" not in answers["broken"].headers
    assert len(broken.bodies) == 1
    assert json.loads(refusing.bodies[0])["model"] == "big"


async def test_a_fallback_no_pool_serves_is_passed_over() -> None:
    """The model itself still answers: its chain is the fallbacks a pool serves, each once."""
    settings = {"learn": False, "map": {"big": "a", "small": "a"},
                "fallbacks": {"big": ["ghost", "small", "small"]}}  # fmt: skip
    route = Route(prefix="/v1", pool="a", models=settings)  # type: ignore[arg-type]
    directory = ModelDirectory(route, {}, transport=None, api_key=None)  # type: ignore[arg-type]
    big = await directory.resolve("big")
    assert directory.chain(big) == [Served("a", "big"), Served("a", "small")]
