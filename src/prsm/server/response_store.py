"""Stored Responses API responses, in Redis: the response as it was answered, and the
conversation items up to and including it, so that `previous_response_id` continues it.

Each is kept under its creator's owner tag (`keys.stored_response`) for
`responses.ttl_seconds`: another caller asking for the same id finds nothing, exactly as if it
did not exist. Redis unreachable while reading is a 503 (the conversation cannot be continued
now); while storing, the answer is still returned and the failure logged: the caller has what
it paid for, and a later `previous_response_id` says plainly that the response is not found.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from prsm import keys
from prsm.errors import HTTPStatusError, NotFoundError, ServiceUnavailableError, ValidationError

log = logging.getLogger("prsm.server")
T = TypeVar("T")


@dataclass(frozen=True)
class Stored:
    """A stored response and the conversation's items up to it (its output included)."""

    response: dict[str, Any]
    items: list[dict[str, Any]]


class ResponseStore:
    """Responses kept in Redis for `ttl_seconds`, each readable only by its creator."""

    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self._redis = redis
        self._ttl = ttl_seconds

    async def save(self, identity: str, stored: Stored) -> bool:
        """Keep `stored` under its response's id; False (logged) when Redis failed."""
        key = keys.stored_response(keys.owner_tag(identity), stored.response["id"])
        value = json.dumps({"response": stored.response, "items": stored.items})
        try:
            await self._redis.set(key, value, ex=self._ttl)
        except (RedisError, OSError) as exc:
            log.warning(
                "response not stored: Redis failed",
                extra={"responseId": stored.response["id"], "error": str(exc)},
            )
            return False
        return True

    async def load(self, identity: str, response_id: str, param: str | None = None) -> Stored:
        """`identity`'s stored response `response_id`; 404 `not_found` (or, for `param`, a 400
        naming it) when there is none, 503 when Redis cannot be read."""
        key = keys.stored_response(keys.owner_tag(identity), response_id)
        raw = await _reached(self._redis.get(key), "read")
        if raw is None:
            raise not_found(response_id, param)
        data = json.loads(raw)
        return Stored(data["response"], data["items"])

    async def delete(self, identity: str, response_id: str) -> None:
        """Forget `identity`'s stored response; 404 when there is none."""
        key = keys.stored_response(keys.owner_tag(identity), response_id)
        if not await _reached(self._redis.delete(key), "deleted"):
            raise not_found(response_id, None)


async def _reached(operation: Awaitable[T], doing: str) -> T:
    """What `operation` gave; 503 `store_unavailable` when Redis failed."""
    try:
        return await operation
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError(
            f"stored responses cannot be {doing} now: {exc}", code="store_unavailable", shared=True
        ) from None


def not_found(response_id: str, param: str | None) -> HTTPStatusError:
    """OpenAI's answer for a response id it does not know (a 400 naming `param` when the id
    came in a request body)."""
    if param is None:
        return NotFoundError(f"No response found with id '{response_id}'.", param="response_id")
    return ValidationError(
        f"Previous response with id '{response_id}' not found.",
        code="previous_response_not_found",
        param=param,
    )
