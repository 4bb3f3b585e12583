"""`PrefixAffinity`: a prompt goes where its beginning was sent, within the load guard; ties at
random; a replica that failed, or blocks too old or beyond its cache, are forgotten."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from prometheus_client import REGISTRY

from prsm.sd import Instance
from prsm.sd.affinity import AffinityConfig, PrefixAffinity, prompt_blocks, request_affinity
from prsm.sd.balance import Affinity

A, B, C = (Instance(f"http://{name}") for name in "abc")
TRIO = [A, B, C]
SYSTEM = "You are a support agent. Check the record first, then answer plainly. " * 12


def turns(conversation: int, count: int, system: str = SYSTEM) -> Affinity:
    """A conversation's prompt after `count` turns (each turn extends the one before)."""
    said = "".join(f"\nuser: question {t} of {conversation} " * 8 for t in range(count))
    return Affinity(system + f"conversation {conversation}: " * 20 + said)


class Clock:
    """Seconds as the test sets them."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def balancer(seed: int = 1, clock: Clock | None = None, **config: Any) -> PrefixAffinity:
    settings = AffinityConfig(**config)
    return PrefixAffinity(settings, rng=random.Random(seed), clock=clock or Clock())


def test_each_next_turn_goes_where_its_conversation_went() -> None:
    """Twelve conversations with system prompts of their own, five turns each, calls
    finishing as they go: every later turn of a conversation is sent to the replica that had
    its first, and the conversations spread over all three (a first turn matches nothing: the
    least busy, ties at random)."""
    prefix = balancer()
    homes: dict[int, set[str]] = {n: set() for n in range(12)}
    for turn in range(1, 6):
        for n in range(12):
            chosen = prefix.pick(TRIO, hint=turns(n, turn, f"Agent {n}. " + SYSTEM))
            homes[n].add(chosen.id)
    assert all(len(home) == 1 for home in homes.values())
    assert {home.pop() for home in homes.values()} == {A.id, B.id, C.id}


def test_a_shared_system_prompt_does_not_pile_every_conversation_onto_one_replica() -> None:
    """Twelve new conversations with one system prompt arrive together (each still in flight
    when the next comes): the first replica to get it matches them all, but the guard sends
    a conversation elsewhere once its match has more than 2 more in flight than the least
    busy — whatever the random ties, all three get some, none 3 more than another."""
    for seed in range(50):
        prefix = balancer(seed)
        for n in range(12):
            prefix.started(prefix.pick(TRIO, hint=turns(n, 1)))
        loads = [prefix.outstanding(i) for i in TRIO]
        assert min(loads) >= 2
        assert max(loads) - min(loads) <= 3


def test_a_match_on_a_replica_too_busy_goes_to_the_least_busy() -> None:
    """The replica holding the conversation has 3 calls in flight, another none: beyond the
    guard's 2 more and 1.5 times as many, so the least busy gets it; with 2 in flight, the
    match wins."""
    prefix = balancer(guard_absolute=2, guard_relative=1.5)
    home = prefix.pick(TRIO, hint=turns(0, 1))
    for _ in range(2):
        prefix.started(home)
    assert prefix.pick(TRIO, hint=turns(0, 2)) == home
    prefix.started(home)
    assert prefix.pick(TRIO, hint=turns(0, 3)) != home


def test_the_guard_is_relative_too() -> None:
    """Every replica busy — the match 5 in flight, the others 4: 1 more is within the
    absolute threshold, so affinity holds; 7 against 4 is both beyond 2 more and beyond
    1.5 times as many, so it does not."""
    prefix = balancer(guard_absolute=2, guard_relative=1.5)
    home = prefix.pick(TRIO, hint=turns(0, 1))
    for instance in TRIO:
        for _ in range(4 + (instance == home)):
            prefix.started(instance)
    assert prefix.pick(TRIO, hint=turns(0, 2)) == home
    for _ in range(2):
        prefix.started(home)
    assert prefix.pick(TRIO, hint=turns(0, 3)) != home


def test_ties_are_broken_at_random_not_by_order() -> None:
    """A prompt whose system prompt two replicas were sent (each a different conversation):
    the next conversation with it goes to either, both chosen across seeds — never always
    the first listed."""
    chosen: Counter[str] = Counter()
    for seed in range(40):
        prefix = balancer(seed)
        sent = {prefix.pick([A], hint=turns(1, 1)).id, prefix.pick([B], hint=turns(2, 1)).id}
        assert sent == {A.id, B.id}
        chosen[prefix.pick([A, B, C], hint=turns(3, 1)).id] += 1
    assert set(chosen) == {A.id, B.id}
    assert min(chosen.values()) >= 10


def test_an_equal_match_goes_to_the_less_busy() -> None:
    """Two replicas hold the system prompt, one with a call in flight: a new conversation on
    that prompt goes to the other, whatever the seed."""
    for seed in range(10):
        prefix = balancer(seed)
        prefix.pick([A], hint=turns(1, 1))
        prefix.pick([B], hint=turns(2, 1))
        prefix.started(A)
        assert prefix.pick([A, B], hint=turns(3, 1)) == B


def test_each_choice_is_counted_by_how_it_was_made() -> None:
    """`prsm_affinity_picks_total{pool,decision}`: no match, a match, a match too busy."""
    prefix = PrefixAffinity(AffinityConfig(guard_absolute=0), rng=random.Random(1), pool="t")

    def count(decision: str) -> float:
        labels = {"pool": "t", "decision": decision}
        return REGISTRY.get_sample_value("prsm_affinity_picks_total", labels) or 0.0

    before = {d: count(d) for d in ("matched", "guarded", "unmatched")}
    home = prefix.pick([A, B], hint=turns(0, 1))
    assert prefix.pick([A, B], hint=turns(0, 2)) == home
    prefix.started(home)
    prefix.pick([A, B], hint=turns(0, 3))
    after = {d: count(d) - before[d] for d in before}
    assert after == {"matched": 1, "guarded": 1, "unmatched": 1}


def test_no_match_goes_to_the_least_busy() -> None:
    """A prompt no replica was sent goes to the one with fewest calls in flight."""
    prefix = balancer()
    prefix.started(A)
    prefix.started(B)
    assert prefix.pick(TRIO, hint=turns(5, 1)) == C
    assert prefix.pick(TRIO, hint=None) == C


def test_a_replica_that_failed_is_forgotten() -> None:
    """The replica that held a conversation fails a call (killed; it comes back with an
    empty cache): the conversation's next turn matches nothing there."""
    prefix = balancer()
    home = prefix.pick(TRIO, hint=turns(0, 1))
    assert prefix.matched(home, turns(0, 2)) > 0
    prefix.failed(home)
    assert prefix.matched(home, turns(0, 2)) == 0


