"""Schemathesis fuzzes the API's OpenAPI description through a real `prsm gateway` in front
of a real `prsm serve`, for the API's operations: no server error, every response as
described — the gateway's own refusals (413, 431, 400 `invalid_path`…) included."""

from __future__ import annotations

from pathlib import Path

from tests.fuzzing import assert_clean, fuzzed_api, schemathesis
from tests.support import prsm_gateway


def test_the_gateway_survives_fuzzing(tmp_path: Path) -> None:
    """The API's description through the gateway, for the API's operations."""
    with fuzzed_api(tmp_path / "api") as api:
        config = {"pools": {"api": {"discovery": {"kind": "static", "urls": [api.base_url]}}},
                  "routes": [{"prefix": "/api/v1", "pool": "api"}]}  # fmt: skip
        with prsm_gateway(tmp_path, config) as gateway:
            run = schemathesis(
                api.base_url + "/openapi.json", gateway.base_url, "--include-path-regex", "^/api/"
            )
    assert_clean(run)
