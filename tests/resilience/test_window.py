from __future__ import annotations

from prsm.resilience.clock import ManualClock
from prsm.resilience.window import RollingWindow


def test_counts_calls_failures_and_slow_in_the_window() -> None:
    """Recorded outcomes add up, with rates."""
    window = RollingWindow(ManualClock(), seconds=10, buckets=10)
    window.record(failure=True, slow=False)
    window.record(failure=False, slow=True)
    window.record(failure=False, slow=False)
    counts = window.counts()
    assert (counts.calls, counts.failures, counts.slow) == (3, 1, 1)
    assert counts.failure_rate == counts.slow_rate == 1 / 3


def test_old_buckets_expire_one_at_a_time() -> None:
    """Outcomes older than the window drop out bucket by bucket."""
    clock = ManualClock()
    window = RollingWindow(clock, seconds=10, buckets=10)
    window.record(failure=True, slow=False)  # t=0
    clock.advance(5)
    window.record(failure=False, slow=False)  # t=5
    clock.advance(5.5)  # t=10.5: the t=0 bucket has expired, the t=5 one has not
    assert window.counts().calls == 1
    clock.advance(5)  # t=15.5: both gone
    assert window.counts().calls == 0


def test_reused_slot_starts_empty() -> None:
    """A bucket slot coming round again does not carry its old counts."""
    clock = ManualClock()
    window = RollingWindow(clock, seconds=2, buckets=2)
    window.record(failure=True, slow=False)
    clock.advance(2)  # same slot index, new slice
    window.record(failure=False, slow=False)
    assert (window.counts().calls, window.counts().failures) == (1, 0)