def test_blocks_not_sent_for_max_age_are_forgotten() -> None:
    """Ten minutes after a prompt was last sent, nothing of it matches."""
    clock = Clock()
    prefix = balancer(clock=clock, max_age_seconds=600)
    home = prefix.pick(TRIO, hint=turns(0, 1))
    clock.now = 599.0
    assert prefix.matched(home, turns(0, 1)) > 0
    clock.now = 1200.0
    assert prefix.matched(home, turns(0, 1)) == 0


def test_a_record_holds_what_the_replicas_cache_holds() -> None:
    """A cache of 512 tokens (8 blocks of 256 characters): after a second long prompt, the
    first one's blocks are gone, least recently sent first."""
    prefix = balancer(cache_tokens=512, block_chars=256)
    assert prefix.config.record_blocks == 8
    first, second = Affinity("x" * 256 * 6), Affinity("y" * 256 * 6)
    prefix.pick([A], hint=first)
    prefix.pick([A], hint=second)
    assert prefix.matched(A, second) == 6
    assert prefix.matched(A, first) == 0  # its first blocks went first


def test_a_session_routes_a_prompt_too_short_for_a_block() -> None:
    """No whole block of prompt, a session id: the session sticks to one replica."""
    prefix = balancer()
    homes = {prefix.pick(TRIO, hint=Affinity("hi", session="s-1")).id for _ in range(9)}
    assert len(homes) == 1
    assert prompt_blocks(Affinity("hi"), 256) == []


def test_a_bodys_next_turn_begins_with_this_turns_text() -> None:
    """Chat (with tools), Responses and completion bodies: the text to route by of the next
    turn starts with this turn's, so its blocks match; another system prompt's does not."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]
    later = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    chat = request_affinity({"tools": tools, "messages": first})
    assert request_affinity({"tools": tools, "messages": later}).prompt.startswith(chat.prompt)
    responses = request_affinity({"instructions": SYSTEM, "input": first[1:]})
    assert request_affinity({"instructions": SYSTEM, "input": later[1:]}).prompt.startswith(
        responses.prompt
    )
    assert request_affinity({"prompt": SYSTEM + "q"}).prompt.startswith(SYSTEM)
    other = request_affinity({"messages": [{"role": "system", "content": "Be terse. " * 40}]})
    assert prompt_blocks(other, 256)[0] != prompt_blocks(chat, 256)[0]
    assert json.loads(request_affinity({"messages": [first[1]]}).prompt) == first[1]
