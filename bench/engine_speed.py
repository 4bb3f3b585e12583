"""The engine's speed at default settings, against bare llama-cpp-python and the hardware.

1. One query at a time: tokens/s of `POST /api/v1/query` against bare llama-cpp-python on the
   model file, same prompts, same sampling (greedy, the default system prompt and repeat
   penalty). Rounds alternate bare and API so drift hits both; each round's questions are new
   (numbered), so both reuse the cached system prompt and no more. Goal: API / bare >= 1.2.
   For every `engine.weights` choice (bare then on both the file and the same copy).
2. The concurrent comparison of `engine_batching.py`: goal at 8 queries, 2.5x bare on the
   file; llama_cpp.server beside it; PRSM's memory.
3. The decoder's own rate (`engine_decoder.py`: bare `llama_decode`, the same prompts, 1 and 8
   together) and PRSM at 1 and 8 queries as a fraction of it: goal >= 0.85 at 8.

    .venv/bin/python bench/engine_speed.py [--rounds 5] [--max-tokens 96] [--concurrent-rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

from _harness import post_json, prsm_serve
from engine_batching import MAX_TOKENS, WEIGHTS, bare_llama, concurrent_report, numbered, question
from engine_decoder import decoder_rate
from prsm.config import EngineSettings
from prsm.engines.llama import default_model_path

PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about the sea.",
    "List three prime numbers and say why they are prime.",
    "Describe a cat to someone who has never seen one.",
    "Give two tips for writing clear code.",
]


def bare_round(
    llm: object, settings: EngineSettings, max_tokens: int, round_: int
) -> tuple[int, float]:
    tokens = 0
    started = time.perf_counter()
    for i, prompt in enumerate(PROMPTS):
        reply = llm.create_chat_completion(  # type: ignore[attr-defined]
            [
                {"role": "system", "content": settings.system_prompt},
                {"role": "user", "content": numbered(prompt, i, round_)},
            ],
            max_tokens=max_tokens,
            temperature=settings.temperature,
            repeat_penalty=settings.repeat_penalty,
        )
        tokens += reply["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - started


def api_round(base: str, max_tokens: int, round_: int) -> tuple[int, float]:
    tokens = 0
    started = time.perf_counter()
    for i, prompt in enumerate(PROMPTS):
        question = numbered(prompt, i, round_)
        body = json.dumps({"prompt": question, "userId": f"bench{i}", "maxTokens": max_tokens})
        response = post_json(base, "/api/v1/query", body.encode())
        response.raise_for_status()
        tokens += response.json()["data"]["usage"]["completionTokens"]
    return tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrent-rounds", type=int, default=3)
    args = parser.parse_args()
    single = single_query_report(args.rounds, args.max_tokens)
    print()
    concurrent = concurrent_report(args.concurrent_rounds)
    print()
    limits = decoder_report(concurrent)
    default = EngineSettings().weights
    print(f"\ngoals at default settings (engine.weights {default}):")
    print(f"  one query, API / bare on the file: {single:.2f} (goal >= 1.2)")
    ratio = concurrent[f"prsm_8_{default}"] / concurrent["bare_as_file"]
    print(f"  8 concurrent, PRSM / bare on the file: {ratio:.2f} (goal >= 2.5)")
    print(f"  8 concurrent, PRSM / the decoder's own rate: {limits[default]:.2f} (goal >= 0.85)")


def decoder_report(concurrent: dict[str, float]) -> dict[str, float]:
    """The decoder's own rate for each weights, 1 and 8 sequences, and PRSM (through HTTP, the
    concurrent run's medians) as a fraction of it; returns the fractions at 8."""
    print(f"the decoder's own rate (bare llama_decode, same prompts, {MAX_TOKENS} tokens each):")
    fractions = {}
    for w in WEIGHTS:
        rates = {
            n: decoder_rate(w, [question(i, 99) for i in range(n)], MAX_TOKENS) for n in (1, 8)
        }
        shares = {n: concurrent[f"prsm_{n}_{w}"] / rates[n] for n in rates}
        print(f"  {w:8s} 1: {rates[1]:6.1f} tokens/s (PRSM {shares[1]:.2f} of it)   "
              f"8: {rates[8]:6.1f} tokens/s (PRSM {shares[8]:.2f} of it)")  # fmt: skip
        fractions[w] = shares[8]
    return fractions


def single_query_report(rounds: int, max_tokens: int) -> float:
    """Queries one after another: PRSM's API against bare llama-cpp-python, for every
    `engine.weights` (bare then on both the file and the same copy); returns the default's
    ratio to bare on the file."""
    settings = EngineSettings()
    model = default_model_path()
    llms = {weights: bare_llama(model, weights) for weights in WEIGHTS}
    bare: dict[str, list[float]] = {w: [] for w in WEIGHTS}
    api: dict[str, list[float]] = {w: [] for w in WEIGHTS}
    counts: set[tuple[str, int]] = set()
    with contextlib.ExitStack() as servers:
        bases = {w: servers.enter_context(prsm_serve({"PRSM_ENGINE__WEIGHTS": w})) for w in WEIGHTS}
        for w in WEIGHTS:  # warm-up
            bare_round(llms[w], settings, 8, -1), api_round(bases[w], 8, -1)
        for r in range(rounds):
            for w in WEIGHTS:
                tokens, seconds = bare_round(llms[w], settings, max_tokens, r)
                bare[w].append(tokens / seconds)
                counts.add((f"bare {w}", tokens))
                tokens, seconds = api_round(bases[w], max_tokens, r)
                api[w].append(tokens / seconds)
                counts.add((f"api {w}", tokens))
    print(f"model: {model.name}, {len(PROMPTS)} prompts, max {max_tokens} tokens")
    print(f"tokens generated per round: {sorted(counts)}")
    rows = [(f"bare llama-cpp-python, {w}", bare[w]) for w in WEIGHTS]
    rows += [(f"PRSM POST /api/v1/query, {w}", api[w]) for w in WEIGHTS]
    for name, runs in rows:
        listed = ", ".join(f"{r:.1f}" for r in runs)
        print(f"{name:36s}: {statistics.median(runs):7.1f} tokens/s  (rounds: {listed})")
    file_bare = statistics.median(bare["as_file"])
    for w in WEIGHTS:
        ours = statistics.median(api[w])
        print(f"ratio API {w} / bare on the file: {ours / file_bare:6.3f} (goal >= 1.2); "
              f"/ bare on the same weights: {ours / statistics.median(bare[w]):6.3f}")  # fmt: skip
    return statistics.median(api[EngineSettings().weights]) / file_bare


if __name__ == "__main__":
    main()
