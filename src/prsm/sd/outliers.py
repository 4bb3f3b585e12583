"""Outlier ejection, Envoy-style: an instance that fails N times in a row is left out for a
while, longer each time it happens again — but never more than a share of the pool."""

from __future__ import annotations

from dataclasses import dataclass

from prsm.resilience.clock import SYSTEM_CLOCK, Clock


@dataclass
class _Health:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


class OutlierDetector:
    """Envoy's outlier ejection: an instance failing `consecutive_failures` times in a row is
    left out for a while, longer each time, never more than `max_ejection_share` of the pool
    at once."""

    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        base_ejection_seconds: float = 30.0,
        max_ejection_seconds: float = 300.0,
        max_ejection_share: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.consecutive_failures = consecutive_failures
        self.base_ejection_seconds = base_ejection_seconds
        self.max_ejection_seconds = max_ejection_seconds
        self.max_ejection_share = max_ejection_share
        self._clock = clock
        self._hosts: dict[str, _Health] = {}

    def ejected(self) -> set[str]:
        """Ids of the instances left out now."""
        now = self._clock.monotonic()
        return {i for i, h in self._hosts.items() if h.ejected_until > now}

    def success(self, instance_id: str) -> None:
        """A try on the instance succeeded: its run of failures starts again."""
        self._hosts.setdefault(instance_id, _Health()).consecutive_failures = 0

    def failure(self, instance_id: str, pool_size: int) -> bool:
        """Count a failure; True when it ejected the instance."""
        health = self._hosts.setdefault(instance_id, _Health())
        health.consecutive_failures += 1
        now = self._clock.monotonic()
        if health.ejected_until > now or health.consecutive_failures < self.consecutive_failures:
            return False
        if len(self.ejected()) + 1 > max(1, int(pool_size * self.max_ejection_share)):
            return False  # ejecting more would leave too little of the pool
        health.ejections += 1
        health.consecutive_failures = 0
        seconds = min(self.base_ejection_seconds * health.ejections, self.max_ejection_seconds)
        health.ejected_until = now + seconds
        return True
