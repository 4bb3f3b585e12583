"""`Pool`: a service's instances as a caller sees them — discovered and cached, outliers left
out, balanced, each behind its own circuit breaker. `ServiceClient` and the gateway both call
through one, so each of those pieces exists once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import ParamSpec, TypeVar

from prsm.resilience.breaker import BreakerConfig, CircuitBreaker
from prsm.resilience.clock import SYSTEM_CLOCK, Clock
from prsm.resilience.outcomes import counts_against_target
from prsm.sd import Discovery, Instance, InstanceCache
from prsm.sd.balance import Affinity, Balancer, RoundRobin
from prsm.sd.outliers import OutlierDetector

P = ParamSpec("P")
T = TypeVar("T")


class Pool:
    """A service's instances as a caller sees them: discovered and cached, outliers left out,
    balanced, each behind its own circuit breaker (`pick`, then `call`)."""

    def __init__(
        self,
        service: str,
        discovery: Discovery,
        *,
        balancer: Balancer | None = None,
        outliers: OutlierDetector | None = None,
        breaker: BreakerConfig | None = None,
        refresh_seconds: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.service = service
        self.balancer = balancer or RoundRobin()
        self.outliers = outliers or OutlierDetector(clock=clock)
        self.breaker_config = breaker or BreakerConfig(call_timeout=None)
        self._cache = InstanceCache(service, discovery, refresh_seconds=refresh_seconds)
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    @property
    def instances(self) -> list[Instance]:
        """The instances the cache holds now."""
        return self._cache.instances

    async def start(self) -> None:
        """Start discovery (the first lookup, then refreshes)."""
        await self._cache.start()

    async def aclose(self) -> None:
        """Stop discovery."""
        await self._cache.aclose()

    def pick(self, exclude: Collection[str] = (), hint: Affinity | None = None) -> Instance | None:
        """An instance not in `exclude`, outliers left out; None when there is none. `hint`:
        what the request offers a balancer by prefix (`prsm.sd.affinity`)."""
        pool = self.instances
        ejected = self.outliers.ejected()
        healthy = [i for i in pool if i.id not in ejected] if ejected else pool
        # Like Envoy's panic threshold: with every instance ejected, use them all anyway.
        try:
            return self.balancer.pick(healthy or pool, exclude, hint)
        except LookupError:
            return None

    def breaker(self, instance: Instance) -> CircuitBreaker:
        """The instance's circuit breaker (made on first use)."""
        breaker = self._breakers.get(instance.id)
        if breaker is None:
            breaker = self._breakers[instance.id] = CircuitBreaker(
                f"{self.service}:{instance.id}",
                self.breaker_config,
                clock=self._clock,
            )
        return breaker

    async def call(
        self, instance: Instance, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """One try on `instance`: through its breaker, counted by the balancer while it runs,
        and for outlier ejection by how it ended (what counts as the instance's failure is
        `prsm.resilience.outcomes.counts_against_target`'s decision)."""
        self.balancer.started(instance)
        try:
            result = await self.breaker(instance).call(fn, *args, **kwargs)
        except BaseException as exc:
            if counts_against_target(exc):
                self.outliers.failure(instance.id, len(self.instances))
                self.balancer.failed(instance)
            raise
        finally:
            self.balancer.finished(instance)
        self.outliers.success(instance.id)
        return result

    def healthy(self) -> bool:
        """Whether some instance is known and not ejected."""
        ejected = self.outliers.ejected()
        return any(i.id not in ejected for i in self.instances)
