"""Job contracts: what `POST /api/v1/jobs` takes, what status and callbacks carry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, model_validator

from prsm.contracts import Contract, MaxTokens, Priority, Prompt, ReceivedAnswer, UserId
from prsm.keys import JobType

MAX_BATCH = 1000


class _Strict(Contract):
    model_config = ConfigDict(
        alias_generator=Contract.model_config["alias_generator"],
        populate_by_name=True,
        extra="forbid",
    )


ModelName = Annotated[
    str | None,
    Field(default=None, min_length=1, max_length=256, description="The model to ask (an id or "
          "alias; the API's first chat model when unset)."),
]  # fmt: skip


class QueryJobData(_Strict):
    """`data` of priority-query and scheduled-query jobs."""

    prompt: Prompt
    user_id: UserId
    request_id: str | None = Field(default=None, max_length=256)
    context: dict[str, Any] | None = None
    max_tokens: MaxTokens = None
    model: ModelName = None


class BatchItem(_Strict):
    """One query of a batch job, with the id its result is reported under."""

    id: str = Field(min_length=1, max_length=256)
    prompt: Prompt
    user_id: UserId
    context: dict[str, Any] | None = None
    max_tokens: MaxTokens = None
    model: ModelName = None


class BatchJobData(_Strict):
    """`data` of batch-query jobs: results go to `batch:{batchId}:results` for an hour."""

    batch_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    queries: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class _JobRequestBase(_Strict):
    # What `_check` refuses, said in the schema: runAt and delaySeconds not both given.
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["runAt", "delaySeconds"],
                "properties": {"runAt": {"type": "string"}, "delaySeconds": {"type": "number"}},
            }
        }
    )

    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
        json_schema_extra={"format": "uri"},
        description="Where the result is POSTed, signed. A target outside the server's "
        "allowed networks (`jobs.callback_allow`), or spelled so that clients may read it "
        "differently, is 403 `callback_not_allowed`.",
    )
    run_at: datetime | None = Field(default=None, description="Run no earlier than this.")
    # Strict: a boolean or a numeric string is refused, as the schema (a number) says.
    delay_seconds: float | None = Field(default=None, ge=0, le=30 * 86_400, strict=True)

    @model_validator(mode="after")
    def _check(self) -> _JobRequestBase:
        if self.run_at is not None and self.delay_seconds is not None:
            raise ValueError("give runAt or delaySeconds, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("runAt needs a time zone (for example 2030-01-01T12:00:00Z)")
        return self


class QueryJobRequest(_JobRequestBase):
    """A priority or scheduled query job."""

    type: Literal["priority-query", "scheduled-query"]
    data: QueryJobData


class BatchJobRequest(_JobRequestBase):
    """A batch of queries; per-query results go to `GET /api/v1/batches/{batchId}`."""

    type: Literal["batch-query"]
    data: BatchJobData


JobRequest = QueryJobRequest | BatchJobRequest
"""Body of `POST /api/v1/jobs`: one of the job kinds, told apart by `type`."""

JOB_REQUEST: TypeAdapter[JobRequest] = TypeAdapter(
    Annotated[JobRequest, Field(discriminator="type")]
)
"""Validates a job submission (`JOB_REQUEST.validate_json(body)`) and describes it
(`JOB_REQUEST.json_schema(by_alias=True)`)."""


class JobAccepted(Contract):
    """The answer to a job submission: its id, queue and status."""

    job_id: str
    status_url: str
    correlation_id: str


class JobErrorInfo(Contract):
    """Why a job failed: a code and a message."""

    code: str
    message: str


class JobStatus(Contract):
    """Body of `GET /api/v1/jobs/{jobId}`."""

    job_id: str
    type: JobType
    status: Literal["queued", "active", "complete", "failed", "aborted"]
    attempts: int
    correlation_id: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    scheduled_at: datetime | None = None
    result: Any = None
    error: JobErrorInfo | None = None


class BatchResult(Contract):
    """One query's outcome within a batch."""

    id: str
    status: Literal["success", "error"]
    response: ReceivedAnswer | None = None
    error: str | None = None


class Callback(Contract):
    """What a callback POSTs: the specification's `{requestId, status, response | error}`."""

    request_id: str
    status: Literal["completed", "failed"]
    response: Any = None
    error: str | None = None


QueuePriority: dict[JobType, Priority] = {
    "priority-query": "high",
    "batch-query": "low",
    "scheduled-query": "normal",
}
"""The engine priority each job type's queries get at the API."""
