"""Structured output: an answer held to a JSON Schema while it is decoded.

`ResponseFormat` is what the caller asked for (OpenAI's `response_format`: `text`,
`json_object` or `json_schema`). `grammar_for` compiles it once, on the event loop's side,
with llguidance (a maintained JSON Schema compiler), and refuses what it cannot enforce —
an unknown `format`, `not`, `uniqueItems`, a look-around in a `pattern`, a dangling `$ref` — as
`UnenforceableSchemaError` naming the part: never an answer that only looks constrained.
The decode side — a model's vocabulary and one sequence's matcher — is in
`prsm.engines.matcher`, loaded only by the engine that decodes.

JSON is generated compact (no optional whitespace): a small model offered room for whitespace
may fill it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prsm.errors import UnenforceableSchemaError

FormatKind = Literal["text", "json_object", "json_schema"]


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """The shape an answer must have: free text, any JSON object, or JSON valid against
    `schema`."""

    kind: FormatKind = "text"
    schema: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def constrained(self) -> bool:
        """Whether decoding is held to a grammar."""
        return self.kind != "text"


TEXT = ResponseFormat()


def wire_format(response_format: ResponseFormat) -> dict[str, Any]:
    """`response_format` as OpenAI's wire format spells it (for an upstream server)."""
    if response_format.kind != "json_schema":
        return {"type": response_format.kind}
    spec = {"name": response_format.name or "answer", "schema": dict(response_format.schema)}
    return {"type": "json_schema", "json_schema": spec | {"strict": True}}


def grammar_for(response_format: ResponseFormat) -> str | None:
    """The llguidance grammar enforcing `response_format` (None for free text); raises
    `UnenforceableSchemaError` for a schema it cannot enforce."""
    from llguidance import LLMatcher

    if not response_format.constrained:
        return None
    schema = schema_of(response_format)
    try:
        compact: Any = {"whitespace_flexible": False}  # llguidance's JsonCompileOptions
        grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=compact)
    except ValueError as exc:
        raise UnenforceableSchemaError(f"the schema is not a JSON object: {exc}") from None
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise UnenforceableSchemaError(f"the schema cannot be enforced: {messages[0]}")
    return str(grammar)


def schema_of(response_format: ResponseFormat) -> dict[str, Any]:
    """The JSON Schema a constrained format stands for (`json_object`: any object)."""
    if response_format.kind == "json_object":
        return {"type": "object"}
    return dict(response_format.schema)
