"""Time for resilience code, injectable so tests are deterministic."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock: what breakers, ejection and token caches measure time by."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes backwards."""
        ...


class SystemClock:
    """The real clock (`time.monotonic`)."""

    def monotonic(self) -> float:
        """Seconds on the system's monotonic clock."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: `clock.advance(5)`.

    >>> clock = ManualClock()
    >>> clock.advance(2.5); clock.monotonic()
    2.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def monotonic(self) -> float:
        """Seconds on this clock."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward, as time passing would."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds


SYSTEM_CLOCK = SystemClock()
