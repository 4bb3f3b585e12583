"""A deterministic engine without a model: for tests of the service and for benchmarks."""

from __future__ import annotations

import asyncio
from collections import deque

from prsm.engines.base import Generation


class FixedEngine:
    """Answers every prompt with the same text after an optional delay.

    >>> engine = FixedEngine(answer="Paris.", delay=0.0)

    Token counts are whitespace-separated words, so tests can predict them.
    `calls` holds the last 100 prompts it was asked, in order (bounded, since benchmarks
    and `prsm serve` may run it for millions of queries).
    """

    def __init__(
        self,
        answer: str = "This is a fixed answer.",
        *,
        delay: float = 0.0,
        confidence: float = 0.9,
        model: str = "fixed",
        error: Exception | None = None,
    ) -> None:
        self.answer = answer
        self.delay = delay
        self.confidence = confidence
        self.error = error
        self.calls: deque[str] = deque(maxlen=100)
        self._model = model

    @property
    def model(self) -> str:
        return self._model

    async def generate(self, prompt: str, *, max_tokens: int) -> Generation:
        self.calls.append(prompt)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        words = self.answer.split()
        finish = "length" if len(words) > max_tokens else "stop"
        words = words[:max_tokens]
        return Generation(
            text=" ".join(words),
            prompt_tokens=len(prompt.split()),
            completion_tokens=len(words),
            confidence=self.confidence,
            model=self._model,
            finish_reason=finish,
        )

    async def aclose(self) -> None:
        return None
