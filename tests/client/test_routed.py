"""`ModelServiceClient` over real `prsm serve` instances, each serving models of its own."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest

from prsm.client import ModelServiceClient
from prsm.errors import UsageError
from prsm.sd import StaticDiscovery
from tests.support import API_KEY, ServerProcess, prsm_serve

INSTANCES = {
    "small": [{"name": "small", "kind": "fixed", "fixed_answer": "from small"}],
    "big": [
        {"name": "big", "kind": "fixed", "fixed_answer": "from big", "aliases": ["gpt-4o"]},
        {"name": "bigger", "kind": "fixed", "fixed_answer": "from bigger"},
    ],
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("routed")
    with contextlib.ExitStack() as stack:
        running = {}
        for name, models in INSTANCES.items():
            (tmp / name).mkdir()
            env = {"PRSM_MODELS": json.dumps(models)}
            running[name] = stack.enter_context(prsm_serve(tmp / name, env=env))
        yield running


async def test_each_query_goes_to_its_model_s_instances(servers: dict[str, ServerProcess]) -> None:
    """By id or alias, streamed or not; no model: the first route's instances and model;
    models sharing instances share one client."""
    big = StaticDiscovery([servers["big"].base_url])
    routes = {"small": StaticDiscovery([servers["small"].base_url]), "big": big,
              "gpt-4o": big, "bigger": big}  # fmt: skip
    async with ModelServiceClient(routes, api_key=API_KEY) as prsm:
        by_id = await prsm.query("hi", user_id="u1", model="bigger")
        by_alias = await prsm.query("hi", user_id="u1", model="gpt-4o")
        unnamed = await prsm.query("hi", user_id="u1")
        streamed = [c async for c in prsm.stream("hi", user_id="u1", model="big")]
        assert prsm.client_for("big") is prsm.client_for("bigger")
    assert (by_id.answer, by_id.model) == ("from bigger", "bigger")
    assert (by_alias.answer, by_alias.model) == ("from big", "big")
    assert (unnamed.answer, unnamed.model) == ("from small", "small")
    assert streamed[-1].result is not None
    assert streamed[-1].result.answer == "from big"


async def test_a_model_with_no_route_is_refused_before_sending(
    servers: dict[str, ServerProcess],
) -> None:
    """A `UsageError` naming the routes; and a client needs at least one route."""
    routes = {"small": StaticDiscovery([servers["small"].base_url])}
    async with ModelServiceClient(routes, api_key=API_KEY) as prsm:
        with pytest.raises(UsageError, match="'small'"):
            await prsm.query("hi", user_id="u1", model="gpt-5")
    with pytest.raises(UsageError):
        ModelServiceClient({})
