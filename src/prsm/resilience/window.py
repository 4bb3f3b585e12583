"""A rolling window of call outcomes, in buckets, as circuit breakers count them."""

from __future__ import annotations

from dataclasses import dataclass

from prsm.resilience.clock import Clock


@dataclass
class _Bucket:
    start: float = float("-inf")
    calls: int = 0
    failures: int = 0
    slow: int = 0


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Calls in a rolling window: how many, how many failed, how many were slow."""

    calls: int
    failures: int
    slow: int

    @property
    def failure_rate(self) -> float:
        """Failed calls as a share of all calls (0 with none)."""
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_rate(self) -> float:
        """Slow calls as a share of all calls (0 with none)."""
        return self.slow / self.calls if self.calls else 0.0


class RollingWindow:
    """Outcomes of the last `seconds`, kept in `buckets` slices that expire one at a time
    (opossum's rollingCountTimeout / rollingCountBuckets)."""

    def __init__(self, clock: Clock, *, seconds: float = 10.0, buckets: int = 10) -> None:
        if seconds <= 0 or buckets < 1:
            raise ValueError("a window needs a positive length and at least one bucket")
        self._clock = clock
        self._width = seconds / buckets
        self._buckets = [_Bucket() for _ in range(buckets)]

    def _current(self) -> _Bucket:
        now = self._clock.monotonic()
        start = now - (now % self._width)
        bucket = self._buckets[int(now // self._width) % len(self._buckets)]
        if bucket.start != start:  # this slot last held an expired slice: reuse it
            bucket.start, bucket.calls, bucket.failures, bucket.slow = start, 0, 0, 0
        return bucket

    def record(self, *, failure: bool, slow: bool) -> None:
        """Count one call in the current bucket."""
        bucket = self._current()
        bucket.calls += 1
        bucket.failures += failure
        bucket.slow += slow

    def counts(self) -> WindowCounts:
        """The counts over the window's live buckets."""
        oldest = self._clock.monotonic() - self._width * len(self._buckets)
        live = [b for b in self._buckets if b.start > oldest]
        return WindowCounts(
            calls=sum(b.calls for b in live),
            failures=sum(b.failures for b in live),
            slow=sum(b.slow for b in live),
        )

    def reset(self) -> None:
        """Forget every call."""
        for bucket in self._buckets:
            bucket.start, bucket.calls, bucket.failures, bucket.slow = float("-inf"), 0, 0, 0
