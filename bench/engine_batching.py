"""Concurrent queries: PRSM's continuous batching against llama-cpp-python, in one run.

N clients each send one query of up to 64 tokens at the same moment:

- PRSM: `POST /api/v1/query` on `prsm serve` at default settings (engine.max_batch 8: at 16,
  half wait for a slot), N = 1, 2, 4, 8, 16, once for every `engine.weights` choice (the
  default `q8_0`, the file's own Q4_1, `q4_0`);
- bare llama-cpp-python answering the same queries one after another (`create_chat_completion`:
  one `Llama` serves one query at a time), on the file and on each converted copy;
- llama-cpp-python's OpenAI server (`python -m llama_cpp.server`) under the same N = 8 clients.

Aggregate tokens/s, p50/p99 seconds per query; PRSM's resident memory idle and at its peak
under 8 and 16 queries; then time to first token inside the engine with 8 queries arriving
together. Rounds alternate them all so drift hits all. Every round asks new questions (the
round's number leads each), so a prompt cache finds the system prompt in it and no more, for
all three. Goal at N = 8: PRSM / bare on the file >= 2.5.
`engine_speed.py` runs this after its single-query comparison, so both goals come from one run.

    .venv/bin/python bench/engine_batching.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _harness import API_KEY, PIDS, peak_rss, prsm_serve, rss_mib, run_server
from prsm.config import EngineSettings
from prsm.engines.base import conversation
from prsm.engines.batching import SamplingParams, Sequence
from prsm.engines.llama import LoadedModel, converted_weights, default_model_path, load_model

MAX_TOKENS = 64
WEIGHTS = ("q8_0", "as_file", "q4_0")
"""`engine.weights` compared: the default (Q8_0), the file's own (Q4_1), Q4_0."""
CONCURRENCY = (1, 2, 4, 8, 16)
PROMPTS = [
    "Write a short story about a lighthouse.",
    "Explain how a bicycle works.",
    "Describe a walk through a forest in autumn.",
    "Write a letter to a friend about a trip.",
    "Explain why the sea is salty.",
    "Describe your favourite meal in detail.",
    "Write a poem about the moon.",
    "Explain how bread is made.",
    "Describe a busy market in the morning.",
    "Write a story about a lost dog finding home.",
    "Explain how rain forms.",
    "Describe a thunderstorm over the mountains.",
    "Write a diary entry of a sailor.",
    "Explain how plants grow from seeds.",
    "Describe a train journey through the countryside.",
    "Write a fable about a fox and a crow.",
]
SETTINGS = EngineSettings()
GREEDY = SamplingParams(0.0, SETTINGS.repeat_penalty, SETTINGS.seed)


def numbered(text: str, i: int, round_: int) -> str:
    """A question made new in every round: a prompt cache may hold the system prompt before
    it, never the question itself."""
    return f"Request {round_}.{i}: {text}"


def question(i: int, round_: int) -> str:
    return numbered(PROMPTS[i], i, round_)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def at_once(count: int, ask: Callable[[int], int]) -> tuple[int, float, list[float]]:
    """`count` threads call `ask(i)` together: tokens, wall seconds, seconds per query."""
    durations: list[float] = []
    start = threading.Barrier(count + 1)

    def timed(i: int) -> int:
        start.wait()
        began = time.perf_counter()
        tokens = ask(i)
        durations.append(time.perf_counter() - began)
        return tokens

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(timed, i) for i in range(count)]
        start.wait()
        began = time.perf_counter()
        tokens = sum(f.result() for f in futures)
        return tokens, time.perf_counter() - began, durations


def prsm_ask(base: str) -> Callable[..., int]:
    client = httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300)

    def ask(i: int, round_: int) -> int:
        body = {"prompt": question(i, round_), "userId": f"bench{i}", "maxTokens": MAX_TOKENS}
        response = client.post(base + "/api/v1/query", json=body)
        response.raise_for_status()
        return int(response.json()["data"]["usage"]["completionTokens"])

    return ask


def messages(i: int, round_: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SETTINGS.system_prompt},
        {"role": "user", "content": question(i, round_)},
    ]


