"""`/api/v1/jobs` and `/api/v1/batches`: queued queries, their status and a batch's results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import JSONResponse, Response

from prsm import tracing
from prsm.errors import ValidationError
from prsm.jobs.schema import JOB_REQUEST, BatchResult, JobAccepted, JobStatus
from prsm.server.auth import READ, WRITE
from prsm.server.errors import parsed_body
from prsm.server.routes.openapi import ERRORS, JOB_SCHEMA, json_body
from prsm.server.services import ApiServices

IDEMPOTENCY_HEADER = "idempotency-key"
_IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Submitting again with the same key returns the first job (for as long as "
    "it is kept) instead of queueing another; the job's `requestId` serves when it is absent.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}


# The ids' forms, documented (so clients and fuzzers send what can exist) but not checked
# before authentication: an unknown id is 404, for anyone, after the caller is known.
JobIdPath = Annotated[
    str, Path(description="The job's id.", json_schema_extra={"pattern": "^[0-9a-f]{1,64}$"})
]
BatchIdPath = Annotated[
    str,
    Path(
        description="The batch's id (`batchId`).",
        json_schema_extra={"pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    ),
]


def job_routes(services: ApiServices) -> APIRouter:
    """The router with the job and batch routes."""
    router = APIRouter(prefix="/api/v1", tags=["jobs"])

    @router.post(
        "/jobs",
        status_code=202,
        response_model=JobAccepted,
        responses=ERRORS,
        openapi_extra={
            "requestBody": json_body(JOB_SCHEMA),
            "parameters": [_IDEMPOTENCY_PARAMETER],
        },
    )
    async def submit_job(request: Request) -> Response:
        """Queue a priority, batch or scheduled query; the answer comes by status or callback."""
        principal = await services.authorized(request, WRITE)
        body = parsed_body(JOB_REQUEST.validate_json, await request.body())
        accepted = await services.job_service().submit(
            body,
            request.scope["state"]["correlation_id"],
            caller=principal.identity,
            key_id=principal.key_id,
            idempotency_key=_idempotency_key(request),
            trace=tracing.kept_context(request.headers),
        )
        return JSONResponse(accepted.to_wire(), status_code=202)

    @router.get("/jobs/{job_id}", response_model=JobStatus, responses=ERRORS)
    async def job_status(job_id: JobIdPath, request: Request) -> Response:
        """A job's status, with its result or error once it has finished (the caller's own
        jobs only: another caller's job is 404)."""
        principal = await services.authorized(request, READ)
        status = await services.job_service().status(job_id, principal.identity)
        return Response(status.model_dump_json(by_alias=True), media_type="application/json")

    @router.get("/batches/{batch_id}", response_model=list[BatchResult], responses=ERRORS)
    async def batch_results(batch_id: BatchIdPath, request: Request) -> Response:
        """The per-query results of a finished batch job (kept for an hour; the caller's own
        batches only: another caller's batch is 404)."""
        principal = await services.authorized(request, READ)
        results = await services.job_service().batch_results(batch_id, principal.identity)
        return JSONResponse([r.to_wire() for r in results])

    return router


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 256:
        raise ValidationError(
            "Idempotency-Key must be 1 to 256 characters", code="invalid_idempotency_key"
        )
    return key
