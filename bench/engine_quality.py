"""Perplexity of every `engine.weights` choice on Python's bundled documentation, beside the
model file's own, in one run: what each conversion costs in quality.

40 chunks of 256 tokens of `pydoc_data.topics`, the second half of each scored (5,080 tokens);
lower is better. The speed of each choice is bench/engine_speed.py's.

    .venv/bin/python bench/engine_quality.py [--chunks 40] [--chunk-tokens 256] [--model PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import get_args

from prsm.config import EngineSettings
from prsm.engines.llama import default_model_path
from prsm.engines.quality import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model = args.model or default_model_path()
    choices = sorted(
        get_args(EngineSettings.model_fields["weights"].annotation), key="as_file".__ne__
    )
    default = EngineSettings().weights
    print(f"{model.name}: {args.chunks} chunks of {args.chunk_tokens} tokens, second halves")
    print(f"{'engine.weights':16} {'perplexity':>10} {'vs file':>8} {'scored':>7} {'seconds':>8}")
    reference = None
    for weights in choices:
        started = time.perf_counter()
        result = measure(model, weights, chunks=args.chunks, chunk_tokens=args.chunk_tokens)
        seconds = time.perf_counter() - started
        reference = reference or result.perplexity  # as_file comes first
        change = f"{(result.perplexity / reference - 1) * 100:+.1f} %"
        name = weights + (" (default)" if weights == default else "")
        print(f"{name:16} {result.perplexity:10.2f} {change:>8} {result.tokens:7} {seconds:8.1f}")


if __name__ == "__main__":
    main()
