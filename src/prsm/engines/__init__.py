"""Engines generate answers; the server and worker only see the `Engine` protocol.

- `llama`: the embedded default, llama.cpp on a local GGUF file (`prsm.engines.llama`)
- `openai`: any OpenAI-compatible server (`prsm.engines.openai`)
- `fixed`: a canned answer without a model, for tests and benchmarks (`prsm.engines.fixed`)
"""

from __future__ import annotations

from prsm.config import EngineSettings
from prsm.engines.base import Engine, Generation
from prsm.engines.fixed import FixedEngine

__all__ = ["Engine", "FixedEngine", "Generation", "load_engine"]


async def load_engine(settings: EngineSettings) -> Engine:
    """The configured engine, loaded and ready to generate."""
    if settings.kind == "fixed":
        model = settings.model_name or "fixed"
        return FixedEngine(settings.fixed_answer, delay=settings.fixed_delay_seconds, model=model)
    if settings.kind == "openai":
        from prsm.engines.openai import OpenAIEngine

        return await OpenAIEngine.load(settings)
    from prsm.engines.llama import LlamaEngine

    return await LlamaEngine.load(settings)
