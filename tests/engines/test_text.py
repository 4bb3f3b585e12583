"""StreamedText: the deltas joined are the final answer; stop sequences cut it, even when they
arrive split over pieces."""

from __future__ import annotations

import pytest

from prsm.engines.text import StreamedText


def stream(pieces: list[str], stops: tuple[str, ...] = ()) -> tuple[list[str], str, bool]:
    deltas: list[str] = []
    streamed = StreamedText(stops, deltas.append)
    for piece in pieces:
        if streamed.add(piece):
            break
    return deltas, streamed.finish(), streamed.stopped


def test_deltas_join_to_the_answer_without_outer_whitespace() -> None:
    """Leading whitespace is dropped, trailing whitespace held back and dropped at the end,
    whitespace between words passed on once more text follows."""
    deltas, text, stopped = stream(["  ", " Hello", " world", " \n", "again", "  \n"])
    assert text == "Hello world \nagain"
    assert "".join(deltas) == text
    assert deltas[0] == "Hello"
    assert not stopped


@pytest.mark.parametrize(
    ("pieces", "answer"),
    [
        (["Paris", ". END", " more"], "Paris."),
        (["Paris.", " E", "N", "D and on"], "Paris."),  # the stop split over three pieces
        (["END at once"], ""),
        (["Paris. EN", "TRY"], "Paris. ENTRY"),  # a stop's beginning that does not become one
    ],
)
def test_a_stop_sequence_ends_the_answer_before_it(pieces: list[str], answer: str) -> None:
    """Nothing of the stop sequence, nor after it, is ever passed on."""
    deltas, text, stopped = stream(pieces, stops=("END",))
    assert text == answer
    assert "".join(deltas) == answer
    assert stopped is ("ENTRY" not in answer)


def test_the_first_of_several_stops_wins() -> None:
    """With two stop sequences in one piece the earlier one cuts."""
    _, text, _ = stream(["a\n\nb###c"], stops=("###", "\n\n"))
    assert text == "a"


def test_held_back_text_is_passed_on_at_the_end() -> None:
    """A tail that might have become a stop sequence is part of the answer when it did not."""
    deltas, text, stopped = stream(["Answer: E", "N"], stops=("END",))
    assert (text, stopped) == ("Answer: EN", False)
    assert deltas == ["Answer:", " EN"]