def openai_server_ask(base: str) -> Callable[..., int]:
    client = httpx.Client(timeout=300)

    def ask(i: int, round_: int) -> int:
        body = {
            "messages": messages(i, round_),
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "repeat_penalty": SETTINGS.repeat_penalty,
        }
        response = client.post(base + "/v1/chat/completions", json=body)
        response.raise_for_status()
        return int(response.json()["usage"]["completion_tokens"])

    return ask


def bare_one_after_another(llm: object, count: int, round_: int) -> tuple[int, float, list[float]]:
    tokens, durations = 0, []
    began = time.perf_counter()
    for i in range(count):
        reply = llm.create_chat_completion(  # type: ignore[attr-defined]
            messages(i, round_),
            max_tokens=MAX_TOKENS,
            temperature=SETTINGS.temperature,
            repeat_penalty=SETTINGS.repeat_penalty,
        )
        tokens += reply["usage"]["completion_tokens"]
        # Query i waited for all before it: its time is from the common start.
        durations.append(time.perf_counter() - began)
    return tokens, time.perf_counter() - began, durations


def first_token_seconds(rounds: int, count: int = 8) -> list[float]:
    """Seconds from submission to first token, `count` queries submitted together."""
    model = load_model(default_model_path(), EngineSettings())
    try:
        return [wait for r in range(rounds) for wait in first_token_round(model, count, r)]
    finally:
        model.close()


def first_token_round(model: LoadedModel, count: int, round_: int) -> list[float]:
    done = threading.Semaphore(0)
    firsts: dict[int, float] = {}
    submitted = time.perf_counter()

    def recorder(i: int) -> Callable[[int], None]:
        def on_token(_token: int) -> None:
            firsts.setdefault(i, time.perf_counter() - submitted)

        return on_token

    for i in range(count):
        prompt = model.prompt_tokens(conversation(question(i, round_), model.system_prompt))
        finish = lambda _outcome: done.release()  # noqa: E731
        model.decoder.submit(Sequence(prompt, MAX_TOKENS, GREEDY, finish, recorder(i)))
    for _ in range(count):
        done.acquire()
    return list(firsts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    concurrent_report(parser.parse_args().rounds)


Runs = list[tuple[int, float, list[float]]]


def bare_llama(model: Path, weights: str) -> Any:
    """llama-cpp-python's `Llama` on the model file, or on the copy `engine.weights` serves."""
    import llama_cpp

    cores = os.cpu_count() or 1
    with converted_weights(model, weights, cores) as path:
        return llama_cpp.Llama(
            model_path=str(path), n_ctx=SETTINGS.context_size, n_threads=cores, verbose=False
        )


@dataclass
class Measured:
    """Everything one concurrent comparison measured."""

    prsm: dict[str, dict[int, Runs]] = field(
        default_factory=lambda: {w: {n: [] for n in CONCURRENCY} for w in WEIGHTS}
    )
    peaks: dict[str, dict[int, float]] = field(
        default_factory=lambda: {w: dict.fromkeys(CONCURRENCY, 0.0) for w in WEIGHTS}
    )
    idle: dict[str, float] = field(default_factory=dict)
    bare: dict[str, Runs] = field(default_factory=lambda: {w: [] for w in WEIGHTS})
    server: Runs = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)


def measure_concurrent(rounds: int) -> Measured:
    """PRSM at default settings but for the weights (each `engine.weights` choice), bare
    llama-cpp-python on each, and llama_cpp.server, in alternating rounds; PRSM's resident
    memory idle and at its peak under each load."""
    model, measured = default_model_path(), Measured()
    llms = {weights: bare_llama(model, weights) for weights in WEIGHTS}
    context = str(SETTINGS.context_size)
    server_argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                   "--n_ctx", context, "--host", "127.0.0.1", "--port", "{port}"]  # fmt: skip
    with contextlib.ExitStack() as servers:
        bases = {w: servers.enter_context(prsm_serve({"PRSM_ENGINE__WEIGHTS": w})) for w in WEIGHTS}
        asks = {weights: prsm_ask(base) for weights, base in bases.items()}
        ask_server = openai_server_ask(servers.enter_context(run_server(server_argv, "/v1/models")))
        ask_server(0, -1)  # warm-up
        for weights in WEIGHTS:
            asks[weights](0, -1), bare_one_after_another(llms[weights], 1, -1)
            measured.idle[weights] = rss_mib(PIDS[bases[weights]])
        for r in range(rounds):
            for weights in WEIGHTS:
                for n in CONCURRENCY:
                    with peak_rss(PIDS[bases[weights]]) as peak:
                        runs = at_once(n, functools.partial(asks[weights], round_=r))
                    measured.prsm[weights][n].append(runs)
                    measured.peaks[weights][n] = max(measured.peaks[weights][n], peak[0])
                measured.bare[weights].append(bare_one_after_another(llms[weights], 8, r))
            measured.server.append(at_once(8, functools.partial(ask_server, round_=r)))
    measured.ttft = first_token_seconds(rounds)
    return measured


