"""Structured output: an answer held to a JSON Schema while it is decoded.

`ResponseFormat` is what the caller asked for (OpenAI's `response_format`: `text`,
`json_object` or `json_schema`). `grammar_for` compiles it once, on the event loop's side,
with llguidance (a maintained JSON Schema compiler), and refuses what it cannot enforce —
an unknown `format`, `not`, `uniqueItems`, a look-around in a `pattern`, a dangling `$ref` — as
`UnenforceableSchemaError` naming the part: never an answer that only looks constrained.
`Constraint` is one sequence's matcher on the decode thread: before each token it masks the
tokens that cannot continue a valid answer, after it it takes the token.

JSON is generated compact (no optional whitespace): a small model offered room for whitespace
may fill it.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

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


class Vocabulary:
    """llguidance's view of a model's tokens, built on first use (about 0.3 s) and shared."""

    def __init__(self, llama_cpp: Any, vocab: Any) -> None:
        self._lib, self._vocab = llama_cpp, vocab
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def tokenizer(self) -> Any:
        """The llguidance tokenizer of this vocabulary."""
        with self._lock:
            if self._tokenizer is None:
                from llguidance.llamacpp import lltokenizer_from_vocab

                with warnings.catch_warnings():  # it reads each token's kind the older way
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._tokenizer = lltokenizer_from_vocab(self._vocab)
            return self._tokenizer

    def constraint(self, grammar: str) -> Constraint:
        """A new matcher for `grammar` (compiled: call it off the event loop)."""
        from llguidance import LLMatcher

        matcher = LLMatcher(self.tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise UnenforceableSchemaError(f"the schema cannot be enforced: {matcher.get_error()}")
        return Constraint(matcher, int(self._lib.llama_vocab_n_tokens(self._vocab)))


class Constraint:
    """One sequence's grammar state, on the decode thread."""

    def __init__(self, matcher: Any, n_vocab: int) -> None:
        self._matcher = matcher
        self._mask = np.full((n_vocab + 31) // 32, -1, dtype=np.int32)
        self._bits = np.empty(n_vocab, dtype=bool)

    def restrict(self, logits: np.ndarray) -> None:
        """Set to -inf, in place, the logits of tokens that cannot come next."""
        mask = self._mask
        self._matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        allowed = np.unpackbits(mask.view(np.uint8), bitorder="little", count=len(logits))
        np.equal(allowed, 0, out=self._bits)
        logits[self._bits] = -np.inf

    def take(self, token: int) -> bool:
        """Advance past the token sampled; False if it breaks the grammar (see `error`)."""
        return bool(self._matcher.consume_token(token))

    @property
    def error(self) -> str:
        """Why the matcher failed, if it did."""
        return str(self._matcher.get_error())

    @property
    def complete(self) -> bool:
        """Whether the answer is whole: nothing but its end may follow."""
        return bool(self._matcher.is_stopped())
