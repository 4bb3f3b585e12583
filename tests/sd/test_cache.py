from __future__ import annotations

import pytest

from prsm.errors import ConnectError
from prsm.sd import Instance, InstanceCache, StaticDiscovery


class Flaky:
    """A discovery source that answers from a script of results and errors."""

    def __init__(self, *answers: list[Instance] | Exception) -> None:
        self.answers = list(answers)

    async def fetch(self) -> list[Instance]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_keeps_the_last_good_set_when_discovery_fails() -> None:
    """An error or an empty answer after a good one leaves the good set in place."""
    good = [Instance("http://a"), Instance("http://b")]
    cache = InstanceCache("svc", Flaky(good, RuntimeError("consul down"), [], [good[0]]))
    await cache.start()
    await cache.refresh()
    assert cache.instances == good
    await cache.refresh()
    assert cache.instances == good
    await cache.refresh()
    assert cache.instances == [good[0]]
    await cache.aclose()


async def test_start_without_any_instance_fails_clearly() -> None:
    """Nothing ever found: start raises ConnectError naming the service."""
    with pytest.raises(ConnectError, match="svc"):
        await InstanceCache("svc", Flaky(RuntimeError("down"))).start()


async def test_static_discovery_takes_urls_or_instances() -> None:
    """URLs become weight-1 instances identified by their URL."""
    found = await StaticDiscovery(["http://a", Instance("http://b", weight=3)]).fetch()
    assert [(i.id, i.weight) for i in found] == [("http://a", 1), ("http://b", 3)]