def rate(runs: Runs) -> float:
    """Median aggregate tokens/s of the rounds."""
    return statistics.median(tokens / seconds for tokens, seconds, _ in runs)


def latencies(runs: Runs) -> str:
    """p50 and p99 seconds per query over the rounds."""
    every = [d for _, _, durations in runs for d in durations]
    return f"p50 {percentile(every, 0.5):5.2f} s, p99 {percentile(every, 0.99):5.2f} s"


def concurrent_report(rounds: int) -> dict[str, float]:
    """Run the concurrent comparison and print its tables (also part of engine_speed.py);
    returns the figures a summary uses (tokens/s and MiB by name)."""
    measured = measure_concurrent(rounds)
    print(f"model {default_model_path().name}, {os.cpu_count()} cores, up to {MAX_TOKENS} "
          f"tokens a query, engine.max_batch {SETTINGS.max_batch} (the default)")  # fmt: skip
    print("| concurrent queries | " + " | ".join(
        f"PRSM tokens/s ({w}) | per query ({w})" for w in WEIGHTS) + " |")  # fmt: skip
    print("|---" * (1 + 2 * len(WEIGHTS)) + "|")
    for n in CONCURRENCY:
        cells = [
            f"{rate(measured.prsm[w][n]):.0f} | {latencies(measured.prsm[w][n])}" for w in WEIGHTS
        ]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(f"\n8 concurrent queries, median of {rounds} rounds:")
    rows = [(f"PRSM, weights {w}", measured.prsm[w][8]) for w in WEIGHTS]
    rows += [
        (f"bare llama-cpp-python on {w}, one after another", measured.bare[w]) for w in WEIGHTS
    ]
    rows.append(("llama_cpp.server (file), same 8 clients", measured.server))
    for name, runs in rows:
        print(f"  {name:48s} {rate(runs):6.1f} tokens/s  ({latencies(runs)})")
    file_bare, server = rate(measured.bare["as_file"]), rate(measured.server)
    for w in WEIGHTS:
        ours = rate(measured.prsm[w][8])
        print(f"  PRSM {w}: / bare on the file {ours / file_bare:.2f} (goal >= 2.5), "
              f"/ bare on the same weights {ours / rate(measured.bare[w]):.2f}, "
              f"/ llama_cpp.server {ours / server:.2f}")  # fmt: skip
    ttft = measured.ttft
    print(f"  time to first token, 8 together (engine, default weights): "
          f"p50 {percentile(ttft, 0.5):.3f} s, p99 {percentile(ttft, 0.99):.3f} s")  # fmt: skip
    print("\nPRSM resident memory, MiB (idle after a first query; peak under 8 and 16 queries):")
    for w in WEIGHTS:
        print(f"  {w:8s} idle {measured.idle[w]:6.0f}   8 queries {measured.peaks[w][8]:6.0f}   "
              f"16 queries {measured.peaks[w][16]:6.0f}")  # fmt: skip
    summary = {f"prsm_{n}_{w}": rate(measured.prsm[w][n]) for w in WEIGHTS for n in (1, 8)}
    summary |= {f"bare_{w}": rate(measured.bare[w]) for w in WEIGHTS}
    summary |= {f"rss_16_{w}": measured.peaks[w][16] for w in WEIGHTS} | {"server": server}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
