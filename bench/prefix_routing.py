"""Routing by prompt prefix against round robin and least outstanding, one run: agents' turns.

Three `prsm serve` replicas with the real model (SmolLM2, one CPU thread each, 2 cores for all)
behind one `prsm gateway`, its pool balanced three ways in turn — `round_robin`,
`least_outstanding`, `prefix_affinity` — each on fresh replicas (empty caches). The workload is
what agents send: 24 conversations of 6 turns, sent concurrently, each turn the whole
conversation again (a ~600-token system prompt with its tool definitions written in, as
ReAct-style agents do, then every earlier turn and answer); 4 system prompts, each shared by 6
conversations (`--pause S`: each turn after a pause of up to S seconds, as a tool call
takes; 0 by default; `--tool-results`: each user turn carries a tool's result of ~80
tokens, as an agent's does, so the history outgrows the system prompt by the last turns).
Each turn is streamed (`/v1/chat/completions`, 16 tokens); its time to first token is
measured at the client. `--skewed`: one system prompt far hotter than the rest —
three conversations in four begin with it — which affinity alone would pile onto one
replica: the load guard must spread them.

Reported per balancer: time to first token p50/p99 on turns >= 2, tokens/s (prompt and answer
tokens of every turn / wall time), prompt tokens taken from the engines' caches (their
`prsm_prompt_tokens_cached_total`), the share of turns >= 2 that found every earlier turn
cached (and their own TTFT p50), the busiest replica's share of queries (fair: 1/3), and the
gateway's affinity decisions (`prsm_affinity_picks_total`). `--max-batch` sets the replicas'
slots (8, PRSM's default), `--prefill-chunk` their prompt tokens a step (256, the default);
`--guard-absolute`/`--guard-relative` the load guard.

    .venv/bin/python bench/prefix_routing.py [--conversations 24] [--turns 6] [--skewed]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _harness import API_KEY, metric, prsm_serve, run_server
from prsm.config import EngineSettings
from prsm.gateway.config import AffinitySettings

BALANCERS = ["round_robin", "least_outstanding", "prefix_affinity"]
CONTEXTS = {False: 2048, True: 4096}
"""Each slot's tokens, without and with tool results (the last turns then outgrow 2048)."""
ANSWER_TOKENS = 16
TOPICS = ["insurance claims", "travel bookings", "software incidents", "grocery orders"]
TOOLS = [
    ("search_records", "Search the records by free text; returns the ten best matches."),
    ("get_record", "Fetch one record by its id, with its full history and attachments."),
    ("update_record", "Change fields of a record; every change is kept in its history."),
    ("send_message", "Send a message to the customer by their preferred channel."),
    ("schedule_callback", "Book a call with the customer at a time they choose."),
]


def system_prompt(topic: str) -> str:
    """About 600 tokens: a role, rules and five tools with their JSON Schemas."""
    rules = " ".join(
        f"Rule {n}: when a customer asks about {topic}, check the record first, state what "
        f"you found in plain words, and never promise what policy {n} does not allow."
        for n in range(1, 9)
    )
    tools = "\n".join(
        json.dumps({"name": name, "description": text, "parameters": {
            "type": "object", "properties": {"id": {"type": "string"},
                                             "text": {"type": "string"}}}})
        for name, text in TOOLS
    )  # fmt: skip
    return (
        f"You are an assistant for {topic} at a large company. {rules}\n"
        f"You may call these tools by answering with JSON:\n{tools}"
    )


@dataclass
class Conversation:
    topic: str
    turns: int
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.messages.append({"role": "system", "content": system_prompt(self.topic)})


@dataclass
class Tally:
    first_tokens: list[float] = field(default_factory=list)
    """Seconds to the first text of each turn >= 2."""
    tokens: int = 0
    failed: int = 0
    hit_first_tokens: list[float] = field(default_factory=list)
    """Seconds to the first text of each turn >= 2 that found all of the turn before's prompt
    cached."""
    later_turns: int = 0


@dataclass
class Turn:
    """One streamed answer as the client saw it."""

    text: list[str] = field(default_factory=list)
    first: float | None = None
    """Seconds from sending to the first text."""
    usage: dict[str, Any] = field(default_factory=dict)


