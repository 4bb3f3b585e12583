"""Engines generate answers; the server and worker only see the `Engine` protocol.

- `llama`: the embedded default, llama.cpp on a local GGUF file (`prsm.engines.llama`)
- `openai`: any OpenAI-compatible server (`prsm.engines.openai`)
- `fixed`: a canned answer without a model, for tests and benchmarks (`prsm.engines.fixed`)

and embedding engines the `Embedder` protocol:

- `bert`: an embedded sentence encoder, all-MiniLM-L6-v2 by default (`prsm.engines.bert`)
"""

from __future__ import annotations

from prsm.config import EngineSettings
from prsm.engines.base import Engine, Generation
from prsm.engines.embedding import Embedder, Embeddings
from prsm.engines.fixed import FixedEngine

__all__ = ["Embedder", "Embeddings", "Engine", "FixedEngine", "Generation", "load_engine"]


async def load_engine(settings: EngineSettings) -> Engine | Embedder:
    """The configured engine, loaded and ready to generate (or to embed, for `bert`)."""
    if settings.kind == "bert":
        from prsm.engines.bert import BertEmbedder

        return await BertEmbedder.load(settings)
    if settings.kind == "fixed":
        model = settings.model_name or "fixed"
        return FixedEngine(settings.fixed_answer, delay=settings.fixed_delay_seconds, model=model)
    if settings.kind == "openai":
        from prsm.engines.openai import OpenAIEngine

        return await OpenAIEngine.load(settings)
    from prsm.engines.llama import LlamaEngine

    return await LlamaEngine.load(settings)
