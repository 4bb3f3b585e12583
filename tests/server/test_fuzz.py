"""Schemathesis fuzzes the API's OpenAPI description against a real `prsm serve` (fixed
engine, Redis on, bearer key): no server error, and every response conforms to the
description (status, content type, body)."""

from __future__ import annotations

from pathlib import Path

from tests.fuzzing import assert_clean, fuzzed_api, schemathesis


def test_the_api_survives_fuzzing(tmp_path: Path) -> None:
    """Every operation, its examples, coverage, fuzzing and stateful phases (job submission
    then status): no 5xx, every answer as described."""
    with fuzzed_api(tmp_path) as api:
        assert_clean(schemathesis(api.base_url + "/openapi.json", api.base_url))
