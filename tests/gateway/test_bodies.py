"""What the gateway holds of bodies: an event stream passed on whole events at a time."""

from __future__ import annotations

from prsm.gateway.bodies import LONGEST_HELD, WholeEvents


def test_whole_events_are_passed_on_and_the_rest_held_within_a_bound() -> None:
    """An event stream is split after its last complete event (any of the three line ends);
    an unfinished event longer than the bound is passed on rather than held."""
    events = WholeEvents()
    assert events.take(b"data: 1\n\ndata: 2") == b"data: 1\n\n"
    assert events.take(b"\r\n\r\ndata: 3\r\r") == b"data: 2\r\n\r\ndata: 3\r\r"
    assert events.take(b"data: ") == b""
    assert events.rest() == b"data: "
    huge = b"x" * (LONGEST_HELD + 1)
    assert events.take(huge) == b"data: " + huge
    assert events.rest() == b""
