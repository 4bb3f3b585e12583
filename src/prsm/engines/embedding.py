"""The embedding engine protocol: texts in, one vector each out, with the tokens they were."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from typing_extensions import TypeIs

if TYPE_CHECKING:  # numpy loads with an embedding model only
    import numpy as np
    from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Embeddings:
    """What an embedding engine produced for a list of texts."""

    vectors: NDArray[np.float32]
    """One row a text, in the order given."""
    prompt_tokens: int
    model: str


class Embedder(Protocol):
    """Turns texts into vectors; must not block the event loop."""

    @property
    def model(self) -> str:
        """The name of the served model, reported in every answer."""
        ...

    @property
    def dimensions(self) -> int:
        """The length of each vector."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """One vector per text, in order (PromptTooLongError for a text past the model's
        window)."""
        ...

    async def count_tokens(self, texts: Sequence[str]) -> int:
        """How many tokens the texts are, as `embed` counts them (budgets reserve them)."""
        ...

    async def aclose(self) -> None:
        """Release the model."""
        ...


def is_embedder(engine: object) -> TypeIs[Embedder]:
    """Whether `engine` embeds texts (a generative engine does not). One attribute of its
    class looked up: `isinstance` against a protocol reads every member of the engine, its
    `model` property included, on each query."""
    return callable(getattr(type(engine), "embed", None))
