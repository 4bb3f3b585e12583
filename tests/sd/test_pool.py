"""Pool: a failed try ejects its instance from the balancer's choice; all are used when all
are ejected."""

from __future__ import annotations

import pytest

from prsm.errors import ConnectError, PRSMError, error_for_status
from prsm.resilience.clock import ManualClock
from prsm.sd import Instance, StaticDiscovery
from prsm.sd.affinity import PrefixAffinity
from prsm.sd.balance import Affinity
from prsm.sd.outliers import OutlierDetector
from prsm.sd.pool import Pool

URLS = ["http://a:1", "http://b:1"]


async def refused() -> None:
    raise ConnectError("refused")


async def fail_once(pool: Pool, instance: Instance) -> None:
    with pytest.raises(ConnectError):
        await pool.call(instance, refused)


async def started_pool(clock: ManualClock) -> Pool:
    outliers = OutlierDetector(consecutive_failures=1, max_ejection_share=1.0, clock=clock)
    pool = Pool(
        "svc",
        StaticDiscovery(URLS),
        outliers=outliers,
        clock=clock,
    )
    await pool.start()
    return pool


async def test_ejected_instances_are_skipped_until_their_time_is_up() -> None:
    clock = ManualClock()
    pool = await started_pool(clock)
    await fail_once(pool, Instance(URLS[0]))
    assert {pool.pick().url for _ in range(4)} == {URLS[1]}  # type: ignore[union-attr]
    assert pool.healthy()
    clock.advance(31)
    assert {pool.pick().url for _ in range(4)} == set(URLS)  # type: ignore[union-attr]
    await pool.aclose()


async def test_with_every_instance_ejected_all_are_used_and_none_is_healthy() -> None:
    pool = await started_pool(ManualClock())
    for url in URLS:
        await fail_once(pool, Instance(url))
    assert not pool.healthy()
    assert {pool.pick().url for _ in range(4)} == set(URLS)  # type: ignore[union-attr]
    assert pool.pick(exclude=URLS) is None
    assert pool.breaker(Instance(URLS[0])) is pool.breaker(Instance(URLS[0]))
    await pool.aclose()


async def test_a_successful_try_resets_the_failure_count() -> None:
    """Ejection needs failures *in a row*: one success between two failures clears them."""
    clock = ManualClock()
    outliers = OutlierDetector(consecutive_failures=2, max_ejection_share=1.0, clock=clock)
    pool = Pool("svc", StaticDiscovery(URLS), outliers=outliers)
    await pool.start()
    a = Instance(URLS[0])

    async def ok() -> str:
        return "ok"

    await fail_once(pool, a)
    assert await pool.call(a, ok) == "ok"
    await fail_once(pool, a)
    assert outliers.ejected() == set()
    await pool.aclose()


async def test_a_failed_try_makes_a_prefix_balancer_forget_the_instance() -> None:
    """A try held against the instance (refused: it died, or restarts with an empty cache)
    clears what `PrefixAffinity` thought it held; a caller's error (400) does not."""
    balancer = PrefixAffinity()
    pool = Pool("svc", StaticDiscovery(URLS), balancer=balancer)
    await pool.start()
    prompt = Affinity("a long system prompt, sent to one instance " * 4)
    chosen = pool.pick(hint=prompt)
    assert chosen is not None
    assert balancer.matched(chosen, prompt) > 0

    async def bad_request() -> None:
        raise error_for_status(400, "bad")

    with pytest.raises(PRSMError):
        await pool.call(chosen, bad_request)
    assert balancer.matched(chosen, prompt) > 0
    await fail_once(pool, chosen)
    assert balancer.matched(chosen, prompt) == 0
    await pool.aclose()
