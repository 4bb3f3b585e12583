"""The quality an engine's weights give: perplexity on text every machine has offline.

The text is Python's own documentation (`pydoc_data.topics`, in every CPython), cut into
`chunks` pieces of `chunk_tokens` tokens; the first half of each piece is context, the second
half is scored (as llama.cpp's perplexity tool does). Lower is better; a conversion that costs
quality shows here before users see worse answers.

>>> measure(default_model_path(), "as_file", chunks=4, chunk_tokens=128)   # doctest: +SKIP
Perplexity(weights='as_file', perplexity=12.7..., tokens=252)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from prsm.engines.cpus import usable_cpus
from prsm.engines.llama import converted_weights


@dataclass(frozen=True, slots=True)
class Perplexity:
    """The perplexity of one choice of weights, over `tokens` scored tokens."""

    weights: str
    perplexity: float
    tokens: int


def reference_text() -> str:
    """Python's bundled documentation topics, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def measure(
    model_path: Path,
    weights: str,
    *,
    chunks: int = 40,
    chunk_tokens: int = 256,
    threads: int | None = None,
) -> Perplexity:
    """Perplexity of `model_path` served with `weights` (an `engine.weights` value)."""
    import llama_cpp

    threads = threads or usable_cpus()
    with converted_weights(model_path, weights, threads) as path:
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=chunk_tokens,
            n_batch=chunk_tokens,
            logits_all=True,
            n_threads=threads,
            verbose=False,
        )
    try:
        tokens = llm.tokenize(reference_text().encode(), add_bos=False, special=False)
        total, scored = 0.0, 0
        for start in range(0, chunks * (chunk_tokens - 1), chunk_tokens - 1):
            piece = [llm.token_bos(), *tokens[start : start + chunk_tokens - 1]]
            if len(piece) < chunk_tokens:
                break
            llm.reset()  # type: ignore[no-untyped-call]
            llm.eval(piece)
            for position in range(chunk_tokens // 2, chunk_tokens - 1):
                total -= _log_probability(llm.scores[position], piece[position + 1])
                scored += 1
    finally:
        llm.close()
    return Perplexity(weights, math.exp(total / scored), scored)


def _log_probability(logits: object, token: int) -> float:
    import numpy as np

    row = np.asarray(logits, dtype=np.float64)
    top = row.max()
    return float(row[token] - top - math.log(np.exp(row - top).sum()))
