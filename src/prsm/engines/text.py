"""Text as it is generated: pieces in, deltas out, cut at a stop sequence.

Every engine hands its pieces (a token's text, a word) to one `StreamedText`, which decides
what the caller may see so far. The deltas it passes on, joined, are exactly the final answer:
no leading whitespace, no trailing whitespace (held back until more text follows it), nothing
of a stop sequence nor after it (text that could still become one is held back until it cannot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

TextSink = Callable[[str], None]
"""Receives each delta of an answer as it is generated, on the event loop."""


class StreamedText:
    """Decodes generated tokens to text as they come, holding back what may be the start of a stop
    string or an unfinished UTF-8 character."""

    def __init__(self, stops: Sequence[str] = (), on_text: TextSink | None = None) -> None:
        self._stops = tuple(s for s in stops if s)
        self._on_text = on_text
        self._pending = ""
        """Received, not yet passed on: trailing whitespace, a possible stop's beginning."""
        self._text: list[str] = []
        self.stopped = False
        """A stop sequence was generated: the answer ends before it."""

    def add(self, piece: str) -> bool:
        """Take the next piece; True once a stop sequence has been generated (add no more)."""
        if self.stopped or not piece:
            return self.stopped
        pending = self._pending + piece
        if not self._text:
            pending = pending.lstrip()
        cut = min((i for i in (pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            self._emit(pending[:cut].rstrip())
            return True
        safe = len(pending[: len(pending) - self._stop_start(pending)].rstrip())
        self._pending = pending[safe:]
        self._emit(pending[:safe])
        return False

    def finish(self) -> str:
        """The whole answer, once generation has ended; what was held back and is not trailing
        whitespace is passed on first."""
        if not self.stopped:
            self._emit(self._pending.rstrip())
            self._pending = ""
        return "".join(self._text)

    def _stop_start(self, pending: str) -> int:
        """The length of the longest tail of `pending` that begins a stop sequence: it waits,
        with the whitespace before it."""
        return max(
            (n for stop in self._stops for n in range(1, len(stop)) if pending.endswith(stop[:n])),
            default=0,
        )

    def _emit(self, delta: str) -> None:
        if not delta:
            return
        self._text.append(delta)
        if self._on_text is not None:
            self._on_text(delta)
