"""`POST /v1/embeddings`: OpenAI's embeddings, by the embedding model a request names.

`input` is a string or a list of up to 2,048 non-empty strings; token arrays are refused (400
naming `input`): they are token ids of OpenAI's tokenizer, which is not this model's — an
OpenAI client that sends them (LangChain's `OpenAIEmbeddings` does, by default) is told to
send text. `encoding_format` is `float` or `base64` (little-endian float32, as OpenAI's
clients decode it); `dimensions` is refused unless it is the model's own. The vectors are unit
length, in the order of `input`; `usage` counts the tokens the model read.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from prsm import errors
from prsm.engines import Embeddings
from prsm.server.auth import READ, Principal
from prsm.server.openai.schema import failures, request_body
from prsm.server.openai.wire import PREFIX, parse
from prsm.server.service import Ask, QueryService
from prsm.server.services import ApiServices

MAX_INPUTS = 2048
"""OpenAI's limit on the texts of one request."""
_TOKENS_REFUSED = (
    "input is token ids: they are ids of OpenAI's tokenizer, which this model does not read; "
    "send text (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False)"
)


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[int] | list[list[int]]
    model: str = Field(min_length=1, max_length=256)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)

    def texts(self) -> list[str]:
        """The texts to embed; 400 naming `input` for token ids, an empty text or list, or
        more than `MAX_INPUTS`."""
        given = [self.input] if isinstance(self.input, str) else self.input
        if not given:
            raise _refused("input is empty: send a string or a list of strings")
        if not all(isinstance(item, str) for item in given):
            raise _refused(_TOKENS_REFUSED)
        if len(given) > MAX_INPUTS:
            raise _refused(f"input has {len(given)} texts; at most {MAX_INPUTS} a request")
        texts: list[str] = [str(item) for item in given]
        for index, text in enumerate(texts):
            if not text:
                raise _refused(f"input[{index}] is empty", param=f"input[{index}]")
        return texts


def _refused(message: str, param: str = "input") -> errors.HTTPStatusError:
    return errors.BadRequestError(message, code="invalid_value", param=param)


def embedding_ask(body: EmbeddingRequest, principal: Principal) -> Ask:
    """The query an embeddings request is, for its recording, budget and admission."""
    return Ask(
        prompt="",
        user_id=body.user or principal.key_id,
        model=body.model,
        operation="embeddings",
        wire=body.model_dump(mode="json", exclude={"input"}, exclude_none=True),
    )


def embedding_list(embeddings: Embeddings, encoding: str) -> dict[str, Any]:
    """OpenAI's list of embeddings, with usage."""
    vectors = embeddings.vectors
    if encoding == "base64":
        little = vectors.astype("<f4", copy=False)
        data = [base64.b64encode(row.tobytes()).decode() for row in little]
    else:
        data = vectors.astype("f8").tolist()
    tokens = embeddings.prompt_tokens
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data)],
        "model": embeddings.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _refuse_other_dimensions(model: QueryService, body: EmbeddingRequest) -> None:
    """400 for `dimensions` other than the model's own: its vectors cannot be shortened."""
    dimensions = model.ready_embedder().dimensions
    if body.dimensions != dimensions:
        raise errors.BadRequestError(
            f"{model.name} has {dimensions} dimensions and cannot shorten them",
            code="unsupported_value",
            param="dimensions",
        )


_BODY, SCHEMA_DEFINITIONS = request_body(EmbeddingRequest)


def embedding_routes(services: ApiServices) -> APIRouter:
    """The router with `POST /v1/embeddings`."""
    router = APIRouter(prefix=PREFIX, tags=["openai"])

    @router.post(
        "/embeddings",
        summary="OpenAI embeddings",
        responses=failures(400, 401, 403, 404, 413, 503, 504),
        openapi_extra={"requestBody": _BODY},
    )
    async def embeddings(request: Request) -> Response:
        """One vector per input text, by the embedding model named."""
        principal = await services.authorized(request, READ)
        body: EmbeddingRequest = parse(EmbeddingRequest, await request.body())
        texts = body.texts()
        if body.dimensions is not None:
            _refuse_other_dimensions(services.models.find(body.model, "embeddings"), body)
        answered = await services.embed(embedding_ask(body, principal), texts, principal, request)
        if isinstance(answered, Response):
            return answered
        return JSONResponse(embedding_list(answered, body.encoding_format))

    return router
