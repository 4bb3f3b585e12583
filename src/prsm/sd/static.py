"""A fixed list of instances: for configuration files and tests."""

from __future__ import annotations

from collections.abc import Iterable

from prsm.sd.base import Instance


class StaticDiscovery:
    """>>> StaticDiscovery(["http://a:8000", "http://b:8000"])  # doctest: +ELLIPSIS
    StaticDiscovery(...)"""

    def __init__(self, instances: Iterable[str | Instance]) -> None:
        self._instances = [i if isinstance(i, Instance) else Instance(i) for i in instances]

    async def fetch(self) -> list[Instance]:
        """The configured instances."""
        return list(self._instances)

    def __repr__(self) -> str:
        return f"StaticDiscovery({[i.url for i in self._instances]!r})"
