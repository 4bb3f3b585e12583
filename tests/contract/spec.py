"""The specification's consumer contract for `POST /api/v1/query`, in pact-python's v3 API.

Its request is the specification's own; its response asks, by type, only for what the
specification's interaction shows: `data.answer`, `data.confidence` and `data.usage.tokens`.
"""

from __future__ import annotations

from pathlib import Path

from pact import Pact, match

CONSUMER, PROVIDER = "microservice-consumer", "prsm-api"
TOKEN = "test-token"
PACT_FILE = Path(__file__).parent / "pacts" / f"{CONSUMER}-{PROVIDER}.json"
"""The committed contract: written by the consumer tests, verified against `prsm serve`."""


def spec_pact() -> Pact:
    pact = Pact(CONSUMER, PROVIDER).with_specification("V4")
    (
        pact.upon_receiving("a query request")
        .given("PRSM is available")
        .with_request("POST", "/api/v1/query")
        .with_header("Content-Type", "application/json")
        .with_header("Authorization", f"Bearer {TOKEN}")
        .with_body(
            {
                "prompt": match.str("Test query"),
                "userId": match.str("test-user"),
                "context": match.like({}),
            },
            content_type="application/json",
        )
        .will_respond_with(200)
        .with_header("Content-Type", "application/json")
        .with_body(
            {
                "data": {
                    "answer": match.str("Test response"),
                    "confidence": match.number(0.95),
                    "usage": {"tokens": match.int(50)},
                }
            },
            content_type="application/json",
        )
    )
    return pact
