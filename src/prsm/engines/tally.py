"""What engines generated for the query under way, told as they stop for any reason.

A query cut short — its caller gone, its time limit passed, its engine failing mid-answer —
returns no `Generation`, yet the engine spent tokens on it. Budgets charge those too: the
server opens a `Tally` around the query (`tallied`), and every engine adds what each of its
sequences generated when it stops (`count_generated`), finished or not. An engine that learns
its count only from a whole answer (a remote server) marks the wait `uncounted`: a query cut
short there may have generated anything up to its `max_tokens`.

The tally travels in a context variable, so the several generations of one query (OpenAI's
`n`, run as tasks that copy the context) add to the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class Tally:
    """Tokens generated for one query so far."""

    generated: int = 0
    uncounted: int = 0
    """Generations under way, or cut short, whose tokens their engine could not tell."""

    @property
    def exact(self) -> bool:
        """Whether `generated` is all the query generated."""
        return self.uncounted == 0


_CURRENT: ContextVar[Tally | None] = ContextVar("prsm_tally", default=None)


@contextlib.contextmanager
def tallied() -> Iterator[Tally]:
    """A new tally for the generations started inside the block."""
    tally = Tally()
    token = _CURRENT.set(tally)
    try:
        yield tally
    finally:
        _CURRENT.reset(token)


def count_generated(tokens: int) -> None:
    """Add `tokens` a sequence generated to the query's tally (none open: nothing to do)."""
    tally = _CURRENT.get()
    if tally is not None:
        tally.generated += tokens


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """Around a wait whose generated tokens are known only from its answer: cancelled there,
    the tally stays inexact; answered, or failed with an error (nothing generated), it is
    exact again — the engine counts the answer's tokens itself."""
    tally = _CURRENT.get()
    if tally is None:
        yield
        return
    tally.uncounted += 1
    try:
        yield
    except asyncio.CancelledError:
        raise
    except BaseException:
        tally.uncounted -= 1
        raise
    tally.uncounted -= 1
