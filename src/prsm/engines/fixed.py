"""A deterministic engine without a model: for tests of the service and for benchmarks."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from prsm.engines.base import DEFAULT_OPTIONS, Generation, Options, Prompt
from prsm.engines.tally import count_generated
from prsm.engines.text import StreamedText, TextSink


class FixedEngine:
    """Answers every prompt with the same text after an optional delay.

    >>> engine = FixedEngine(answer="Paris.", delay=0.0)

    Token counts are whitespace-separated words, so tests can predict them; the words come
    one at a time, `delay` spread evenly over them, so a stream has something to stream.
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
        """The model name reported in answers (`fixed` unless given)."""
        return self._model

    async def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int,
        options: Options = DEFAULT_OPTIONS,
        on_text: TextSink | None = None,
    ) -> Generation:
        """The fixed answer, word by word over `delay` seconds (or the configured error)."""
        text = _text_of(prompt)
        self.calls.append(text)
        words = self.answer.split()
        pause = self.delay / max(1, min(len(words), max_tokens))
        if self.error is not None:
            if self.delay:
                await asyncio.sleep(self.delay)
            raise self.error
        streamed = StreamedText(options.stop, on_text)
        generated, first_token_at = 0, None
        try:
            for word in words[:max_tokens]:
                if pause:
                    await asyncio.sleep(pause)
                generated += 1
                first_token_at = first_token_at or time.perf_counter()
                if streamed.add(word if generated == 1 else " " + word):
                    break
        finally:
            count_generated(generated)
        finish = "length" if len(words) > max_tokens and not streamed.stopped else "stop"
        return Generation(
            text=streamed.finish(),
            prompt_tokens=len(text.split()),
            completion_tokens=generated,
            confidence=self.confidence,
            model=self._model,
            finish_reason=finish,
            first_token_at=first_token_at,
        )

    async def count_tokens(self, prompt: Prompt, options: Options = DEFAULT_OPTIONS) -> int:
        """A word a token, as its answers count the prompt."""
        return len(_text_of(prompt).split())

    async def aclose(self) -> None:
        """Nothing to release."""


def _text_of(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m.content for m in prompt)
