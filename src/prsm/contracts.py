"""Wire contracts of the PRSM API, defined once for the server, the SDK and the tests.

Python names are snake_case; the JSON on the wire is camelCase, as in the specification
(`userId`, `maxTokens`, `promptTokens`, `correlationId`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

CORRELATION_HEADER = "X-Correlation-ID"
JOB_TOKEN_HEADER = "X-PRSM-Job-Token"  # noqa: S105 (a header's name)
"""Sent by a worker with each query it asks for a job: the query is charged to the job's
submitter's budget (and reads and keeps cached answers as theirs)."""
NOT_RUN_HEADER = "X-PRSM-Not-Run"
"""On an error answer: the request was refused before anything acted on it (`true`), so any
client may send it again, a POST included (`prsm.resilience.outcomes`)."""
SHARED_OUTAGE_HEADER = "X-PRSM-Shared-Outage"
"""On a 503: its cause is shared by every instance (the Redis they all use, an issuer's keys),
so another instance would answer the same and this one is not at fault (`true`): the gateway
passes it on instead of trying another instance or counting it against this one."""
MAX_TOKENS_LIMIT = 4096


class Contract(BaseModel):
    """Base of every wire model: camelCase aliases, populated by either name."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys, leaving out unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt must not be empty or only whitespace")
    return value


Prompt = Annotated[
    str,
    Field(
        min_length=1,
        # Not only white space, by JavaScript's (the schema's) and Python's definitions both.
        pattern=r"[^\s\x1c-\x1f\x85\ufeff]",
        description="The question or instruction for the model.",
    ),
    AfterValidator(_not_blank),
]
"""A prompt, wherever one is accepted (queries, jobs, batch items): never blank."""

UserId = Annotated[
    str, Field(min_length=1, max_length=256, description="Who asks; used for usage accounting.")
]
MaxTokens = Annotated[
    int | None,
    Field(
        default=None,
        ge=1,
        le=MAX_TOKENS_LIMIT,
        description="Most tokens to generate; the server's default when left out.",
    ),
]

Priority = Literal["low", "normal", "high"]
"""Where a query waits when the engine is busy: `high` goes first, `low` last."""


class QueryRequest(Contract):
    """Body of `POST /api/v1/query`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    prompt: Prompt
    user_id: UserId
    context: dict[str, Any] | None = Field(
        default=None,
        description="Caller metadata (request ids, trace ids, ...). Logged and passed along "
        "to events; it is not shown to the model.",
    )
    max_tokens: MaxTokens = None
    priority: Priority = Field(
        default="normal", description="Queue position while the engine is busy."
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Model to use: the id or an alias of a served model (404 `unknown_model` "
        "otherwise); unset, the instance's first chat model.",
    )
    response_schema: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema the answer must follow, enforced while it is decoded: the "
        "answer is then compact JSON text valid against it (422 `invalid_schema` naming the "
        "part when the schema cannot be enforced).",
    )
    stream: bool | None = Field(
        default=None,
        description="Answer as server-sent events: `delta` events with the text as it is "
        "generated, then one `done` event with the whole response (or an `error` event).",
    )


def describe_problems(problems: Sequence[Any]) -> str:
    """`field: problem; ...` from pydantic's error list, for error messages."""
    parts = [f"{problem_field(p) or 'body'}: {p.get('msg', 'invalid')}" for p in problems]
    return "; ".join(parts) or "invalid request"


def problem_field(problem: Any) -> str | None:
    """The field a pydantic problem is about, as `messages[0].content`; None for the body."""
    where = ""
    for part in problem.get("loc", ()):
        if part == "body":
            continue
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where or None


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


# -- what clients read: tolerant of what they do not need -----------------------------------
# The server sends every field above; a client needs only what the specification's contract
# guarantees (`data.answer`, `data.confidence`, `data.usage.tokens`), takes the rest when it is
# there, and ignores fields it does not know. So a client keeps working against older servers,
# other implementations of the contract and newer servers that add fields.


class ReceivedUsage(Contract):
    """`usage` as a client reads it: `tokens` always; the split when the server sends it."""

    tokens: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ReceivedAnswer(Contract):
    """`data` of a query response as a client reads it."""

    answer: str
    confidence: float
    usage: ReceivedUsage
    model: str | None = None


class ReceivedQueryResponse(Contract):
    """A query response as a client reads it; the correlation id may come as a header only."""

    data: ReceivedAnswer
    correlation_id: str | None = None


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
    """The `error` object of an error response: a machine-readable `code` and a `message`."""

    code: str
    message: str


class ErrorResponse(Contract):
    """Body of every error answer."""

    error: ErrorDetail
    correlation_id: str | None = None
