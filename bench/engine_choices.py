"""Several answers to one long prompt (OpenAI's `n`): the prompt computed once and its KV cells
copied to the other answers, against every answer computing the prompt itself, in one run.

The embedded engine at default settings (engine.max_batch 8), in process. Each round asks a
new long question (a ~600-token passage, the round's number leading it, so no slot's prompt
cache holds it) for n = 4 answers of 32 tokens, sampled at temperature 0.8, once with copying
(PRSM's behaviour) and once with it turned off (`MIN_SHARED` beyond any prompt); rounds
alternate the two so drift hits both. Reports the median time until all n answers are done and
until the last answer's first token, and their ratios; and, for scale, one answer alone.

    .venv/bin/python bench/engine_choices.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _harness import ROOT  # noqa: F401  (puts the repository on the path)
from prsm.config import EngineSettings
from prsm.engines import batching
from prsm.engines.base import Options
from prsm.engines.llama import LlamaEngine
from prsm.server.choices import generate_choices

PASSAGE = (
    "The lighthouse stood on the last rock of the island, and every night its keeper climbed "
    "the hundred and twelve steps to light the lamp. Ships passing in the dark relied on it, "
    "and the keeper kept a log of every vessel, the weather, and the state of the sea. "
) * 12
CHOICES = 4
MAX_TOKENS = 32


async def timed(engine: LlamaEngine, prompt: str, count: int) -> tuple[float, float]:
    """Seconds until all `count` answers are done, and until the last one's first token."""
    started = time.perf_counter()
    generation = await generate_choices(
        engine, prompt, MAX_TOKENS, Options(temperature=0.8, seed=7), count, None
    )
    done = time.perf_counter() - started
    firsts = [answer.first_token_at or started for answer in generation.answers]
    return done, max(firsts) - started


async def main(rounds: int) -> None:
    engine = await LlamaEngine.load(EngineSettings())
    copying = batching.MIN_SHARED
    results: dict[str, list[tuple[float, float]]] = {"copied": [], "computed": [], "one": []}
    try:
        await timed(engine, "Warm up.", 1)
        for round_number in range(rounds):
            for mode in ("copied", "computed", "one"):
                batching.MIN_SHARED = copying if mode != "computed" else 10**9
                prompt = f"{round_number} {mode}. {PASSAGE} What did the keeper write down?"
                count = 1 if mode == "one" else CHOICES
                results[mode].append(await timed(engine, prompt, count))
    finally:
        batching.MIN_SHARED = copying
        await engine.aclose()
    medians = {
        mode: (statistics.median(d for d, _ in runs), statistics.median(f for _, f in runs))
        for mode, runs in results.items()
    }
    print(f"n = {CHOICES} answers of {MAX_TOKENS} tokens to a ~600-token prompt, {rounds} rounds")
    print(f"{'':28} {'all done (s)':>14} {'last first token (s)':>22}")
    labels = {"copied": "prompt once, cells copied", "computed": "prompt computed n times",
              "one": "one answer alone (n = 1)"}  # fmt: skip
    for mode, (done, first) in medians.items():
        print(f"{labels[mode]:28} {done:14.2f} {first:22.2f}")
    copied, computed = medians["copied"], medians["computed"]
    print(f"copied / computed: all done {copied[0] / computed[0]:.2f}, "
          f"last first token {copied[1] / computed[1]:.2f} (lower is better)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
