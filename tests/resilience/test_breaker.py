"""The circuit breaker, deterministically: a manual clock decides when time passes."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from prsm.errors import ConnectError, ServerError, ValidationError
from prsm.resilience import BreakerConfig, CircuitBreaker, CircuitOpenError, ManualClock, State

CONFIG = BreakerConfig(
    error_threshold=0.5,
    minimum_calls=4,
    window_seconds=10,
    window_buckets=10,
    reset_timeout=30,
    half_open_trials=2,
    call_timeout=None,
)


def make(clock: ManualClock, config: BreakerConfig = CONFIG, **options: object) -> CircuitBreaker:
    return CircuitBreaker("test", config, clock=clock, **options)  # type: ignore[arg-type]


async def ok() -> str:
    return "ok"


async def fail() -> str:
    raise ConnectError("refused")


async def run(breaker: CircuitBreaker, outcomes: str) -> None:
    """Call once per character: `s` success, `f` counted failure."""
    for outcome in outcomes:
        if outcome == "s":
            await breaker.call(ok)
        else:
            with pytest.raises(ConnectError):
                await breaker.call(fail)


async def test_stays_closed_below_the_minimum_volume() -> None:
    """Three failures out of three is not judged while fewer than 4 calls were made."""
    breaker = make(ManualClock())
    await run(breaker, "fff")
    assert breaker.state is State.CLOSED


async def test_opens_at_the_error_threshold_and_rejects() -> None:
    """2 failures in 4 calls (50 %) opens it; the next call is refused without running."""
    clock = ManualClock()
    breaker = make(clock)
    await run(breaker, "sfsf")
    assert breaker.state is State.OPEN
    ran = False

    async def probe() -> None:
        nonlocal ran
        ran = True

    clock.advance(10)
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(probe)
    assert not ran
    assert caught.value.retry_in == 20
    assert breaker.stats().rejected == 1


async def test_client_errors_do_not_count_as_failures() -> None:
    """4xx answers are the caller's problem: they never open the breaker."""
    breaker = make(ManualClock())

    async def invalid() -> None:
        raise ValidationError("bad input")

    for _ in range(10):
        with pytest.raises(ValidationError):
            await breaker.call(invalid)
    assert breaker.state is State.CLOSED
    assert breaker.stats().failures == 0
    assert breaker.stats().calls == 10


