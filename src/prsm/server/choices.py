"""Several answers to one prompt (OpenAI's `n`): as many generations, sampled with consecutive
seeds and decoded together — the engine computes the shared prompt once and the others copy
its KV cells (`prsm.engines.batching`) — reported as one `Generation` whose `choices` are
each answer. Streamed, each piece of text says whose it is (`ChoiceText.choice`)."""

from __future__ import annotations

import asyncio
import dataclasses
from statistics import fmean

from prsm.engines import Engine, Generation
from prsm.engines.base import Options, Prompt
from prsm.engines.text import TextSink

MAX_CHOICES = 8
"""Most answers one request may ask for (each takes an engine slot)."""


class ChoiceText(str):
    """A piece of one answer's text, when a request asks for several."""

    choice: int
    """The answer's number, from 0."""

    def __new__(cls, text: str, choice: int) -> ChoiceText:
        """`text` of the answer numbered `choice`."""
        piece = super().__new__(cls, text)
        piece.choice = choice
        return piece


async def generate_choices(
    engine: Engine,
    prompt: Prompt,
    max_tokens: int,
    options: Options,
    count: int,
    on_text: TextSink | None,
) -> Generation:
    """`count` answers to `prompt` (one: just the engine's); if one fails, the others are
    cancelled and its error raised."""
    if count == 1:
        return await engine.generate(
            prompt, max_tokens=max_tokens, options=options, on_text=on_text
        )
    seed = options.seed or 0

    def sink(index: int) -> TextSink | None:
        return None if on_text is None else lambda text: on_text(ChoiceText(text, index))

    tasks = [
        asyncio.ensure_future(
            engine.generate(
                prompt,
                max_tokens=max_tokens,
                options=dataclasses.replace(options, seed=(seed + index) % 2**32),
                on_text=sink(index),
            )
        )
        for index in range(count)
    ]
    try:
        answers = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return together(answers)


def together(answers: list[Generation]) -> Generation:
    """One Generation for several answers: the first's, with all their completion tokens,
    their mean confidence, and each of them as `choices`."""
    return dataclasses.replace(
        answers[0],
        completion_tokens=sum(answer.completion_tokens for answer in answers),
        confidence=fmean(answer.confidence for answer in answers),
        choices=tuple(answers),
    )