async def ask(client: httpx.AsyncClient, messages: list[dict[str, str]]) -> Turn | None:
    """One turn, streamed; None when it was refused."""
    body = {"model": "smollm2", "messages": messages, "stream": True,
            "max_tokens": ANSWER_TOKENS, "stream_options": {"include_usage": True}}  # fmt: skip
    started, turn = time.perf_counter(), Turn()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return None
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            turn.usage = chunk.get("usage") or turn.usage
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    turn.first = turn.first or time.perf_counter() - started
                    turn.text.append(choice["delta"]["content"])
    return turn


def tool_result(n: int, turn: int) -> str:
    """About 80 tokens: what `search_records` returned for this turn, as an agent sends it."""
    rng = random.Random(n * 100 + turn)
    records = [{"id": f"R-{rng.randrange(10**6):06d}", "status": rng.choice(["open", "closed"]),
                "note": f"case {n}.{turn}.{i} checked by agent {rng.randrange(100)}"}
               for i in range(2)]  # fmt: skip
    return "Tool search_records returned: " + json.dumps(records)


async def converse(
    client: httpx.AsyncClient,
    talk: Conversation,
    n: int,
    tally: Tally,
    pause: float,
    tool_results: bool,
) -> None:
    """The conversation's turns one after another, each with every earlier turn, each after a
    pause of up to `pause` seconds (seeded), as an agent's tool call takes."""
    pauses, asked_before = random.Random(n), 0
    for number in range(1, talk.turns + 1):
        await asyncio.sleep(pauses.uniform(0, pause))
        question = f"Customer {n}, turn {number}: what happened to my case about {talk.topic}?"
        if tool_results:
            question = tool_result(n, number) + "\n" + question
        talk.messages.append({"role": "user", "content": question})
        turn = await ask(client, talk.messages)
        if turn is None or not turn.usage:  # refused, or the stream ended with an error event
            tally.failed += 1
            talk.messages.pop()
            continue
        tally.tokens += turn.usage["total_tokens"]
        if number >= 2 and turn.first is not None:
            tally.later_turns += 1
            tally.first_tokens.append(turn.first)
            cached = turn.usage["prompt_tokens_details"]["cached_tokens"]
            if cached >= asked_before - 1:  # all of the turn before's prompt
                tally.hit_first_tokens.append(turn.first)
        asked_before = turn.usage["prompt_tokens"]
        talk.messages.append({"role": "assistant", "content": "".join(turn.text)})


async def workload(base: str, args: argparse.Namespace) -> tuple[Tally, float]:
    rng = random.Random(7)
    hot = 3 * args.conversations // 4 if args.skewed else 0
    talks = [Conversation(TOPICS[0 if n < hot else n % len(TOPICS)], args.turns)
             for n in range(args.conversations)]  # fmt: skip
    rng.shuffle(talks)
    tally = Tally()
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                converse(client, talk, n, tally, args.pause, args.tool_results)
                for n, talk in enumerate(talks)
            )
        )
    return tally, time.perf_counter() - started


def replica_counts(bases: list[str]) -> list[tuple[float, float]]:
    """Each replica's (queries answered, prompt tokens taken from its cache)."""
    return [
        (metric(base, "prsm_time_to_first_token_seconds_count"),
         metric(base, "prsm_prompt_tokens_cached_total"))
        for base in bases
    ]  # fmt: skip


def affinity_picks(gateway_base: str) -> str:
    """The gateway's prefix-affinity decisions, matched/guarded/unmatched ("" for others)."""
    counts = [
        round(metric(gateway_base, "prsm_affinity_picks_total", f'decision="{decision}"'))
        for decision in ("matched", "guarded", "unmatched")
    ]
    return "/".join(map(str, counts)) if any(counts) else ""


@contextlib.contextmanager
def gateway(balancer: str, replicas: list[str], affinity: dict[str, float]) -> Iterator[str]:
    pool = {"discovery": {"kind": "static", "urls": replicas}, "balancer": balancer}
    if balancer == "prefix_affinity":
        pool["affinity"] = affinity
    config = {"pools": {"api": pool},
              "routes": [{"prefix": "/v1", "pool": "api", "timeout": 600,
                          "retries": {"attempts": 1, "per_try_timeout": 600}}]}  # fmt: skip
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gateway.yaml"
        path.write_text(json.dumps(config))
        argv = [sys.executable, "-m", "prsm", "gateway", "--config", str(path),
                "--port", "{port}"]  # fmt: skip
        env = {"PRSM_LOG_LEVEL": "warning", "OTEL_TRACES_EXPORTER": "none"}
        with run_server(argv, "/ready", env) as base:
            yield base


