"""Wire contracts of the PRSM API, defined once for the server, the SDK and the tests.

Python names are snake_case; the JSON on the wire is camelCase, as in the specification
(`userId`, `maxTokens`, `promptTokens`, `correlationId`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

CORRELATION_HEADER = "X-Correlation-ID"
MAX_TOKENS_LIMIT = 4096


class Contract(BaseModel):
    """Base of every wire model: camelCase aliases, populated by either name."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys, leaving out unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


Priority = Literal["low", "normal", "high"]
"""Where a query waits when the engine is busy: `high` goes first, `low` last."""


class QueryRequest(Contract):
    """Body of `POST /api/v1/query`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    prompt: str = Field(min_length=1, description="The question or instruction for the model.")
    user_id: str = Field(
        min_length=1, max_length=256, description="Who asks; used for usage accounting."
    )
    context: dict[str, Any] | None = Field(
        default=None,
        description="Caller metadata (request ids, trace ids, ...). Logged and passed along "
        "to events; it is not shown to the model.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS_LIMIT,
        description="Most tokens to generate; the server's default when left out.",
    )
    priority: Priority = Field(
        default="normal", description="Queue position while the engine is busy."
    )
    model: str | None = Field(
        default=None,
        max_length=256,
        description="Model to use; must be the served model when given.",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be empty or only whitespace")
        return value


def describe_problems(problems: Sequence[Any]) -> str:
    """`field: problem; ...` from pydantic's error list, for error messages."""
    parts = []
    for problem in problems:
        where = ".".join(str(x) for x in problem.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class Usage(Contract):
    """Tokens a query consumed."""

    tokens: int = Field(description="promptTokens + completionTokens.")
    prompt_tokens: int
    completion_tokens: int


class QueryData(Contract):
    """The `data` member of a query response."""

    answer: str
    confidence: float = Field(
        ge=0.0, le=1.0, description="Geometric mean of the generated tokens' probabilities."
    )
    usage: Usage
    model: str


class QueryResponse(Contract):
    """Body of a successful `POST /api/v1/query`."""

    data: QueryData
    correlation_id: str


class HealthResponse(Contract):
    """Body of `GET /health`: the process is alive."""

    status: str = "healthy"
    version: str
    uptime_seconds: float


class CheckResult(Contract):
    """One readiness check."""

    ok: bool
    detail: str | None = None


class ReadyResponse(Contract):
    """Body of `GET /ready`: `ready` only when every check passes."""

    status: str
    checks: dict[str, CheckResult]


class ErrorDetail(Contract):
    code: str
    message: str


class ErrorResponse(Contract):
    """Body of every error answer."""

    error: ErrorDetail
    correlation_id: str | None = None
