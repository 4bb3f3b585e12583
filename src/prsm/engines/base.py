"""The engine protocol: generate text for a prompt, report tokens and a confidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Generation:
    """What an engine produced for one prompt."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float
    """Geometric mean of the generated tokens' probabilities, in [0, 1]."""
    model: str
    finish_reason: str = "stop"
    """`stop` (end of answer), `length` (hit max_tokens) or `cancelled`."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@runtime_checkable
class Engine(Protocol):
    """Generates answers. Implementations live beside this module.

    `generate` must not block the event loop, and must stop promptly when its task is
    cancelled (the server cancels it on timeout). Engines raise `prsm.errors.EngineError`
    subclasses for what the caller can act on.
    """

    @property
    def model(self) -> str:
        """The name of the served model, reported in every answer."""
        ...

    async def generate(self, prompt: str, *, max_tokens: int) -> Generation:
        """Answer `prompt` with at most `max_tokens` generated tokens."""
        ...

    async def aclose(self) -> None:
        """Release the model and any connections."""
        ...
