"""`GET /v1/models` and `GET /v1/models/{id}`: OpenAI's list of the served models, aliases too
(as OpenAI lists every id a request may name), and one model by id or alias."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from prsm.server.auth import READ
from prsm.server.openai.schema import failures
from prsm.server.openai.wire import PREFIX
from prsm.server.service import QueryService
from prsm.server.services import ApiServices


class ModelList(BaseModel):
    """OpenAI's model list."""

    object: Literal["list"]
    data: list[dict[str, Any]]


def model_object(model_id: str, service: QueryService | None = None) -> dict[str, Any]:
    """OpenAI's model object; with its service, what it serves and, for an alias, the id it
    stands for (PRSM's own fields, beside OpenAI's)."""
    shape: dict[str, Any] = {"id": model_id, "object": "model", "created": 0, "owned_by": "prsm"}
    if service is not None:
        shape["prsm"] = {"serves": service.spec.serves, "model": service.name}
    return shape


def model_routes(services: ApiServices) -> APIRouter:
    """The router with the model list and one model by id."""
    router = APIRouter(prefix=PREFIX, tags=["openai"])
    models = services.models

    @router.get(
        "/models",
        summary="OpenAI model list",
        response_model=ModelList,
        responses=failures(401, 403, 503),
    )
    async def listed(request: Request) -> Response:
        """Every served model, by its id and each alias (503 while a model that takes its name
        from its engine loads)."""
        await services.authorized(request, READ)
        for service in models:
            if service.name is None:
                service.loaded()
        data = [model_object(name, service) for service in models for name in service.names]
        return JSONResponse({"object": "list", "data": data})

    @router.get(
        "/models/{model_id:path}",
        summary="OpenAI model",
        responses=failures(401, 403, 404, 503),
    )
    async def model(request: Request, model_id: str) -> Response:
        """One served model, by its id or an alias (404 `model_not_found` for any other)."""
        await services.authorized(request, READ)
        return JSONResponse(model_object(model_id, models.named(model_id)))

    return router
