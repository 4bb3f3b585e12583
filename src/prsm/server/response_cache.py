"""The response cache: a deterministic query asked again is answered from Redis, not the engine.

Only repeatable answers are kept: greedy ones (temperature 0) or ones sampled with a seed the
caller chose. The key is a digest of everything that decides the answer — the served model
with its weights and the versions of PRSM and llama.cpp (`system_fingerprint`), the whole
prompt, every sampling option, the response format and tools, the answer length and count, the
operation — and of the caller's identity, so one tenant never reads another's answers.

- A hit replays the answer: its text pieces as they were streamed (or the whole text as one
  piece), then the same generation. What the routes send is built from it as for a fresh one.
- Identical queries arriving together compute once in an instance: the others wait for the
  first and are answered from it.
- `Cache-Control: no-cache` from the caller skips reading (the fresh answer is still kept);
  `no-store` skips both.
- Redis failing is a miss (and a metric, and one warning an outage), never an error.
- Embeddings are kept too, by model, caller and texts: a text embedded again is read back.
- Entries live `cache.ttl_seconds`; an answer larger than `cache.max_entry_bytes` is not kept;
  past `cache.max_entries`, the oldest are dropped.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from prsm import metrics
from prsm.config import CacheSettings
from prsm.edge.correlation import add_answer_headers
from prsm.engines import Embeddings, Generation
from prsm.engines.base import Prompt, TokenLogprob
from prsm.engines.text import TextSink
from prsm.engines.tools import ToolCall
from prsm.server.choices import ChoiceText

log = logging.getLogger("prsm.server")
CACHE_HEADER = "x-prsm-cache"
"""`hit` or `miss`, on every answer the cache looked up."""
_PREFIX = "prsm:cache:"
_INDEX = "prsm:cache:index"
"""A sorted set of the entries' keys by when they were stored, to drop the oldest."""

Generate = Callable[[TextSink | None], Awaitable[Generation]]


@dataclass(frozen=True)
class Lookup:
    """One query's place in the cache: its key, and whether to read and to keep."""

    key: str
    read: bool
    write: bool


Piece = tuple[int | None, str]
"""A streamed piece of text, and the number of the answer it belongs to when there were
several (`ChoiceText`)."""


@dataclass(frozen=True)
class Cached:
    """An answer as kept: the generation and the text pieces it was streamed in."""

    generation: Generation
    pieces: tuple[Piece, ...]


class ResponseCache:
    """Answers kept in Redis by `lookup()` key; one computation per key at a time."""

    def __init__(self, redis: Redis, settings: CacheSettings, service: str) -> None:
        self._redis = redis
        self._settings = settings
        self._flights: dict[str, asyncio.Future[Cached]] = {}
        self._failing = False
        """Redis failed last time: the outage has been warned of."""
        self._results = {
            result: metrics.CACHE_REQUESTS.labels(service, result)
            for result in ("hit", "miss", "error")
        }
        self._stored = metrics.CACHE_STORED_BYTES.labels(service)

    async def answer(
        self,
        lookup: Lookup,
        on_text: TextSink | None,
        generate: Generate,
        notes: dict[str, Any] | None = None,
    ) -> tuple[Generation, bool]:
        """The answer for `lookup`, and whether it came from the cache (or from an identical
        query computing it at the same time) rather than from `generate`; the answer's
        `x-prsm-cache` header, in `notes`, says which before any text is passed on."""
        if lookup.read:
            kept = await self._get(lookup.key)
            found = decode(kept) if kept is not None else await self._joined(lookup.key)
            if found is not None:
                self._results["hit"].inc()
                add_answer_headers(notes, {CACHE_HEADER: "hit"})
                return _replayed(found, on_text), True
        self._results["miss"].inc()
        add_answer_headers(notes, {CACHE_HEADER: "miss"})
        flight: asyncio.Future[Cached] = asyncio.get_running_loop().create_future()
        if lookup.read:
            self._flights[lookup.key] = flight
        try:
            pieces: list[Piece] = []
            generation = await generate(_recording(pieces, on_text))
            cached = Cached(generation, tuple(pieces))
            flight.set_result(cached)
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            if self._flights.get(lookup.key) is flight:
                del self._flights[lookup.key]
        if lookup.write and generation.finish_reason != "cancelled":
            await self._put(lookup.key, encode(cached))
        return generation, False

    async def _joined(self, key: str) -> Cached | None:
        """The answer an identical query is computing now, once it has it (None if it fails
        or is cancelled: this one computes its own)."""
        flight = self._flights.get(key)
        if flight is None:
            return None
        try:
            return await asyncio.shield(flight)
        except asyncio.CancelledError:
            if not flight.done():
                raise  # this query itself was cancelled
            return None  # the one computing it was (its caller left)
        except Exception:
            return None

    async def vectors(
        self,
        lookup: Lookup,
        compute: Callable[[], Awaitable[Embeddings]],
        notes: dict[str, Any] | None = None,
    ) -> tuple[Embeddings, bool]:
        """The embeddings for `lookup`, and whether they came from the cache rather than
        from `compute` (the `x-prsm-cache` header in `notes` says which)."""
        found = await self._get(lookup.key) if lookup.read else None
        if found is not None:
            self._results["hit"].inc()
            add_answer_headers(notes, {CACHE_HEADER: "hit"})
            return _embeddings_from(found), True
        self._results["miss"].inc()
        add_answer_headers(notes, {CACHE_HEADER: "miss"})
        embeddings = await compute()
        if lookup.write:
            await self._put(lookup.key, _embeddings_json(embeddings))
        return embeddings, False

    async def _get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(_PREFIX + key)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        self._failing = False
        return None if raw is None else dict(json.loads(raw))

    async def _put(self, key: str, entry: dict[str, Any]) -> None:
        value = json.dumps(entry, separators=(",", ":"))
        if len(value) > self._settings.max_entry_bytes:
            return
        stored_at = time.time()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(_PREFIX + key, value, ex=self._settings.ttl_seconds)
                pipe.zadd(_INDEX, {key: stored_at})
                pipe.zrange(_INDEX, 0, -self._settings.max_entries - 1)
                pipe.zremrangebyrank(_INDEX, 0, -self._settings.max_entries - 1)
                dropped = (await pipe.execute())[2]
            if dropped:
                await self._redis.delete(*(_PREFIX + k.decode() for k in dropped))
        except (RedisError, OSError) as exc:
            self._failed("write", exc)
            return
        self._stored.inc(len(value))

    def _failed(self, doing: str, exc: BaseException) -> None:
        """Count a Redis failure; warn once an outage (until Redis answers again)."""
        self._results["error"].inc()
        if not self._failing:
            log.warning("response cache %s failed: misses until Redis answers", doing,
                        extra={"error": str(exc)})  # fmt: skip
        self._failing = True


