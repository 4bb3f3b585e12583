"""A circuit breaker: stop calling what keeps failing, try again carefully later.

    closed ──(error rate or slow-call rate over threshold, with enough calls)──▶ open
    open ──(reset_timeout passed)──▶ half-open: `half_open_trials` calls are let through
    half-open ──(all trials succeed)──▶ closed      half-open ──(a trial fails)──▶ open

Beyond opossum (the specification's library): the window is rolling in buckets *and* needs a
minimum volume before it judges, slow calls count as well as failed ones, and half-open lets
N trial calls through instead of one.

Use it as a wrapper, or as a decorator — which is also the middleware shape the SDK and the
gateway compose (a handler in, a guarded handler out):

>>> breaker = CircuitBreaker("prsm-api", BreakerConfig(error_threshold=0.5))
>>> answer = await breaker.call(client.query, "hi", user_id="u1")   # doctest: +SKIP
>>> @breaker                                                        # doctest: +SKIP
... async def ask(prompt: str) -> QueryResult: ...
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar, cast

from prometheus_client import Counter, Gauge

from prsm.errors import CircuitOpenError
from prsm.resilience.clock import SYSTEM_CLOCK, Clock
from prsm.resilience.outcomes import counts_against_target
from prsm.resilience.window import RollingWindow

log = logging.getLogger("prsm.breaker")

P = ParamSpec("P")
T = TypeVar("T")


class State(StrEnum):
    """A breaker's state: closed (calls pass), open (refused), half-open (trial calls)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


STATE_GAUGE = Gauge(
    "prsm_circuit_breaker_state",
    "1 for the state each circuit breaker is in, 0 for the others",
    ("breaker", "state"),
    multiprocess_mode="max",
)
CALLS = Counter(
    "prsm_circuit_breaker_calls_total",
    "Calls through circuit breakers, by outcome",
    ("breaker", "outcome"),
)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """How a breaker judges. Defaults follow the specification's opossum settings."""

    error_threshold: float = 0.5
    """Open when at least this share of the window's calls failed."""
    minimum_calls: int = 10
    """Judge only once the window holds this many calls."""
    window_seconds: float = 10.0
    window_buckets: int = 10
    call_timeout: float | None = 30.0
    """A call running longer is cancelled and counts as failed (None: no limit)."""
    slow_call_seconds: float | None = None
    """A call taking longer counts as slow (None: slowness is not judged)."""
    slow_call_threshold: float = 1.0
    """Open when at least this share of the window's calls were slow."""
    reset_timeout: float = 60.0
    """How long to stay open before letting trial calls through."""
    half_open_trials: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.error_threshold <= 1 or not 0 < self.slow_call_threshold <= 1:
            raise ValueError("thresholds are shares of calls, in (0, 1]")
        if self.minimum_calls < 1 or self.half_open_trials < 1:
            raise ValueError("minimum_calls and half_open_trials must be at least 1")


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A breaker's state and the counts of its window, at one moment."""

    name: str
    state: State
    calls: int
    failures: int
    slow: int
    failure_rate: float
    slow_rate: float
    rejected: int
    opened: int


StateHook = Callable[[str, State, State], None]


class CircuitBreaker:
    """Guards calls to one dependency (a service, or one instance of it)."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        is_failure: Callable[[BaseException], bool] = counts_against_target,
        fallback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._is_failure = is_failure
        self._fallback = fallback
        self._window = RollingWindow(
            clock, seconds=self.config.window_seconds, buckets=self.config.window_buckets
        )
        self._state = State.CLOSED
        self._opened_at = 0.0
        self._trials_started = 0
        self._trials_passed = 0
        self._rejected = 0
        self._opened = 0
        self._hooks: list[StateHook] = []
        outcomes = ("success", "failure", "slow", "rejected")
        self._calls = {outcome: CALLS.labels(name, outcome) for outcome in outcomes}
        self._show(State.CLOSED)

    @property
    def state(self) -> State:
        """The state now (an open breaker whose reset timeout has passed is half-open)."""
        if self._state is State.OPEN and self._retry_in() <= 0:
            self._move(State.HALF_OPEN)
        return self._state

    def on_state_change(self, hook: StateHook) -> None:
        """Call `hook(name, old, new)` on every transition (log, alert, metrics)."""
        self._hooks.append(hook)

    def stats(self) -> BreakerStats:
        """The state and the window's counts now."""
        counts = self._window.counts()
        return BreakerStats(
            name=self.name,
            state=self.state,
            calls=counts.calls,
            failures=counts.failures,
            slow=counts.slow,
            failure_rate=counts.failure_rate,
            slow_rate=counts.slow_rate,
            rejected=self._rejected,
            opened=self._opened,
        )

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`await fn(*args, **kwargs)` if the breaker allows, recording how it went."""
        try:
            self._admit()
        except CircuitOpenError as exc:
            self._calls["rejected"].inc()
            return cast(T, self._fall_back(exc))
        started = self._clock.monotonic()
        try:
            if self.config.call_timeout is None:
                result = await fn(*args, **kwargs)
            else:
                async with asyncio.timeout(self.config.call_timeout):
                    result = await fn(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or not self._is_failure(exc):
                self._record(failure=False, duration=self._clock.monotonic() - started)
                raise
            self._record(failure=True, duration=self._clock.monotonic() - started)
            return cast(T, self._fall_back(exc))
        self._record(failure=False, duration=self._clock.monotonic() - started)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an async function so every call goes through the breaker."""

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return guarded

    def _admit(self) -> None:
        state = self.state
        if state is State.CLOSED:
            return
        if state is State.HALF_OPEN and self._trials_started < self.config.half_open_trials:
            self._trials_started += 1
            return
        self._rejected += 1
        raise CircuitOpenError(self.name, max(0.0, self._retry_in()))

    def _record(self, *, failure: bool, duration: float) -> None:
        limit = self.config.slow_call_seconds
        slow = limit is not None and duration > limit
        self._calls["failure" if failure else "slow" if slow else "success"].inc()
        if self._state is State.HALF_OPEN:
            if failure or slow:
                self._open()
            else:
                self._trials_passed += 1
                if self._trials_passed >= self.config.half_open_trials:
                    self._window.reset()
                    self._move(State.CLOSED)
            return
        if self._state is State.OPEN:  # a call admitted before the breaker opened
            return
        self._window.record(failure=failure, slow=slow)
        counts = self._window.counts()
        if counts.calls < self.config.minimum_calls:
            return
        if counts.failure_rate >= self.config.error_threshold or (
            limit is not None and counts.slow_rate >= self.config.slow_call_threshold
        ):
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock.monotonic()
        self._opened += 1
        self._move(State.OPEN)

    def _retry_in(self) -> float:
        return self._opened_at + self.config.reset_timeout - self._clock.monotonic()

    def _move(self, new: State) -> None:
        old, self._state = self._state, new
        if new is State.HALF_OPEN:
            self._trials_started = self._trials_passed = 0
        if old is new:
            return
        self._show(new)
        log.warning("circuit %s: %s -> %s", self.name, old.value, new.value)
        for hook in self._hooks:
            hook(self.name, old, new)

    def _show(self, current: State) -> None:
        for state in State:
            STATE_GAUGE.labels(self.name, state.value).set(1 if state is current else 0)

    def _fall_back(self, exc: BaseException) -> Any:
        if self._fallback is None:
            raise exc
        return self._fallback(exc)
