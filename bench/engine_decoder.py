"""The decoder's own rate: bare `llama_decode` on the weights PRSM serves, no server, no
scheduler — the physical reference PRSM's engine is a fraction of.

The same work as PRSM's: the benchmark's prompts through the chat template, each answer
sampled by the chain PRSM builds for a greedy answer (llama.cpp's repeat penalty, then greedy),
so the answers and their lengths are PRSM's own, up to `tokens` each. And the best schedule for
it, known only in hindsight: a first, untimed run learns each answer's length; the timed run
puts the longest answers in the lowest sequence ids, so every pass is one consecutive run of
ids however answers end (llama.cpp decodes one pass per run), with the system prompt computed
before the clock starts (PRSM computes it at load). The prompts' rest is prefilled together,
then one token of every unfinished sequence a pass. The context is built as PRSM's engine
builds it (a KV stream per sequence, the same batch sizes and threads, flash attention as
llama.cpp chooses).

    .venv/bin/python bench/engine_decoder.py [--weights q8_0] [--tokens 64]
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

from prsm.config import EngineSettings
from prsm.engines.base import conversation
from prsm.engines.batching import SamplingParams, sampler_chain
from prsm.engines.cpus import usable_cpus
from prsm.engines.llama import (
    common_prefix,
    converted_weights,
    default_model_path,
    load_model,
    render,
)

Entry = tuple[int, int, int, bool]
"""One batch entry: token, position, sequence id, whether its logits are wanted."""


def decoder_rate(weights: str, prompts: list[str], tokens: int) -> float:
    """Tokens/s answering `prompts` together (up to `tokens` each), prompts included but for
    the system prompt, scheduled at best."""
    import llama_cpp

    settings = EngineSettings(weights=weights, max_batch=len(prompts))
    tokenizer = load_model(default_model_path(), settings.model_copy(update={"max_batch": 1}))
    try:
        chat = functools.partial(render, tokenizer.llm, tokenizer.formatter)
        prompt_tokens = [chat(conversation(p, settings.system_prompt)) for p in prompts]
        prefix = len(common_prefix(chat, settings.system_prompt))
    finally:
        tokenizer.close()
    threads = usable_cpus()
    with converted_weights(default_model_path(), weights, threads) as path:
        model = llama_cpp.llama_model_load_from_file(
            str(path).encode(), llama_cpp.llama_model_default_params()
        )
    run = functools.partial(
        _answer, llama_cpp, model, prefix=prefix, tokens=tokens, threads=threads, settings=settings
    )
    try:
        _, lengths = run(prompt_tokens)
        longest_first = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        rate, _ = run([prompt_tokens[i] for i in longest_first])
        return rate
    finally:
        llama_cpp.llama_model_free(model)


def _answer(
    lib: Any,
    model: Any,
    prompts: list[list[int]],
    *,
    prefix: int,
    tokens: int,
    threads: int,
    settings: EngineSettings,
) -> tuple[float, list[int]]:
    """Answer `prompts` together on a new context: tokens/s after the shared `prefix` is
    computed, and each answer's length."""
    count = len(prompts)
    params = lib.llama_context_default_params()
    params.n_ctx = settings.context_size * count
    params.n_batch = params.n_ubatch = max(256 + count, 64)
    params.n_seq_max, params.n_threads, params.n_threads_batch = count, threads, threads
    params.no_perf = True
    context = lib.llama_init_from_model(model, params)
    batch = lib.llama_batch_init(params.n_batch, 0, 1)
    samplers = [_greedy_sampler(lib, model, settings) for _ in prompts]
    try:
        shared = [(p[i], i, seq, False) for seq, p in enumerate(prompts) for i in range(prefix)]
        _prefill(lib, context, batch, shared, samplers)
        started = time.perf_counter()
        rest = [(p[i], i, seq, i == len(p) - 1)
                for seq, p in enumerate(prompts) for i in range(prefix, len(p))]  # fmt: skip
        chosen = _prefill(lib, context, batch, rest, samplers)
        lengths = _generate(
            lib, context, batch, samplers, chosen, [len(p) for p in prompts], tokens
        )
        return sum(lengths) / (time.perf_counter() - started), lengths
    finally:
        for sampler in samplers:
            lib.llama_sampler_free(sampler)
        lib.llama_batch_free(batch)
        lib.llama_free(context)


def _prefill(
    lib: Any, context: Any, batch: Any, entries: list[Entry], samplers: list[Any]
) -> dict[int, int]:
    """Decode `entries`, as many a pass as the batch holds; the first token sampled for each
    sequence whose last prompt token was among them."""
    capacity, chosen = int(lib.llama_n_batch(context)), {}
    for start in range(0, len(entries), capacity):
        part = entries[start : start + capacity]
        _decode(lib, context, batch, part)
        for index, (_, _, seq, output) in enumerate(part):
            if output:
                chosen[seq] = lib.llama_sampler_sample(samplers[seq], context, index)
    return chosen


def _generate(
    lib: Any,
    context: Any,
    batch: Any,
    samplers: list[Any],
    chosen: dict[int, int],
    positions: list[int],
    tokens: int,
) -> list[int]:
    """One token of every unfinished sequence a pass (`chosen` holds each one's last token,
    `positions` where it goes), up to `tokens` each; each answer's length."""
    vocab = lib.llama_model_get_vocab(lib.llama_get_model(context))
    lengths = [1] * len(positions)
    running = sorted(chosen)
    for _ in range(tokens - 1):
        running = [seq for seq in running if not lib.llama_vocab_is_eog(vocab, chosen[seq])]
        if not running:
            break
        _decode(lib, context, batch, [(chosen[s], positions[s], s, True) for s in running])
        for index, seq in enumerate(running):
            chosen[seq] = lib.llama_sampler_sample(samplers[seq], context, index)
            positions[seq] += 1
            lengths[seq] += 1
    return lengths


def _decode(lib: Any, context: Any, batch: Any, entries: list[Entry]) -> None:
    for i, (token, position, seq, output) in enumerate(entries):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
        batch.seq_id[i][0], batch.logits[i] = seq, output
    batch.n_tokens = len(entries)
    if lib.llama_decode(context, batch) != 0:
        raise RuntimeError("llama_decode failed")


def _greedy_sampler(lib: Any, model: Any, settings: EngineSettings) -> Any:
    """The chain PRSM's engine builds for a greedy answer (its own code: the same chain)."""
    n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
    return sampler_chain(lib, n_vocab, SamplingParams(0.0, settings.repeat_penalty, settings.seed))


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
