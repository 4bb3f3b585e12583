from __future__ import annotations

import pytest
from pydantic import ValidationError

from prsm.contracts import QueryData, QueryRequest, QueryResponse, Usage, describe_problems


def test_request_reads_camel_case_and_writes_it_back() -> None:
    """The wire is camelCase; Python names are snake_case."""
    request = QueryRequest.model_validate({"prompt": "p", "userId": "u", "maxTokens": 4})
    assert (request.user_id, request.max_tokens, request.priority) == ("u", 4, "normal")
    assert request.to_wire() == {"prompt": "p", "userId": "u", "maxTokens": 4, "priority": "normal"}


def test_response_round_trip() -> None:
    """A response serialises to the spec's shape and parses back equal."""
    response = QueryResponse(
        data=QueryData(
            answer="a",
            confidence=0.5,
            usage=Usage(tokens=3, prompt_tokens=1, completion_tokens=2),
            model="m",
        ),
        correlation_id="c",
    )
    wire = response.to_wire()
    assert wire["data"]["usage"] == {"tokens": 3, "promptTokens": 1, "completionTokens": 2}
    assert wire["correlationId"] == "c"
    assert QueryResponse.model_validate(wire) == response


def test_confidence_outside_unit_interval_is_rejected() -> None:
    """Confidence must lie in [0, 1]."""
    with pytest.raises(ValidationError):
        QueryData(
            answer="a",
            confidence=1.5,
            usage=Usage(tokens=0, prompt_tokens=0, completion_tokens=0),
            model="m",
        )


def test_describe_problems_names_fields() -> None:
    """Problems read `field: message`, joined."""
    with pytest.raises(ValidationError) as caught:
        QueryRequest.model_validate({"prompt": ""})
    text = describe_problems(caught.value.errors())
    assert "prompt:" in text
    assert "userId:" in text
