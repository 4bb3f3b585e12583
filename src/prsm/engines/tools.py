"""Tool calls: functions the model may call, told to it in the conversation, and each call
held to its function's JSON Schema while it is decoded.

The model is told the tools in a system message. A call is the text `<tool_call>` and then a
JSON array of `{"name", "arguments"}` — one element unless parallel calls are allowed — and
the grammar (llguidance, Lark with embedded JSON Schemas) allows only the tools offered, each
with arguments valid against its parameters. `tool_choice` decides the grammar's start:
`required` or a named function admits only calls; `auto` admits a call or text that does not
begin like one; `none` offers no tools. Earlier calls and their results go back into the
conversation as text the model reads.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prsm.engines.constraints import ResponseFormat, grammar_for, schema_of
from prsm.engines.text import TextSink
from prsm.errors import UnenforceableSchemaError

CALL_MARK = "<tool_call>"
_COMPACT = {"whitespace_flexible": False}


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: an id, the function's name, its arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The tools a request offers and how they may be used."""

    tools: tuple[Tool, ...] = ()
    choice: str = "auto"
    """`auto`, `none`, `required`, or the name of the one function to call."""
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Whether the model is offered tools at all."""
        return bool(self.tools) and self.choice != "none"


NO_TOOLS = ToolUse()


def tool_grammar(use: ToolUse, text_format: ResponseFormat) -> str:
    """The llguidance grammar for an answer under `use`: calls of the allowed tools, or (with
    `auto`) text in `text_format`; raises `UnenforceableSchemaError` naming the part."""
    allowed = [t for t in use.tools if use.choice in ("auto", "required", t.name)]
    if not allowed:
        raise UnenforceableSchemaError(f"tool_choice names no tool offered: {use.choice!r}")
    definitions = {f"{t.name}.parameters": _parameters(t) for t in allowed}
    calls = {"type": "array", "items": {"anyOf": [_call_schema(t) for t in allowed]},
             "minItems": 1, "x-guidance": _COMPACT, "$defs": definitions}  # fmt: skip
    if not use.parallel:
        calls["maxItems"] = 1
    start = "calls" if use.choice != "auto" else "calls | text"
    if text_format.constrained:
        text = f"%json {json.dumps(schema_of(text_format) | {'x-guidance': _COMPACT})}"
    else:
        text = "TEXT"
    return _compiled(
        f"start: {start}\ncalls: {json.dumps(CALL_MARK)} %json {json.dumps(calls)}\n"
        f"text: {text}\nTEXT: {PLAIN_TEXT}\n"
    )


PLAIN_TEXT = r"/\s*[^<\s][\s\S]*/"
"""Text that cannot be taken for a call: it does not begin with `<`."""


def _compiled(lark: str) -> str:
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_lark(lark)
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise UnenforceableSchemaError(f"the tools' parameters cannot be enforced: {messages[0]}")
    return str(grammar)


def answer_grammar(use: ToolUse, text_format: ResponseFormat) -> str | None:
    """The grammar an answer is held to: the tools' calls when tools are offered, else its
    format's (None for free text); raises `UnenforceableSchemaError` naming the part.

    With tools offered but `tool_choice: none`, free text is still held to text that is not a
    call: a conversation with earlier calls otherwise invites the model to write one as text.
    """
    if use.active:
        return tool_grammar(use, text_format)
    if use.tools and not text_format.constrained:
        return _compiled(f"start: TEXT\nTEXT: {PLAIN_TEXT}\n")
    return grammar_for(text_format)


def _call_schema(tool: Tool) -> dict[str, Any]:
    """A call of `tool`: its name, and arguments as its parameters (`_parameters`) say."""
    return {
        "type": "object",
        "properties": {
            "name": {"const": tool.name},
            "arguments": {"$ref": f"#/$defs/{tool.name}.parameters"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _parameters(tool: Tool) -> dict[str, Any]:
    """`tool`'s parameters as a definition at the calls' root, where their local references
    (`#`, `#/$defs/…`, `#/definitions/…`, as pydantic writes nested models) still resolve:
    the tool's own definitions move inside it, named by the tool. Arguments take only the
    parameters named (as OpenAI's strict mode has it) unless the schema says otherwise: a
    small model offered any key invents some."""
    root = f"#/$defs/{tool.name}.parameters"
    parameters: dict[str, Any] = _rerooted(dict(tool.parameters), root)
    if not parameters:
        parameters = {"type": "object", "properties": {}}
    if parameters.get("type") == "object":
        parameters.setdefault("additionalProperties", False)
    return parameters


def _rerooted(node: Any, root: str) -> Any:
    """`node` with its local references made relative to `root` instead of `#`."""
    if isinstance(node, list):
        return [_rerooted(item, root) for item in node]
    if not isinstance(node, dict):
        return node
    moved = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            moved[key] = root + value[1:]
        else:
            moved[key] = _rerooted(value, root)
    return moved


def tools_prompt(use: ToolUse) -> str:
    """What the model is told about the tools, in a system message."""
    listed = [
        {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}
        for t in use.tools
    ]
    return (
        "You can call these tools:\n"
        f"{json.dumps(listed)}\n"
        f"To call tools, answer {CALL_MARK} followed by a JSON array of "
        '{"name": ..., "arguments": {...}} objects, and nothing else. '
        "A tool's result comes back in a message from the tool."
    )


def wire_calls(calls: tuple[ToolCall, ...], indexed: bool = False) -> list[dict[str, Any]]:
    """Tool calls as OpenAI's chat completions spell them (with their `index` in a stream
    chunk): PRSM's answers, and the conversation the `openai` engine sends upstream."""
    spelled = [{"id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments}} for c in calls]  # fmt: skip
    return [call | {"index": i} for i, call in enumerate(spelled)] if indexed else spelled


def calls_text(calls: tuple[ToolCall, ...]) -> str:
    """Earlier calls as the model wrote them, for the conversation."""
    made = [{"name": c.name, "arguments": json.loads(c.arguments or "{}")} for c in calls]
    return CALL_MARK + json.dumps(made)


def parse_calls(text: str) -> tuple[ToolCall, ...]:
    """The calls in an answer (none if it is text)."""
    if not text.startswith(CALL_MARK):
        return ()
    made = json.loads(text[len(CALL_MARK) :])
    return tuple(
        ToolCall(f"call_{secrets.token_hex(12)}", c["name"], json.dumps(c["arguments"]))
        for c in made
    )


class TextUnlessCall:
    """Passes an answer's text deltas on, unless the answer is a tool call: text that could
    still become `<tool_call>` is held until it cannot (or the answer ends)."""

    def __init__(self, on_text: TextSink) -> None:
        self._on_text: Callable[[str], None] = on_text
        self._held = ""
        self._mode = "undecided"

    def __call__(self, delta: str) -> None:
        """Take the next delta."""
        if self._mode == "text":
            self._on_text(delta)
            return
        if self._mode == "call":
            return
        self._held += delta
        if self._held.startswith(CALL_MARK):
            self._mode = "call"
        elif not CALL_MARK.startswith(self._held):
            self._mode = "text"
            self._on_text(self._held)

    def finish(self) -> None:
        """The answer ended: text still held was not a call after all."""
        if self._mode == "undecided" and self._held:
            self._on_text(self._held)
