"""The query path's own pieces (the steps are exercised through the API's tests)."""

from __future__ import annotations

from prsm.server.auth import Principal
from prsm.server.service import Ask, Query


def test_each_query_has_its_own_outcome_before_recording_gives_it_one() -> None:
    """A step that runs without the recording step writes into its own query's outcome, never
    into one every query shares."""
    principal = Principal(key_id="k", tier="standard", scopes=frozenset())
    first = Query(Ask(prompt="a", user_id="u"), principal, "c1")
    second = Query(Ask(prompt="b", user_id="u"), principal, "c2")
    first.outcome.admitted = True
    assert first.outcome is not second.outcome
    assert second.outcome.admitted is False
