"""`PrefixAffinity`: send a prompt to the replica most likely to hold its beginning cached.

A replica's engine keeps the KV cells of the prompts it computed (`prsm.engines.batching`): a
prompt that begins like one it held — the same system prompt and tools, the earlier turns of
the same conversation — skips that part. Round robin throws that away across replicas. This
balancer keeps, per replica, a record of the prompts it sent there, as a chain of hashes of
fixed blocks of the prompt's text (each block's hash covers all before it, so a match of k
blocks means the first k blocks are the same); it sends a prompt to the replica whose record
matches most of its blocks.

Affinity alone piles a popular prefix onto one replica, so a load guard decides first: when the
best-matching replica has `guard_absolute` more calls in flight than the least busy one and
more than `guard_relative` times as many, the least busy one gets the call (SGLang's router's
rule). Ties — the same match on several replicas, as a new conversation's shared system
prompt — go to the least busy of them, and at random among equally busy ones, never by order
(a burst of one system prompt would go to one replica): new conversations spread evenly once
their system prompt is on several replicas. No match: the least busy replica (ties at
random). A request without a prompt long enough for one block may name a session instead (the
gateway's `session_header`), routed as a one-block prompt. Each choice is counted in
`prsm_affinity_picks_total{pool, decision}` (`matched`, `guarded`, `unmatched`): many
`guarded` say the guard is tight for the load, or replicas are too few.

The record of each replica is sized like its cache — `cache_tokens` (the replicas' `max_batch`
times `context_size`), counted as 4 characters a token — least recently sent blocks forgotten
first, and blocks not sent for `max_age_seconds` forgotten too. A replica that fails a call
(it was killed, is restarting, is ejected) is forgotten whole: its cache starts empty again.
"""

from __future__ import annotations

import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prsm import metrics
from prsm.sd.balance import Affinity, LeastOutstanding, pickable
from prsm.sd.base import Instance

CHARS_PER_TOKEN = 4
"""The record's estimate of a prompt's tokens from its characters (English text, BPE)."""


