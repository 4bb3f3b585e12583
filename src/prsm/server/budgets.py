"""Token and request budgets per caller, exact across any number of API replicas.

Before a query reaches the engine, what it may cost — its prompt's tokens, counted by the
engine, plus the most it may generate — is reserved atomically in Redis, in the caller's
current minute window (and day window, and one request), by one Lua script that admits it only
if every window still has room: at no moment can what was admitted in a window exceed its
budget, whichever replica admitted it. After the answer the reservation is settled to the real
usage and the rest given back (a query cut short once the engine had it — its caller gone,
its time limit passed, its engine failing — is charged its prompt and every token generated
before it stopped, `prsm.engines.tally`), so
nobody is refused while the budget has room for their query but for what is reserved by
queries still running; a query that may cost more than a whole window is 400 at once. Window
counters expire one window after their own ends, so a replica killed with reservations open
leaks nothing past that window.

A query over budget is 429 with `Retry-After` (the window's end). Every answer of a budgeted
caller carries OpenAI's `x-ratelimit-{limit,remaining,reset}-{tokens,requests}` headers, so
OpenAI's clients back off as they do against OpenAI. Redis unreachable: `budgets.on_redis_down`
refuses (503, the default: a limit that silently stops applying is no limit) or admits,
uncounted, with a metric and one warning an outage.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from prsm import keys, metrics
from prsm.config import Budget, BudgetSettings, Limits
from prsm.edge.correlation import add_answer_headers
from prsm.engines.base import Generation
from prsm.engines.tally import Tally
from prsm.errors import BadRequestError, RateLimitedError, ServiceUnavailableError
from prsm.keys import Account
from prsm.redis_client import NotConfirmed, run_confirmed

log = logging.getLogger("prsm.server")
DAY_SECONDS = 86_400

# KEYS: the window counters. ARGV: per key, (limit, amount, seconds to keep). Admits only if
# every counter has room; returns {1, count after, ...} or {0, index of a full one, count, ...}.
_RESERVE = """
local used, full = {}, 0
for i = 1, #KEYS do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if full == 0 and used[i] + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i - 2]) then
    full = i
  end
end
if full > 0 then return {0, full, unpack(used)} end
local after = {1}
for i = 1, #KEYS do
  after[i + 1] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 1])
  redis.call('EXPIRE', KEYS[i], ARGV[3 * i])
