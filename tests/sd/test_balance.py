from __future__ import annotations

import random
from collections import Counter

import pytest

from prsm.sd import Instance
from prsm.sd.balance import LeastOutstanding, RoundRobin

A, B, C = Instance("http://a", weight=5), Instance("http://b"), Instance("http://c")


def test_smooth_weighted_round_robin_spreads_picks() -> None:
    """Weights 5, 1, 1 give nginx's smooth order a a b a c a a, then again."""
    balancer = RoundRobin()
    order = [balancer.pick([A, B, C]).url[-1] for _ in range(14)]
    assert "".join(order) == "aabacaa" * 2


def test_round_robin_skips_excluded_and_weightless() -> None:
    """Excluded ids and weight-0 instances are never picked; none left is LookupError."""
    balancer = RoundRobin()
    idle = Instance("http://idle", weight=0)
    assert {balancer.pick([A, B, idle], exclude={A.id}).url for _ in range(5)} == {B.url}
    with pytest.raises(LookupError):
        balancer.pick([A, idle], exclude={A.id})


def test_least_outstanding_prefers_the_less_busy_of_two() -> None:
    """With b holding 10 calls in flight, p2c never picks b when it can compare it."""
    balancer = LeastOutstanding(random.Random(7))
    for _ in range(10):
        balancer.started(B)
    picks = Counter(balancer.pick([B, C]).url for _ in range(100))
    assert picks == Counter({C.url: 100})


def test_least_outstanding_balances_even_load() -> None:
    """Equal instances, each call kept open: picks stay within one of each other."""
    balancer = LeastOutstanding(random.Random(1))
    pool = [Instance(f"http://{n}") for n in "wxyz"]
    for _ in range(400):
        balancer.started(balancer.pick(pool))
    counts = [balancer.outstanding(i) for i in pool]
    assert max(counts) - min(counts) <= 2
    assert sum(counts) == 400