@dataclass(frozen=True)
class AffinityConfig:
    """The balancer's settings (the gateway's `affinity:` section of a pool)."""

    block_chars: int = 64
    """Characters per hashed block (about 16 tokens, vLLM's block): a prompt shorter has no
    key."""
    cache_tokens: int = 16384
    """Each replica's KV cache: PRSM's default `max_batch` (8) times `context_size` (2048)."""
    max_age_seconds: float = 600.0
    guard_absolute: int = 2
    """Calls in flight the best match may have beyond the least busy replica's..."""
    guard_relative: float = 1.5
    """...and times as many, before the least busy replica is chosen instead."""

    @property
    def record_blocks(self) -> int:
        """Blocks each replica's record holds: its cache's size in blocks."""
        return max(1, self.cache_tokens * CHARS_PER_TOKEN // self.block_chars)


def prompt_blocks(affinity: Affinity, block_chars: int) -> list[int]:
    """The chained hashes of the prompt's whole blocks (the last, partial one left out: the
    engine's cache holds whole prompts, and the next turn changes what follows); a session's
    one hash when the prompt has no whole block; empty when there is neither."""
    text = affinity.prompt
    chain: list[int] = []
    previous = 0
    for start in range(0, len(text) - block_chars + 1, block_chars):
        previous = hash((previous, text[start : start + block_chars]))
        chain.append(previous)
    if not chain and affinity.session:
        chain.append(hash(("session", affinity.session)))
    return chain


class _Record:
    """The blocks sent to one replica: hash → when last sent, least recent first."""

    def __init__(self) -> None:
        self.blocks: OrderedDict[int, float] = OrderedDict()

    def matched(self, chain: Sequence[int], since: float) -> int:
        """How many of `chain`'s first blocks this replica was sent after `since`."""
        for depth, block in enumerate(chain):
            sent = self.blocks.get(block)
            if sent is None or sent < since:
                return depth
        return len(chain)

    def sent(self, chain: Iterable[int], now: float, most: int) -> None:
        for block in chain:
            self.blocks[block] = now
            self.blocks.move_to_end(block)
        while len(self.blocks) > most:
            self.blocks.popitem(last=False)


class PrefixAffinity(LeastOutstanding):
    """The replica with the longest cached match of the prompt, unless it is too busy beside
    the least busy one (see the module's docstring)."""

    def __init__(
        self,
        config: AffinityConfig | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        pool: str = "prsm-api",
    ) -> None:
        super().__init__(rng)
        self.config = config or AffinityConfig()
        self._clock = clock or time.monotonic
        self._records: dict[str, _Record] = {}
        self._decisions = {
            how: metrics.AFFINITY_PICKS.labels(pool, how)
            for how in ("matched", "guarded", "unmatched")
        }

    def matched(self, instance: Instance, affinity: Affinity) -> int:
        """How many of the prompt's blocks `instance` is thought to hold."""
        chain = prompt_blocks(affinity, self.config.block_chars)
        return self._depth(instance, chain, self._clock() - self.config.max_age_seconds)

    def pick(
        self,
        instances: Sequence[Instance],
        exclude: Collection[str] = (),
        hint: Affinity | None = None,
    ) -> Instance:
        """The chosen instance not in `exclude` (its record then holds the prompt's blocks);
        `LookupError` when none is left."""
        allowed = pickable(instances, exclude)
        chain = prompt_blocks(hint, self.config.block_chars) if hint is not None else []
        chosen = self._best_match(allowed, chain) if chain else None
        least = self._least_busy(allowed)
        if chosen is None:
            self._decisions["unmatched"].inc()
            chosen = least
        elif self._too_busy(chosen, least):
            self._decisions["guarded"].inc()
            chosen = least
        else:
            self._decisions["matched"].inc()
        if chain:
            record = self._records.setdefault(chosen.id, _Record())
            record.sent(chain, self._clock(), self.config.record_blocks)
        return chosen

    def failed(self, instance: Instance) -> None:
        """`instance` failed a call (killed, restarting, ejected): its cache is thought empty."""
        self._records.pop(instance.id, None)

    def _best_match(self, allowed: list[Instance], chain: list[int]) -> Instance | None:
        since = self._clock() - self.config.max_age_seconds
        depths = [self._depth(i, chain, since) for i in allowed]
        deepest = max(depths)
        if not deepest:
            return None
        return self._least_busy([i for i, d in zip(allowed, depths, strict=True) if d == deepest])

    def _depth(self, instance: Instance, chain: list[int], since: float) -> int:
        record = self._records.get(instance.id)
        return record.matched(chain, since) if record is not None else 0

    def _least_busy(self, allowed: list[Instance]) -> Instance:
        loads = [self.outstanding(i) / i.weight for i in allowed]
        idlest = [i for i, load in zip(allowed, loads, strict=True) if load == min(loads)]
        return self._rng.choice(idlest)

    def _too_busy(self, chosen: Instance, least: Instance) -> bool:
        busy, idle = self.outstanding(chosen), self.outstanding(least)
        config = self.config
        return busy - idle > config.guard_absolute and busy > config.guard_relative * idle


def request_affinity(body: Mapping[str, Any], session: str | None = None) -> Affinity:
    """What a JSON request body offers to route by: OpenAI's chat completions (`tools`, then
    `messages`), Responses (`tools`, `instructions`, `input`) and completions (`prompt`), and
    PRSM's query (`prompt`) — in the order the engine reads them, so a conversation's next
    turn begins with this turn's text."""
    parts: list[str] = []
    if body.get("tools"):
        parts.append(json.dumps(body["tools"], sort_keys=True, separators=(",", ":")))
    for field in ("instructions", "prompt"):
        value = body.get(field)
        if isinstance(value, str):
            parts.append(value)
    for field in ("messages", "input"):
        value = body.get(field)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):  # each message whole: its role, text, tool calls
            parts.extend(json.dumps(item, sort_keys=True, separators=(",", ":")) for item in value)
    return Affinity("\n".join(parts), session)
