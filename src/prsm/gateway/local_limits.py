"""`LoopStorage`: a `limits` storage for one gateway process, kept on its event loop.

The library's own memory storages start a clean-up timer thread (sync) or task (asyncio)
every few milliseconds and insert each moving-window entry at the front of a list (O(n) per
request); measured in the gateway they cost more than the rest of the rate-limit path.
Here there is one thread (the event loop's), so no locks; a moving window is a deque of
timestamps pruned from the old end (O(1) amortised, exact); expired keys are dropped in a
sweep every `SWEEP_EVERY` calls.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from limits.storage import MovingWindowSupport, Storage

SWEEP_EVERY = 10_000


class LoopStorage(Storage, MovingWindowSupport):
    """In-process storage for the `limits` library, for one event loop: no lock and no thread
    (the gateway's default when no Redis is configured)."""

    STORAGE_SCHEME = ["prsm-loop"]  # noqa: RUF012 - the library's class attribute

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._now = clock
        self._counters: dict[str, list[float]] = {}  # key -> [count, expires_at]
        self._windows: dict[str, tuple[deque[float], float]] = {}  # key -> (times, expiry)
        self._calls = 0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        """The errors this storage raises."""
        return ValueError

    # fixed windows
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to a fixed window's counter, starting the window if it expired."""
        self._tick()
        now = self._now()
        counter = self._counters.get(key)
        if counter is None or counter[1] <= now:
            counter = self._counters[key] = [0, now + expiry]
        counter[0] += amount
        return int(counter[0])

    def get(self, key: str) -> int:
        """A fixed window's count now."""
        counter = self._counters.get(key)
        return int(counter[0]) if counter is not None and counter[1] > self._now() else 0

    def get_expiry(self, key: str) -> float:
        """When a fixed window's counter expires."""
        counter = self._counters.get(key)
        return counter[1] if counter is not None else self._now()

    # moving windows
    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Admit `amount` into a moving window if it stays within `limit`."""
        self._tick()
        if amount > limit:
            return False
        now = self._now()
        times = self._prune(key, expiry, now)
        if len(times) + amount > limit:
            return False
        times.extend([now] * amount)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """The moving window's oldest entry time and its count."""
        now = self._now()
        times = self._prune(key, expiry, now)
        return (times[0] if times else now), len(times)

    def _prune(self, key: str, expiry: float, now: float) -> deque[float]:
        entry = self._windows.get(key)
        if entry is None:
            entry = self._windows[key] = (deque(), expiry)
        times = entry[0]
        oldest = now - expiry
        while times and times[0] <= oldest:
            times.popleft()
        return times

    def _tick(self) -> None:
        self._calls += 1
        if self._calls % SWEEP_EVERY == 0:
            now = self._now()
            self._counters = {k: c for k, c in self._counters.items() if c[1] > now}
            self._windows = {
                k: w for k, w in self._windows.items() if w[0] and w[0][-1] > now - w[1]
            }

    # the rest of the storage interface
    def check(self) -> bool:
        """Always reachable."""
        return True

    def reset(self) -> int | None:
        """Forget every counter and window."""
        count = len(self._counters) + len(self._windows)
        self._counters.clear()
        self._windows.clear()
        return count

    def clear(self, key: str) -> None:
        """Forget one key's counter and window."""
        self._counters.pop(key, None)
        self._windows.pop(key, None)
