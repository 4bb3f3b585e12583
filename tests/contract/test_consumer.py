"""The SDK's clients against the specification's contract, on Pact's mock provider."""

from __future__ import annotations

import json
from pathlib import Path

from prsm.client import AsyncPRSMClient, PRSMClient
from tests.contract.spec import PACT_FILE, TOKEN, spec_pact


def interactions(path: Path) -> list[dict[str, object]]:
    """A pact file's interactions without the fields Pact fills in per run."""
    found = json.loads(path.read_text())["interactions"]
    for interaction in found:
        interaction.pop("key", None)
        interaction.pop("pending", None)
    return found


def test_the_blocking_client_keeps_the_contract(tmp_path: Path) -> None:
    """PRSMClient sends the spec's request and reads the spec's answer (no model, split usage
    or correlation id in it); the contract it makes is the committed one."""
    pact = spec_pact()
    with pact.serve() as server, PRSMClient(str(server.url), api_key=TOKEN, retries=0) as client:
        result = client.query("Test query", user_id="test-user", context={})
    assert (result.answer, result.confidence, result.usage.tokens) == ("Test response", 0.95, 50)
    assert result.model is None
    pact.write_file(tmp_path, overwrite=True)
    assert interactions(tmp_path / PACT_FILE.name) == interactions(PACT_FILE)


async def test_the_async_client_keeps_the_contract() -> None:
    """AsyncPRSMClient sends the same request and reads the same answer."""
    pact = spec_pact()
    with pact.serve() as server:
        async with AsyncPRSMClient(str(server.url), api_key=TOKEN, retries=0) as client:
            result = await client.query("Test query", user_id="test-user", context={})
    assert (result.answer, result.confidence, result.usage.tokens) == ("Test response", 0.95, 50)