def cache_key(parts: dict[str, Any]) -> str:
    """The digest of everything that decides an answer, and whose it is."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes | tuple | frozenset):
        return list(value)
    raise TypeError(f"not part of a cache key: {type(value).__name__}")


def _recording(pieces: list[Piece], on_text: TextSink | None) -> TextSink | None:
    """`on_text`, keeping each piece; None (the engine's cheaper path) when nobody streams."""
    if on_text is None:
        return None

    def sink(text: str) -> None:
        pieces.append((text.choice if isinstance(text, ChoiceText) else None, str(text)))
        on_text(text)

    return sink


def _replayed(cached: Cached, on_text: TextSink | None) -> Generation:
    """The kept answer, its pieces passed to `on_text` as they first came (an answer kept
    unstreamed: each answer's whole text as one piece)."""
    if on_text is None:
        return cached.generation
    answers = cached.generation.answers
    whole = [(i if len(answers) > 1 else None, a.text) for i, a in enumerate(answers) if a.text]
    for choice, text in cached.pieces or whole:
        on_text(text if choice is None else ChoiceText(text, choice))
    return cached.generation


def encode(cached: Cached) -> dict[str, Any]:
    """An answer as JSON."""
    return {"generation": _generation_json(cached.generation), "pieces": list(cached.pieces)}


def decode(data: dict[str, Any]) -> Cached:
    """An answer from its JSON."""
    pieces = tuple((choice, text) for choice, text in data["pieces"])
    return Cached(_generation_from(data["generation"]), pieces)


def _generation_json(generation: Generation) -> dict[str, Any]:
    fields = dataclasses.asdict(generation)
    fields["first_token_at"] = None  # a replay has no first token of its own
    fields["logprobs"] = (
        None
        if generation.logprobs is None
        else [[list(t.token), t.logprob, [[list(b), lp] for b, lp in t.top]]
              for t in generation.logprobs]
    )  # fmt: skip
    fields["choices"] = [_generation_json(choice) for choice in generation.choices]
    return fields


def _generation_from(fields: dict[str, Any]) -> Generation:
    logprobs = fields.pop("logprobs")
    return Generation(
        **fields
        | {
            "tool_calls": tuple(ToolCall(**call) for call in fields["tool_calls"]),
            "choices": tuple(_generation_from(choice) for choice in fields["choices"]),
            "logprobs": None
            if logprobs is None
            else tuple(
                TokenLogprob(bytes(token), logprob, tuple((bytes(b), lp) for b, lp in top))
                for token, logprob, top in logprobs
            ),
        }
    )


def _embeddings_json(embeddings: Embeddings) -> dict[str, Any]:
    """Embeddings as JSON: the vectors as little-endian float32, base64."""
    vectors = embeddings.vectors.astype("<f4", copy=False)
    return {
        "vectors": base64.b64encode(vectors.tobytes()).decode(),
        "shape": list(vectors.shape),
        "prompt_tokens": embeddings.prompt_tokens,
        "model": embeddings.model,
    }


def _embeddings_from(fields: dict[str, Any]) -> Embeddings:
    import numpy as np  # loaded with an embedding model only

    flat = np.frombuffer(base64.b64decode(fields["vectors"]), dtype="<f4")
    vectors = flat.reshape(fields["shape"]).astype(np.float32)
    return Embeddings(vectors, int(fields["prompt_tokens"]), str(fields["model"]))


def prompt_parts(prompt: Prompt) -> Any:
    """A prompt as plain data for a key."""
    return prompt if isinstance(prompt, str) else [dataclasses.asdict(m) for m in prompt]