async def test_half_open_lets_n_trials_through_then_closes() -> None:
    """After reset_timeout: 2 trials may run (a third waits its turn: refused); both succeed,
    and the breaker closes with a fresh window."""
    clock = ManualClock()
    breaker = make(clock)
    await run(breaker, "ffff")
    clock.advance(30)
    assert breaker.state is State.HALF_OPEN
    gate = asyncio.Event()

    async def slow_ok() -> str:
        await gate.wait()
        return "ok"

    trials = [asyncio.create_task(breaker.call(slow_ok)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    gate.set()
    assert await asyncio.gather(*trials) == ["ok", "ok"]
    assert breaker.state is State.CLOSED
    assert breaker.stats().calls == 0


async def test_failed_trial_reopens_and_restarts_the_timer() -> None:
    """A failing trial opens the breaker again for a full reset_timeout."""
    clock = ManualClock()
    breaker = make(clock)
    await run(breaker, "ffff")
    clock.advance(30)
    await run(breaker, "f")
    assert breaker.state is State.OPEN
    clock.advance(29)
    assert breaker.state is State.OPEN
    clock.advance(1)
    assert breaker.state is State.HALF_OPEN
    assert breaker.stats().opened == 2


async def test_failures_older_than_the_window_are_forgotten() -> None:
    """Two failures, then 11 s later 1 in 4: counted together that would be 3 of 6 (open);
    the old ones have left the window, so it stays closed until recent failures add up."""
    clock = ManualClock()
    breaker = make(clock)
    await run(breaker, "ff")
    clock.advance(11)
    await run(breaker, "sssf")
    assert breaker.state is State.CLOSED
    await run(breaker, "ff")  # now 3 of 6 within the window
    assert breaker.state is State.OPEN


async def test_slow_calls_open_the_breaker() -> None:
    """With slow_call_seconds=2 and threshold 50 %, calls that take 3 s open it."""
    clock = ManualClock()
    config = BreakerConfig(
        minimum_calls=4, slow_call_seconds=2, slow_call_threshold=0.5, call_timeout=None
    )
    breaker = make(clock, config)

    async def takes_three_seconds() -> str:
        clock.advance(3)
        return "late"

    for call in (ok, takes_three_seconds, ok, takes_three_seconds):
        await breaker.call(call)
    assert breaker.state is State.OPEN
    assert breaker.stats().slow == 2
    assert breaker.stats().failures == 0


async def test_call_timeout_cancels_and_counts_as_failure() -> None:
    """A call longer than call_timeout is cancelled and raises TimeoutError."""
    breaker = make(ManualClock(), BreakerConfig(minimum_calls=1, call_timeout=0.01))
    finished = False

    async def hangs() -> None:
        nonlocal finished
        await asyncio.sleep(10)
        finished = True

    with pytest.raises(TimeoutError):
        await breaker.call(hangs)
    assert not finished
    assert breaker.state is State.OPEN


async def test_fallback_answers_when_open_and_on_failure() -> None:
    """The spec's degraded answer: the fallback's value replaces errors and refusals."""
    seen: list[type[BaseException]] = []

    def degraded(exc: BaseException) -> str:
        seen.append(type(exc))
        return "Service temporarily unavailable."

    breaker = make(ManualClock(), fallback=degraded)
    for _ in range(4):
        assert await breaker.call(fail) == "Service temporarily unavailable."
    assert await breaker.call(ok) == "Service temporarily unavailable."
    assert seen == [ConnectError] * 4 + [CircuitOpenError]


async def test_hooks_see_every_transition_and_the_gauge_follows() -> None:
    """closed -> open -> half_open -> closed, reported to hooks and the Prometheus gauge."""
    clock = ManualClock()
    breaker = CircuitBreaker("gauge-test", CONFIG, clock=clock)
    moves: list[tuple[str, str]] = []
    breaker.on_state_change(lambda name, old, new: moves.append((old.value, new.value)))

    def gauge(state: str) -> float | None:
        return REGISTRY.get_sample_value(
            "prsm_circuit_breaker_state", {"breaker": "gauge-test", "state": state}
        )

    await run(breaker, "ffff")
    assert gauge("open") == 1
    assert gauge("closed") == 0
    clock.advance(30)
    await run(breaker, "ss")
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert gauge("closed") == 1
    assert gauge("open") == 0


async def test_decorator_guards_every_call() -> None:
    """`@breaker` wraps a function; its failures count and open the breaker."""
    breaker = make(ManualClock())

    @breaker
    async def query(prompt: str) -> str:
        if prompt == "bad":
            raise ServerError("boom")
        return prompt.upper()

    assert await query("hi") == "HI"
    for _ in range(3):
        with pytest.raises(ServerError):
            await query("bad")
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        await query("hi")


async def test_cancellation_and_bugs_are_not_outages() -> None:
    """A cancelled call and an unexpected exception propagate without counting as failures."""
    breaker = make(ManualClock(), BreakerConfig(minimum_calls=1, call_timeout=None))

    async def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await breaker.call(buggy)
    task = asyncio.create_task(breaker.call(asyncio.sleep, 10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is State.CLOSED
    assert breaker.stats().failures == 0


def test_config_is_validated() -> None:
    """Thresholds outside (0, 1] and zero trials are refused."""
    for bad in ({"error_threshold": 0}, {"slow_call_threshold": 1.5}, {"half_open_trials": 0}):
        with pytest.raises(ValueError, match=r"must be|shares"):
            BreakerConfig(**bad)  # type: ignore[arg-type]
