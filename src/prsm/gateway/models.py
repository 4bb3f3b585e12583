"""Routing by model: which pool serves the model a request's body names.

A route with `models` reads the `model` of a JSON body (the body is already read whole, and
bounded, for retries; a body that is not a JSON object, or names no model, goes by the
route's pool or split). The map comes from the configuration and from each pool's own model
list (`GET <upstream prefix>/models`, OpenAI's shape with PRSM's `prsm.model` naming the id an
alias stands for), asked with the gateway's API key when the gateway starts, every
`refresh_seconds`, and — at most once a second — when a request names a model no pool is known
to serve. An alias is resolved here and the model's id forwarded, so every replica and every
metric sees one name. A model no pool serves is 404 `model_not_found`, listing those served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prsm.errors import NotFoundError, PRSMError
from prsm.gateway.config import Route
from prsm.gateway.upstream import Transport
from prsm.sd.pool import Pool

log = logging.getLogger("prsm.gateway")

_RELEARN_SECONDS = 1.0
"""Least time between two lists asked for because a request named an unknown model."""
_LIST_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Served:
    """Where a model name leads: the pool, and the model's id (an alias's canonical name)."""

    pool: str
    model: str


def json_object(body: bytes) -> dict[str, Any] | None:
    """The JSON object a body holds (parsed once for the model and the prompt to route by);
    None for any other body."""
    if not body or body.lstrip()[:1] != b"{":
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def body_model(fields: dict[str, Any] | None) -> str | None:
    """The `model` a JSON object body (`json_object`) names; None when it names none."""
    model = fields.get("model") if fields is not None else None
    return model if isinstance(model, str) else None


def with_model(body: bytes, model: str) -> bytes:
    """`body` naming `model` instead (an alias replaced by the model's id)."""
    parsed = json.loads(body)
    parsed["model"] = model
    return json.dumps(parsed, separators=(",", ":")).encode()


class ModelDirectory:
    """One route's map of model names to pools: configured, and learned from the pools."""

    def __init__(
        self,
        route: Route,
        pools: dict[str, Pool],
        transport: Transport,
        api_key: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert route.models is not None
        self._settings = route.models
        learned = route.models.pools or ([*route.pools, *pools] if route.models.learn else [])
        self._pools = {name: pools[name] for name in dict.fromkeys(learned)}
        self._transport = transport
        self._headers = [(b"accept", b"application/json")]
        if api_key:
            self._headers.append((b"authorization", f"Bearer {api_key}".encode()))
        self._default = route.pools[0]
        self._path = (route.rewrite or route.prefix).rstrip("/") + "/models"
        self._clock = clock
        self._learned: dict[str, Served] = {}
        self.listed: dict[str, list[dict[str, Any]]] = {}
        """Each pool's model objects as it last listed them."""
        self._asked_at = -_RELEARN_SECONDS
        self._refreshing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def pools(self) -> list[str]:
        """The pools whose models this route reaches."""
        return [*dict.fromkeys([*self._pools, *self._settings.map.values()])] or [self._default]

    def chain(self, served: Served) -> list[Served]:
        """`served`, then where each of its model's fallbacks leads, each once; a fallback no
        pool is known to serve is passed over (the model itself still answers)."""
        chain = [served]
        for name in self._settings.fallbacks.get(served.model, []):
            fallback = self.lookup(name)
            if fallback is not None and fallback not in chain:
                chain.append(fallback)
        return chain

    def lookup(self, name: str) -> Served | None:
        """Where `name` leads, if any pool is known to serve it."""
        pool = self._settings.map.get(name)
        if pool is not None:
            return Served(pool, name)
        return self._learned.get(name)

    async def resolve(self, name: str) -> Served:
        """Where `name` leads; the lists are asked again (at most once a second) before a
        404 `model_not_found` says no pool serves it."""
        served = self.lookup(name)
        if served is None and self._settings.learn:
            if self._clock() - self._asked_at >= _RELEARN_SECONDS:
                await self.learn()
            served = self.lookup(name)
        if served is None:
            known = ", ".join(repr(n) for n in [*self._settings.map, *self._learned])
            raise NotFoundError(
                f"model {name!r} is not served here; the models are {known or 'not known yet'}",
                code="unknown_model",
                param="model",
            )
        return served

    async def start(self) -> None:
        """Learn the pools' lists now, then every `refresh_seconds`."""
        if not self._settings.learn:
            return
        await self.learn()
        self._refreshing = asyncio.create_task(self._refresh(), name="prsm-gateway-models")

    async def aclose(self) -> None:
        """Stop asking."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._settings.refresh_seconds)
            await self.learn()

    async def learn(self) -> None:
        """Ask every pool for its list; a pool that does not answer keeps what it said last."""
        async with self._lock:
            self._asked_at = self._clock()
            lists = await asyncio.gather(*(self._list(pool) for pool in self._pools.values()))
            for name, listed in zip(self._pools, lists, strict=True):
                if listed is not None:
                    self.listed[name] = listed
            learned: dict[str, Served] = {}
            for name in self._pools:  # the first pool wins a name two pools serve
                for item in self.listed.get(name, []):
                    canonical = (item.get("prsm") or {}).get("model") or item["id"]
                    learned.setdefault(item["id"], Served(name, canonical))
            self._learned = learned

    async def _list(self, pool: Pool) -> list[dict[str, Any]] | None:
        instance = pool.pick()
        if instance is None:
            return None
        try:
            async with asyncio.timeout(_LIST_TIMEOUT):
                return await self._fetch(instance.url)
        except (PRSMError, OSError, TimeoutError, ValueError, KeyError) as exc:
            log.warning(
                "model list unavailable",
                extra={"pool": pool.service, "instance": instance.url, "error": str(exc)},
            )
            return None

    async def _fetch(self, origin: str) -> list[dict[str, Any]]:
        response = await self._transport.send(
            origin, "GET", self._path, self._headers, b"", replayable=True
        )
        try:
            body = b"".join([chunk async for chunk in response.chunks()])
        finally:
            response.release()
        if response.status != 200:
            raise ValueError(f"{self._path} answered {response.status}")
        data = json.loads(body)["data"]
        return [item for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]


Req = TypeVar("Req")
Resp = TypeVar("Resp")


def falling_back(
    chain: list[Served],
    send: Callable[[Served, Req], Awaitable[Resp]],
    may_fall_back: Callable[[Req, BaseException], bool],
    fell_back: Callable[[Served, Served], None],
) -> Callable[[Req], Awaitable[Resp]]:
    """A handler that sends a request to `chain`'s first model, and to the next while the
    failure lets it (`may_fall_back`: the request provably did not run)."""

    async def call(request: Req) -> Resp:
        for tried, served in enumerate(chain):
            try:
                return await send(served, request)
            except PRSMError as exc:
                if tried == len(chain) - 1 or not may_fall_back(request, exc):
                    raise
                fell_back(served, chain[tried + 1])
        raise AssertionError("a chain of models is never empty")

    return call


Fetch = Callable[[str], Awaitable[tuple[int, bytes]]]
"""Ask one pool (by name) for its model list, as the caller asked: status and body."""


async def model_union(pools: list[str], fetch: Fetch) -> tuple[int, bytes]:
    """Every pool's model list in one, asked with the caller's own credentials (the first
    refusal, such as a 401, is the answer); a pool that fails is left out, unless all do."""
    answers = await asyncio.gather(*(fetch(pool) for pool in pools))
    refused = [answer for answer in answers if 400 <= answer[0] < 500]
    if refused:
        return refused[0]
    models: dict[str, Any] = {}
    for status, body in answers:
        if status == 200:
            for item in json.loads(body).get("data", []):
                models.setdefault(item["id"], item)
    if not models and all(status != 200 for status, _ in answers):
        return answers[0]
    return 200, json.dumps({"object": "list", "data": list(models.values())}).encode()
