"""LoopStorage under the `limits` library's own strategies, on an injected clock."""

from __future__ import annotations

import limits
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from prsm.gateway import local_limits
from prsm.gateway.local_limits import LoopStorage


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_moving_window_is_exact_over_any_span() -> None:
    """3 per 10 s: requests at 0, 4 and 8 s fill it; at 9 s one is refused; at 10.5 s the
    first has left the window and one more fits, the 4 s one still counts."""
    clock = Clock()
    limiter = MovingWindowRateLimiter(LoopStorage(clock))
    item = limits.parse("3/10 seconds")
    admitted = []
    for at in (0, 4, 8, 9, 10.5, 10.6):
        clock.now = 1_000 + at
        admitted.append(limiter.hit(item, "route", "client"))
    assert admitted == [True, True, True, False, True, False]
    reset, remaining = limiter.get_window_stats(item, "route", "client")
    assert remaining == 0
    assert reset == 1_000 + 4 + 10  # when the oldest entry in the window leaves it


def test_fixed_window_counts_per_period_and_restarts() -> None:
    clock = Clock()
    limiter = FixedWindowRateLimiter(LoopStorage(clock))
    item = limits.parse("2/minute")
    assert [limiter.hit(item, "k") for _ in range(3)] == [True, True, False]
    clock.now += 61
    assert limiter.hit(item, "k")
    assert limiter.get_window_stats(item, "k").remaining == 1


def test_expired_keys_are_swept() -> None:
    clock = Clock()
    storage = LoopStorage(clock)
    limiter = MovingWindowRateLimiter(storage)
    item = limits.parse("5/second")
    for client in range(100):
        limiter.hit(item, str(client))
    clock.now += 2
    for _ in range(local_limits.SWEEP_EVERY):
        limiter.hit(item, "busy-client")
    assert storage.reset() == 1  # only the busy client's window was left