def replica_settings(args: argparse.Namespace) -> dict[str, str]:
    """One CPU thread each (3 replicas, 2 cores), `--max-batch` slots of `CONTEXTS` tokens,
    `--prefill-chunk` prompt tokens a step."""
    return {"PRSM_ENGINE__THREADS": "1", "PRSM_ENGINE__MAX_BATCH": str(args.max_batch),
            "PRSM_ENGINE__CONTEXT_SIZE": str(CONTEXTS[args.tool_results]),
            "PRSM_ENGINE__PREFILL_CHUNK": str(args.prefill_chunk),
            "PRSM_ENGINE__MODEL_NAME": "smollm2"}  # fmt: skip


def run(balancer: str, args: argparse.Namespace) -> dict[str, float]:
    env = replica_settings(args)
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(prsm_serve(env)) for _ in range(3)]
        affinity = {"guard_absolute": args.guard_absolute, "guard_relative": args.guard_relative,
                    "cache_tokens": args.max_batch * CONTEXTS[args.tool_results]}  # fmt: skip
        with gateway(balancer, replicas, affinity) as base:
            tally, seconds = asyncio.run(workload(base, args))
            picks = affinity_picks(base)
        counts = replica_counts(replicas)
    first = sorted(tally.first_tokens)
    queries = [q for q, _ in counts]
    return {
        "p50": statistics.median(first),
        "p99": first[min(len(first) - 1, round(0.99 * (len(first) - 1)))],
        "tokens/s": tally.tokens / seconds,
        "cached": sum(c for _, c in counts),
        "busiest": max(queries) / sum(queries) if sum(queries) else 0.0,
        "failed": tally.failed,
        "picks": picks,  # type: ignore[dict-item]
        "whole": len(tally.hit_first_tokens) / tally.later_turns if tally.later_turns else 0.0,
        "hit p50": statistics.median(tally.hit_first_tokens or [0.0]),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--conversations", type=int, default=24)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--skewed", action="store_true")
    parser.add_argument("--balancers", default=",".join(BALANCERS))
    parser.add_argument("--max-batch", type=int, default=8, help="each replica's slots")
    parser.add_argument("--prefill-chunk", type=int, default=EngineSettings().prefill_chunk,
                        help="each replica's prompt tokens a step")  # fmt: skip
    parser.add_argument("--pause", type=float, default=0.0, help="most seconds between turns")
    parser.add_argument("--tool-results", action="store_true",
                        help="each turn carries a tool's result (~80 tokens)")  # fmt: skip
    parser.add_argument("--guard-absolute", type=int, default=AffinitySettings().guard_absolute)
    parser.add_argument("--guard-relative", type=float, default=AffinitySettings().guard_relative)
    args = parser.parse_args()
    results = {name: run(name, args) for name in args.balancers.split(",")}
    shape = "skewed: 3 in 4 share one system prompt" if args.skewed else "even"
    print(f"{args.conversations} conversations x {args.turns} turns, {shape}; 3 replicas, "
          f"{args.max_batch} slots, {args.prefill_chunk} prompt tokens a step")  # fmt: skip
    print(f"prefix_affinity guard: {args.guard_absolute} more in flight and "
          f"{args.guard_relative}x the least busy")  # fmt: skip
    print("| balancer | TTFT p50 (turns >= 2) | p99 | tokens/s | cached prompt tokens "
          "| turns >= 2 finding every earlier turn cached (their TTFT p50) "
          "| busiest replica's share "
          "| picks matched/guarded/unmatched | failed | wall |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['p50']:.2f} s | {r['p99']:.2f} s | {r['tokens/s']:.0f} | "
              f"{r['cached']:.0f} | {r['whole']:.0%} ({r['hit p50']:.2f} s) | "
              f"{r['busiest']:.2f} | {r['picks']} | "
              f"{r['failed']:.0f} | {r['seconds']:.0f} s |")  # fmt: skip
    if "round_robin" in results and "prefix_affinity" in results:
        rr, pa = results["round_robin"], results["prefix_affinity"]
        print(f"prefix_affinity / round_robin: TTFT p50 {pa['p50'] / rr['p50']:.2f}x "
              f"(goal <= 0.5), tokens/s {pa['tokens/s'] / rr['tokens/s']:.2f}x (goal >= 1), "
              f"busiest share {pa['busiest'] * 3:.2f}x fair (goal <= 1.5)")  # fmt: skip


if __name__ == "__main__":
    main()
