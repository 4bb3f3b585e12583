"""Balancers: which instance serves the next call.

- `RoundRobin`: smooth weighted round-robin (nginx's): with weights 5, 1, 1 the order is
  a a b a c a a — spread out, never bursts.
- `LeastOutstanding`: power of two choices — of two random instances, the one with fewer
  calls in flight; near-optimal load with no global state.
- `PrefixAffinity` (`prsm.sd.affinity`): the replica most likely to hold the prompt's
  beginning in its cache, within a load guard.

Each `pick` may be given the request's `Affinity` (its prompt); only `PrefixAffinity` reads it.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from prsm.sd.base import Instance


@dataclass(frozen=True, slots=True)
class Affinity:
    """What a request offers to route by: its prompt as the engine will read it, in order
    (tools, system prompt, the messages), and a session id."""

    prompt: str = ""
    session: str | None = None


class Balancer(Protocol):
    """Chooses an instance for each try and hears when calls start and finish."""

    def pick(
        self,
        instances: Sequence[Instance],
        exclude: Collection[str] = (),
        hint: Affinity | None = None,
    ) -> Instance:
        """An instance not in `exclude` (ids); raises LookupError when none is left."""
        ...

    def started(self, instance: Instance) -> None:
        """A call to `instance` started."""

    def finished(self, instance: Instance) -> None:
        """A call to `instance` finished."""

    def failed(self, instance: Instance) -> None:
        """A call to `instance` failed in a way held against it."""


def pickable(instances: Sequence[Instance], exclude: Collection[str]) -> list[Instance]:
    """The instances a pick may choose: not excluded, weighted above 0; `LookupError` if none."""
    found = [i for i in instances if i.id not in exclude and i.weight > 0]
    if not found:
        raise LookupError("no instance left to try")
    return found


class RoundRobin:
    """Smooth weighted round robin (nginx's): weights 5, 1, 1 pick a a b a c a a."""

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def pick(
        self,
        instances: Sequence[Instance],
        exclude: Collection[str] = (),
        hint: Affinity | None = None,
    ) -> Instance:
        """The next instance by weight, skipping `exclude`; `LookupError` when none is left."""
        candidates = pickable(instances, exclude)
        total = 0
        best: Instance | None = None
        for instance in candidates:
            weight = self._current.get(instance.id, 0) + instance.weight
            self._current[instance.id] = weight
            total += instance.weight
            if best is None or weight > self._current[best.id]:
                best = instance
        assert best is not None
        self._current[best.id] -= total
        return best

    def started(self, instance: Instance) -> None:
        """Nothing to count."""

    def finished(self, instance: Instance) -> None:
        """Nothing to count."""

    def failed(self, instance: Instance) -> None:
        """Nothing to forget."""


class LeastOutstanding:
    """Power of two choices: of two random instances, the one with fewer calls in flight."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()  # noqa: S311 - balancing, not security
        self._outstanding: dict[str, int] = {}

    def outstanding(self, instance: Instance) -> int:
        """Calls to `instance` in flight now."""
        return self._outstanding.get(instance.id, 0)

    def pick(
        self,
        instances: Sequence[Instance],
        exclude: Collection[str] = (),
        hint: Affinity | None = None,
    ) -> Instance:
        """The less busy of two random instances not in `exclude`; `LookupError` when none is
        left."""
        candidates = pickable(instances, exclude)
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        # Fewer in flight per unit of weight wins; a heavier instance may carry more.
        return a if self.outstanding(a) / a.weight <= self.outstanding(b) / b.weight else b

    def started(self, instance: Instance) -> None:
        """Count a call in flight."""
        self._outstanding[instance.id] = self.outstanding(instance) + 1

    def finished(self, instance: Instance) -> None:
        """Count a call finished."""
        self._outstanding[instance.id] = max(0, self.outstanding(instance) - 1)

    def failed(self, instance: Instance) -> None:
        """Nothing to forget."""
