"""References for bench/api_throughput.py: the least a JSON API on uvicorn can do.

`app` (Starlette) answers POST /api/v1/query with the same JSON and does nothing else;
`fastapi_app` also parses the body into a pydantic model, as any FastAPI service would.
Neither does PRSM's work (auth, admission, metrics, logs, correlation ids).
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = json.dumps(
    {
        "data": {
            "answer": "This is a fixed answer.",
            "confidence": 0.9,
            "usage": {"tokens": 10, "promptTokens": 5, "completionTokens": 5},
            "model": "fixed",
        },
        "correlationId": "0" * 32,
    }
).encode()


async def query(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


async def ready(_: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


app = Starlette(routes=[Route("/api/v1/query", query, methods=["POST"]), Route("/ready", ready)])


class Query(BaseModel):
    prompt: str
    userId: str
    maxTokens: int | None = None


fastapi_app = FastAPI()


@fastapi_app.post("/api/v1/query")
async def fastapi_query(body: Query) -> Response:
    return Response(ANSWER, media_type="application/json")


@fastapi_app.get("/ready")
async def fastapi_ready() -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")
