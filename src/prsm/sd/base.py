"""Service discovery: where the instances of a service are. One protocol, sibling backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Instance:
    """One reachable instance of a service."""

    url: str
    """Base URL, e.g. `http://10.0.0.7:8000`."""
    weight: int = 1
    id: str = ""
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError("an instance's weight must be 0 or more")
        if not self.id:
            object.__setattr__(self, "id", self.url)


class Discovery(Protocol):
    """Finds a service's instances. `fetch` raises when the source cannot be read; the
    instance cache then keeps the last good answer."""

    async def fetch(self) -> list[Instance]:
        """The instances now; raises when the source cannot be asked."""
