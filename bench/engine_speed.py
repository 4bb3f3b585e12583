"""Tokens/s of bare llama-cpp-python vs the same model through `POST /api/v1/query`.

Same model file, same prompts, same sampling (greedy, the default system prompt and repeat
penalty), queries one after another. Rounds alternate bare and API so drift hits both.
Goal: API / bare >= 1.2 (one query at a time: the batch holds one sequence). Then, in the
same run, the concurrent comparison of `engine_batching.py` (goal at 8 queries: 2.5x).

    .venv/bin/python bench/engine_speed.py [--rounds 5] [--max-tokens 96] [--concurrent-rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from _harness import post_json, prsm_serve
from engine_batching import concurrent_report
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


def bare_round(llm: object, settings: EngineSettings, max_tokens: int) -> tuple[int, float]:
    tokens = 0
    started = time.perf_counter()
    for prompt in PROMPTS:
        reply = llm.create_chat_completion(  # type: ignore[attr-defined]
            [
                {"role": "system", "content": settings.system_prompt},
                {"role": "user", "content": prompt},
            ],
            max_tokens=max_tokens,
            temperature=settings.temperature,
            repeat_penalty=settings.repeat_penalty,
        )
        tokens += reply["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - started


def api_round(base: str, max_tokens: int) -> tuple[int, float]:
    tokens = 0
    started = time.perf_counter()
    for i, prompt in enumerate(PROMPTS):
        body = json.dumps({"prompt": prompt, "userId": f"bench{i}", "maxTokens": max_tokens})
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
    single_query_report(args.rounds, args.max_tokens)
    print()
    concurrent_report(args.concurrent_rounds)


def single_query_report(rounds: int, max_tokens: int) -> None:
    """Queries one after another: PRSM's API against bare llama-cpp-python."""
    import llama_cpp

    settings = EngineSettings()
    cores = os.cpu_count() or 1
    llm = llama_cpp.Llama(
        model_path=str(default_model_path()),
        n_ctx=settings.context_size,
        n_threads=cores,
        n_threads_batch=cores,
        seed=settings.seed,
        verbose=False,
    )
    bare_runs: list[float] = []
    api_runs: list[float] = []
    counts: set[tuple[str, int]] = set()
    bare_round(llm, settings, 8)  # warm-up
    with prsm_serve({}) as base:
        api_round(base, 8)  # warm-up
        for _ in range(rounds):
            tokens, seconds = bare_round(llm, settings, max_tokens)
            bare_runs.append(tokens / seconds)
            counts.add(("bare", tokens))
            tokens, seconds = api_round(base, max_tokens)
            api_runs.append(tokens / seconds)
            counts.add(("api", tokens))
    bare, api = statistics.median(bare_runs), statistics.median(api_runs)
    print(f"model: {default_model_path().name}, {len(PROMPTS)} prompts, max {max_tokens} tokens")
    print(f"tokens generated per round: {sorted(counts)}")
    for name, value, runs in (
        ("bare llama-cpp-python  ", bare, bare_runs),
        ("PRSM POST /api/v1/query", api, api_runs),
    ):
        print(f"{name}: {value:7.1f} tokens/s  (rounds: {', '.join(f'{r:.1f}' for r in runs)})")
    print(f"ratio API / bare       : {api / bare:7.3f}   (goal >= 1.2)")


if __name__ == "__main__":
    main()
