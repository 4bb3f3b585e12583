"""The event contract, wire-compatible with the specification's Node `PRSMEventHandler`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from prsm.contracts import Contract, Usage
from prsm.keys import EventType


def utc_now_iso() -> str:
    """ISO-8601 in UTC with milliseconds and `Z`, as JavaScript's `toISOString()` writes it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


NO_USAGE = Usage(tokens=0, prompt_tokens=0, completion_tokens=0)


class EventError(Contract):
    """A failed query's error in its event: code, message and HTTP status."""

    code: str
    message: str
    status: int


class QueryEvent(Contract):
    """One query's outcome, published on `prsm:query:<type>` and appended to the stream.

    Completed events carry `usage`, `model` and `confidence`; failed ones carry `error` and
    the original `request` (so that a fallback service can retry it). Neither carries the
    answer: that goes to the caller alone.
    """

    # Unknown fields are kept, so an older consumer reads a newer producer's events.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    type: EventType
    timestamp: str = Field(default_factory=utc_now_iso)
    correlation_id: str
    user_id: str
    """The user the caller says the query is for: its word, not checked."""
    caller_id: str | None = None
    """Who the query is charged to, as authenticated (`keyId` of the logs, `jwt:<subject>`
    or `cert:<identity>`): consumers scope `userId` by it."""
    usage: Usage = Field(
        default_factory=lambda: Usage(tokens=0, prompt_tokens=0, completion_tokens=0)
    )
    model: str
    latency_ms: float
    confidence: float | None = None
    priority: str | None = None
    context: dict[str, Any] | None = None
    error: EventError | None = None
    request: dict[str, Any] | None = None
    service: str | None = None
    instance: str | None = None
    trace_id: str | None = None
    """The trace the query ran in (hex), when tracing is on."""