end
return after
"""


@dataclass(frozen=True)
class Window:
    """One counter of a budget: its key, its limit, when it ends."""

    key: str
    kind: str
    """`tokens` or `requests` (OpenAI's header names)."""
    limit: int
    ends_in: float
    """Seconds until the window ends."""
    keep: int
    """Seconds the counter is kept (its window, then one more)."""
    on: str = ""
    """`<model> ` for a window of a budget on one model, for messages."""


@dataclass
class Reservation:
    """Tokens and a request held for one query, until it is settled."""

    budgets: Budgets | None = None
    windows: list[Window] = field(default_factory=list)
    tokens: int = 0
    prompt: int = 0
    """The prompt's share of `tokens`."""

    def spent(self, generation: Generation | None, tally: Tally | None) -> int:
        """What the query cost: its answer's tokens; cut short once the engine had it (`tally`
        open), its prompt and every token generated before it stopped — all it reserved when
        its engine could not tell; never reaching the engine, nothing."""
        if generation is not None:
            return generation.total_tokens
        if tally is None:
            return 0
        if not tally.exact:
            return self.tokens
        return min(self.tokens, self.prompt + tally.generated)

    async def settle(self, used: int) -> None:
        """Give back what the query did not use (all of it, if it did not run)."""
        if self.budgets is not None and self.tokens > used:
            await self.budgets.give_back(self, self.tokens - used)
            self.tokens = used


NOTHING = Reservation()
"""The reservation of a caller without a budget."""


class Budgets:
    """The budgets of `settings`, kept in `redis`."""

    def __init__(
        self, redis: Redis, settings: BudgetSettings, service: str,
        clock: Callable[[], float] = time.time, *, confirm_replicas: int = 0,
    ) -> None:  # fmt: skip
        self._redis = redis
        self._settings = settings
        self._clock = clock
        self._reserve = redis.register_script(_RESERVE)
        self._replicas = confirm_replicas
        self._outage = False
        self._admitted_uncounted = metrics.BUDGET_UNCOUNTED.labels(service)
        self._refused = metrics.BUDGET_REFUSED.labels(service)

    def budget_of(self, account: Account) -> Budget:
        """The account's budget: its own by key id (or `jwt:<subject>`), else the default."""
        return self._settings.callers.get(account.key_id) or self._settings.default

    async def reserve(
        self,
        account: Account,
        prompt: int,
        answers: int,
        notes: dict[str, Any] | None = None,
        model: str | None = None,
    ) -> Reservation:
        """Hold a query's `prompt` tokens, the most its `answers` may take and a request in
        `account`'s budget, and in its budget on `model` if it has one; 429 when a window has
        no room. The rate-limit headers of the answer go into `notes` (the request's state)."""
        tokens = prompt + answers
        budget = self.budget_of(account)
        if not budget.limited:
            return NOTHING
        windows = self._windows(account.tag, budget)
        on_model = budget.models.get(model or "")
        if on_model is not None:
            windows += self._windows(f"{account.tag}:model:{model}", on_model, f"{model} ")
        _within_every_window(windows, tokens)
        amounts = [tokens if w.kind == "tokens" else 1 for w in windows]
        arguments = [v for w, a in zip(windows, amounts, strict=True) for v in (w.limit, a, w.keep)]
        try:
            answer = await run_confirmed(
                self._reserve, [w.key for w in windows], arguments, replicas=self._replicas
            )
        except NotConfirmed as exc:
            if exc.answer and exc.answer[0] == 1:  # charged, unconfirmed: not admitted either
                await self._take_back(windows, amounts)
            return self._unreachable(exc)
        except (RedisError, OSError) as exc:
            return self._unreachable(exc)
        self._outage = False
        if answer[0] == 0:
            full = windows[int(answer[1]) - 1]
            self._refused.inc()
            add_answer_headers(notes, _headers(windows, [int(used) for used in answer[2:]]))
            raise RateLimitedError(
                f"the {full.on}{full.kind} budget of this caller is spent until its window ends "
                f"({full.limit} {full.kind} a window)",
                code="budget_exceeded",
                retry_after=math.ceil(full.ends_in),
            )
        add_answer_headers(notes, _headers(windows, [int(after) for after in answer[1:]]))
        return Reservation(self, windows, tokens, prompt)

    async def report(self, account: Account, notes: dict[str, Any] | None) -> None:
        """The rate-limit headers of an answer that costs nothing (a cache hit): each window's
        count as it is (left out if Redis fails: the answer does not depend on it)."""
        budget = self.budget_of(account)
        if not budget.limited:
            return
        windows = self._windows(account.tag, budget)
        try:
            counts = await self._redis.mget([w.key for w in windows])
        except (RedisError, OSError):
            return
        add_answer_headers(notes, _headers(windows, [int(count or 0) for count in counts]))

    async def give_back(self, reservation: Reservation, tokens: int) -> None:
        """Return `tokens` to the token windows `reservation` was taken from."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for window in reservation.windows:
                    if window.kind == "tokens":
                        pipe.decrby(window.key, tokens)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # kept until the window ends: never over budget
            log.warning("budget not settled: Redis failed", extra={"error": str(exc)})

    async def _take_back(self, windows: list[Window], amounts: list[int]) -> None:
        """Undo a charge whose query is refused. Safe whatever survives a failover: a replica
        holds this only if it holds the charge before it (replication keeps order)."""
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=False) as pipe:
                for window, amount in zip(windows, amounts, strict=True):
                    pipe.decrby(window.key, amount)
                await pipe.execute()

    def _windows(self, owner: str, budget: Limits, on: str = "") -> list[Window]:
        now = self._clock()
        minute = self._settings.minute_seconds
        found = []
        for kind, limit, length in (
            ("tokens", budget.tokens_per_minute, minute),
            ("requests", budget.requests_per_minute, minute),
            ("tokens", budget.tokens_per_day, DAY_SECONDS),
        ):
            if limit:
                index = int(now // length)
                key = keys.budget_window(owner, f"{kind}-{length}", index)
                ends_in = (index + 1) * length - now
                found.append(Window(key, kind, limit, ends_in, 2 * length, on))
        return found

    def _unreachable(self, exc: BaseException) -> Reservation:
        if not self._outage:
            log.warning("budgets cannot be counted: Redis failed", extra={"error": str(exc)})
        self._outage = True
        if self._settings.on_redis_down == "admit":
            self._admitted_uncounted.inc()
            return NOTHING
        raise ServiceUnavailableError(
            "budgets cannot be checked now (Redis is unreachable or refuses writes)",
            code="budget_unavailable",
            retry_after=1,
            not_run=True,
            shared=True,
        )


def _within_every_window(windows: list[Window], tokens: int) -> None:
    """400 `budget_too_small` for a query that may cost more than a whole window holds: no
    wait would admit it."""
    for window in windows:
        if window.kind == "tokens" and tokens > window.limit:
            raise BadRequestError(
                f"this query may cost {tokens} tokens (its prompt, and max_tokens for each "
                f"answer), more than this caller's whole budget of {window.limit} tokens a "
                "window: ask for fewer tokens",
                code="budget_too_small",
            )


def _headers(windows: list[Window], counts: list[int]) -> dict[str, str]:
    """OpenAI's rate-limit headers for the shortest window of each kind."""
    headers: dict[str, str] = {}
    for window, count in sorted(zip(windows, counts, strict=True), key=lambda p: -p[0].ends_in):
        kind = window.kind
        headers[f"x-ratelimit-limit-{kind}"] = str(window.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, window.limit - count))
        headers[f"x-ratelimit-reset-{kind}"] = f"{math.ceil(window.ends_in)}s"
    return headers
