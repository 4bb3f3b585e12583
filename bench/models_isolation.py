"""One model saturated does not slow another's first token: two models in one `prsm serve`.

The SmolLM2 file served twice — `busy` (q8_0 weights) and `calm` (q4_0) — each with its own
engine, queue and one CPU thread (2 cores: one each). `calm`'s time to first token (streamed,
one query at a time, short questions) is measured idle, then while 16 clients keep `busy`
full with long answers (its queue overflowing: 503s, which they retry after `Retry-After` as
OpenAI's clients do). The load's clients run on the same 2 cores. Goal: within 1.5x of idle.

    .venv/bin/python bench/models_isolation.py [--queries 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from _harness import API_KEY, prsm_serve

MODELS = [
    {"name": "busy", "weights": "q8_0", "threads": 1, "max_batch": 4, "max_queue": 8},
    {"name": "calm", "weights": "q4_0", "threads": 1, "max_batch": 4},
]
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?"]


async def first_token(client: httpx.AsyncClient, question: str) -> float:
    """Seconds from sending a streamed chat request for `calm` to its first text."""
    body = {"model": "calm", "stream": True, "max_tokens": 8,
            "messages": [{"role": "user", "content": question}]}  # fmt: skip
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"]:
                return time.perf_counter() - started
    raise RuntimeError("no text came")


async def keep_busy(client: httpx.AsyncClient, stop: asyncio.Event, counts: dict[int, int]) -> None:
    story = [{"role": "user", "content": "Tell me a long story about a ship."}]
    body = {"model": "busy", "max_tokens": 128, "messages": story}
    while not stop.is_set():
        answer = await client.post("/v1/chat/completions", json=body, timeout=300)
        counts[answer.status_code] = counts.get(answer.status_code, 0) + 1
        if answer.status_code == 503:  # as OpenAI's clients do: wait what Retry-After says
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))


async def measure(base: str, queries: int) -> None:
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        await first_token(client, QUESTIONS[0])  # warm
        idle = [await first_token(client, QUESTIONS[i % 3]) for i in range(queries)]
        stop, counts = asyncio.Event(), {}
        load = [asyncio.create_task(keep_busy(client, stop, counts)) for _ in range(16)]
        await asyncio.sleep(3)  # busy's batch and queue fill
        loaded = [await first_token(client, QUESTIONS[i % 3]) for i in range(queries)]
        stop.set()
        await asyncio.gather(*load)
    idle_p50, loaded_p50 = statistics.median(idle), statistics.median(loaded)
    print(f"calm's time to first token, median of {queries}: idle {idle_p50 * 1000:.0f} ms, "
          f"busy saturated {loaded_p50 * 1000:.0f} ms")  # fmt: skip
    print(f"busy's answers meanwhile, by status: {dict(sorted(counts.items()))}")
    print(f"ratio saturated / idle: {loaded_p50 / idle_p50:.2f} (goal <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=12)
    args = parser.parse_args()
    with prsm_serve({"PRSM_MODELS": json.dumps(MODELS)}) as base:
        asyncio.run(measure(base, args.queries))


if __name__ == "__main__":
    main()
