"""The decoder's own rate: bare `llama_decode` on the weights PRSM serves, no server, no Python
per token beyond filling the batch — the physical reference PRSM's engine is a fraction of.

`count` prompts (the benchmark's own, through the chat template) are prefilled together, then
decoded `tokens` steps each, every step one token per sequence, greedy by `argmax` over the
logits (no repeat penalty, no confidence): what the hardware does with the same work. The
context is built as PRSM's engine builds it (a KV stream per sequence, the same batch sizes
and threads, flash attention as llama.cpp chooses).

    .venv/bin/python bench/engine_decoder.py [--weights q8_0] [--tokens 64]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from prsm.config import EngineSettings
from prsm.engines.base import conversation
from prsm.engines.cpus import usable_cpus
from prsm.engines.llama import converted_weights, default_model_path, load_model


def decoder_rate(weights: str, prompts: list[str], tokens: int) -> float:
    """Tokens/s generating `tokens` for each of `prompts` together, prefill included."""
    import llama_cpp

    settings = EngineSettings(weights=weights, max_batch=len(prompts), prompt_cache=False)
    tokenizer = load_model(default_model_path(), settings.model_copy(update={"max_batch": 1}))
    try:
        prompt_tokens = [
            tokenizer.prompt_tokens(conversation(p, settings.system_prompt)) for p in prompts
        ]
    finally:
        tokenizer.close()
    threads = usable_cpus()
    with converted_weights(default_model_path(), weights, threads) as path:
        model = llama_cpp.llama_model_load_from_file(
            str(path).encode(), llama_cpp.llama_model_default_params()
        )
    try:
        return _timed_generation(llama_cpp, model, prompt_tokens, tokens, settings, threads)
    finally:
        llama_cpp.llama_model_free(model)


def _timed_generation(
    lib: Any,
    model: Any,
    prompts: list[list[int]],
    tokens: int,
    settings: EngineSettings,
    threads: int,
) -> float:
    count = len(prompts)
    params = lib.llama_context_default_params()
    params.n_ctx = settings.context_size * count
    params.n_batch = params.n_ubatch = max(256 + count, 64)
    params.n_seq_max, params.n_threads, params.n_threads_batch = count, threads, threads
    params.no_perf = True
    context = lib.llama_init_from_model(model, params)
    batch = lib.llama_batch_init(params.n_batch, 0, 1)
    n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model)))
    entries = [
        (token, position, seq, position == len(prompt) - 1)
        for seq, prompt in enumerate(prompts)
        for position, token in enumerate(prompt)
    ]
    try:
        started = time.perf_counter()
        chosen = [0] * count
        for chunk in range(0, len(entries), params.n_batch):  # the prompts, as many a pass as fit
            part = entries[chunk : chunk + params.n_batch]
            _decode(lib, context, batch, part)
            for index, (_, _, seq, output) in enumerate(part):
                if output:
                    chosen[seq] = _argmax(lib, context, index, n_vocab)
        positions = [len(prompt) for prompt in prompts]
        for _ in range(tokens - 1):  # then one token of every sequence a pass
            _decode(
                lib,
                context,
                batch,
                [(chosen[seq], positions[seq], seq, True) for seq in range(count)],
            )
            chosen = [_argmax(lib, context, seq, n_vocab) for seq in range(count)]
            positions = [position + 1 for position in positions]
        return count * tokens / (time.perf_counter() - started)
    finally:
        lib.llama_batch_free(batch)
        lib.llama_free(context)


def _decode(lib: Any, context: Any, batch: Any, entries: list[tuple[int, int, int, bool]]) -> None:
    for i, (token, position, seq, output) in enumerate(entries):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
        batch.seq_id[i][0], batch.logits[i] = seq, output
    batch.n_tokens = len(entries)
    if lib.llama_decode(context, batch) != 0:
        raise RuntimeError("llama_decode failed")


def _argmax(lib: Any, context: Any, index: int, n_vocab: int) -> int:
    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(context, index), shape=(n_vocab,))
    return int(logits.argmax())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=EngineSettings().weights)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    from engine_batching import question

    for count in (1, 8):
        rate = decoder_rate(args.weights, [question(i, 0) for i in range(count)], args.tokens)
        print(f"bare llama_decode, {args.weights}, {count} together: {rate:.1f} tokens/s")


if __name__ == "__main__":
    main()
