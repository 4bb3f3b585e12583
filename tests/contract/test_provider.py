"""The committed consumer contract, verified by Pact against a real `prsm serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from pact import Verifier

from tests.contract.spec import PACT_FILE, PROVIDER, TOKEN
from tests.support import prsm_serve


def test_prsm_serve_honours_the_consumer_contract(tmp_path: Path) -> None:
    """Pact replays the specification's interaction against `prsm serve` (fixed engine) and
    every rule holds; the server's extra fields are allowed by the contract."""
    env = {"PRSM_ENGINE__KIND": "fixed", "PRSM_API_KEYS": TOKEN}
    with prsm_serve(tmp_path, env=env) as server:
        states: list[str] = []

        def prsm_is_available(action: str = "setup", parameters: Any = None) -> None:
            states.append(action)
            assert httpx.get(server.base_url + "/ready").status_code == 200

        verifier = (
            Verifier(PROVIDER, host="127.0.0.1")
            .add_transport(url=server.base_url)
            .add_source(PACT_FILE)
            .state_handler({"PRSM is available": prsm_is_available}, teardown=False)
        )
        verifier.verify()  # raises on any broken rule (a 401, a missing field, a wrong type)
    assert "setup" in states
