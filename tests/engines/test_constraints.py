"""Structured output: every answer of the real model follows its JSON Schema (32 schemas,
decoded together), and a schema that cannot be enforced is refused naming the part."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from prsm.engines.base import Options
from prsm.engines.constraints import TEXT, ResponseFormat, grammar_for, wire_format
from prsm.engines.llama import LlamaEngine
from prsm.errors import UnenforceableSchemaError

CORPUS = json.loads((Path(__file__).parent / "schema_corpus.json").read_text())
"""JSON Schemas of the kinds applications send: nested objects, arrays with bounds, enums,
numbers with ranges, optional fields, `anyOf`, `$defs` and `$ref`; with a question each."""
SCHEMAS = [(entry["question"], entry["schema"]) for entry in CORPUS]
PERSON = SCHEMAS[0][1]


def as_json(schema: dict[str, object]) -> Options:
    return Options(response_format=ResponseFormat("json_schema", schema))


async def test_every_answer_follows_its_schema(engine: LlamaEngine) -> None:
    """32 schemas (nested objects, bounded arrays, enums, ranges, optional fields, anyOf,
    $defs): each answer, generated in a shared batch, is complete JSON that validates."""
    assert len(SCHEMAS) >= 30
    answers = await asyncio.gather(
        *(engine.generate(q, max_tokens=200, options=as_json(s)) for q, s in SCHEMAS)
    )
    for (question, schema), answer in zip(SCHEMAS, answers, strict=True):
        assert answer.finish_reason == "stop", (question, answer.text)
        jsonschema.validate(json.loads(answer.text), schema)
        assert 0 < answer.confidence <= 1


async def test_json_object_is_an_object_and_text_is_free(engine: LlamaEngine) -> None:
    """`json_object` gives a JSON object; `text` leaves the answer as it was."""
    wanted = Options(response_format=ResponseFormat("json_object"))
    answer = await engine.generate("Say hello.", max_tokens=120, options=wanted)
    if answer.finish_reason == "stop":
        assert isinstance(json.loads(answer.text), dict)
    else:
        assert answer.text.startswith("{")
    free = await engine.generate("Say hello.", max_tokens=8, options=Options(response_format=TEXT))
    plain = await engine.generate("Say hello.", max_tokens=8)
    assert free.text == plain.text


async def test_a_streamed_answer_is_the_same_json(engine: LlamaEngine) -> None:
    """The deltas of a constrained answer join to the same text as the answer."""
    deltas: list[str] = []
    answer = await engine.generate(
        "Describe a person.", max_tokens=80, options=as_json(PERSON), on_text=deltas.append
    )
    await asyncio.sleep(0)  # deltas are queued to the loop before the answer
    assert "".join(deltas) == answer.text
    jsonschema.validate(json.loads(answer.text), PERSON)


@pytest.mark.parametrize(
    ("schema", "part"),
    [
        ({"type": "string", "format": "uri-reference"}, "uri-reference"),
        ({"not": {"type": "string"}}, "not"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "pattern": "(?=x)a"}, "look-around"),
        ({"$ref": "#/$defs/missing"}, "/$defs/missing"),
    ],
)
def test_a_schema_that_cannot_be_enforced_is_refused_naming_the_part(
    schema: dict[str, object], part: str
) -> None:
    """No answer is ever returned as constrained when it was not: the schema is refused."""
    with pytest.raises(UnenforceableSchemaError, match="cannot be enforced") as refused:
        grammar_for(ResponseFormat("json_schema", schema))
    assert part in str(refused.value)


def test_free_text_has_no_grammar_and_formats_travel_upstream_as_openai_spells_them() -> None:
    """`text` needs no grammar; an upstream OpenAI server is asked in its own wire format."""
    assert grammar_for(TEXT) is None
    assert wire_format(ResponseFormat("json_object")) == {"type": "json_object"}
    spelled = wire_format(ResponseFormat("json_schema", PERSON, "person"))
    assert spelled["json_schema"]["name"] == "person"
    assert spelled["json_schema"]["schema"] == PERSON
