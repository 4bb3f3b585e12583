"""Continuous batching with the real model: answers inside a batch equal answers alone,
sequences come and go at every step, cancellation frees a slot at once, a long prompt is
prefilled in chunks while the others keep generating, and a prompt beginning like a cached one
computes only the rest. Counted in decode steps, not seconds."""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Iterator

import pytest

from prsm.config import EngineSettings
from prsm.engines.base import Message, conversation
from prsm.engines.batching import BatchDecoder, Finished, SamplingParams, Sequence
from prsm.engines.llama import LlamaEngine, LoadedModel, default_model_path, load_model
from prsm.errors import PromptTooLongError
from tests.support import until, wait_for

PROMPTS = [
    "What is the capital of France?",
    "Write a poem about the sea.",
    "Count to five.",
    "Name a colour.",
    "Why is the sky blue?",
    "Give me a recipe for bread.",
    "What is two plus two?",
    "Describe a cat in one sentence.",
]
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.1, seed=0)


@pytest.fixture(scope="module")
def batch_engine() -> Iterator[LlamaEngine]:
    """A model decoding up to eight queries together."""
    engine = LlamaEngine._load_sync(EngineSettings(max_batch=8))
    yield engine
    asyncio.run(engine.aclose())


class Recorder:
    """A sequence's callbacks: the decode step of every token, and how it finished."""

    def __init__(self, decoder: BatchDecoder) -> None:
        self.decoder = decoder
        self.token_steps: list[int] = []
        self.outcome: Finished | BaseException | None = None
        self.done = threading.Event()

    def on_token(self, token: int) -> None:
        self.token_steps.append(self.decoder.steps)

    def on_finish(self, outcome: Finished | BaseException) -> None:
        self.outcome = outcome
        self.done.set()

    def finished(self) -> Finished:
        assert self.done.wait(60), "the sequence never finished"
        assert isinstance(self.outcome, Finished)
        return self.outcome


def tokens_of(model: LoadedModel, prompt: str) -> list[int]:
    return model.prompt_tokens(conversation(prompt, model.system_prompt))


def submit(model: LoadedModel, prompt: str, max_tokens: int) -> tuple[Sequence, Recorder]:
    recorder = Recorder(model.decoder)
    sequence = Sequence(
        tokens_of(model, prompt),
        max_tokens,
        GREEDY,
        on_finish=recorder.on_finish,
        on_token=recorder.on_token,
    )
    model.decoder.submit(sequence)
    return sequence, recorder


async def test_greedy_answers_in_a_full_batch_equal_answers_alone(
    batch_engine: LlamaEngine,
) -> None:
    """Eight different prompts decoded together give, token for token, what each gives alone
    (and the same confidence)."""
    alone = [await batch_engine.generate(p, max_tokens=48) for p in PROMPTS]
    together = await asyncio.gather(*(batch_engine.generate(p, max_tokens=48) for p in PROMPTS))
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.completion_tokens for g in together] == [g.completion_tokens for g in alone]
    for one, other in zip(together, alone, strict=True):
        assert one.confidence == pytest.approx(other.confidence, rel=1e-6)


async def test_sequences_of_different_lengths_get_exactly_their_own_tokens(
    batch_engine: LlamaEngine,
) -> None:
    """Limits of 1 to 40 tokens: each sequence leaves the batch at its own step with its own
    answer, and the others go on unchanged."""
    limits = [1, 3, 7, 12, 20, 28, 34, 40]
    requests = list(zip(PROMPTS, limits, strict=True))
    alone = [await batch_engine.generate(p, max_tokens=n) for p, n in requests]
    together = await asyncio.gather(*(batch_engine.generate(p, max_tokens=n) for p, n in requests))
    for one, other, limit in zip(together, alone, limits, strict=True):
        assert one.text == other.text
        assert one.completion_tokens == other.completion_tokens <= limit
        assert one.finish_reason == other.finish_reason


async def test_the_kv_cells_in_use_are_the_running_queries_prompts_and_answers(
    batch_engine: LlamaEngine,
) -> None:
    """Idle, none of the 8 x 2048 cells is in use (a free slot's cached prompt is the next
    query's to take); while a query generates, its prompt's cells and more as its answer
    grows; once it is done, none again."""
    assert batch_engine.kv_cells() == (0, 8 * 2048)
    seen: list[int] = []
    answer = await batch_engine.generate(
        PROMPTS[1], max_tokens=24, on_text=lambda _: seen.append(batch_engine.kv_cells()[0])
    )
    running = [cells for cells in seen if cells]  # the last text may come after it ended
    assert len(running) >= len(seen) - 1
    assert min(running) >= answer.prompt_tokens
    assert max(running) > min(running)
    assert max(running) <= answer.prompt_tokens + answer.completion_tokens
    wait_for(lambda: batch_engine.kv_cells()[0] == 0, 5)


def test_a_cancelled_sequence_frees_its_slot_for_the_next_at_once() -> None:
    """One slot: a long generation is cancelled; the query waiting behind it gets its first
    token within two decode steps, and the cancelled one reports `cancelled`."""
    model = load_model(default_model_path(), EngineSettings(max_batch=1))
    try:
        long_one, long_recorder = submit(model, "Write a long story about a dragon.", 2000)
        wait_for(lambda: len(long_recorder.token_steps) >= 3, 30)
        _, next_recorder = submit(model, PROMPTS[0], 8)
        wait_for(lambda: len(long_recorder.token_steps) >= 6, 30)
        assert not next_recorder.token_steps  # it waits: the only slot is taken
        long_one.cancelled.set()
        cancelled_at = model.decoder.steps
        assert long_recorder.finished().finish_reason == "cancelled"
        assert next_recorder.finished().tokens
        assert next_recorder.token_steps[0] <= cancelled_at + 2
    finally:
        model.close()


def test_a_long_prompt_is_prefilled_in_chunks_while_others_keep_generating() -> None:
    """A ~1500-token prompt arrives while a sequence generates: the prompt is taken
    `prefill_chunk` tokens a step, and the running sequence gets a token at every one of those
    steps."""
    model = load_model(default_model_path(), EngineSettings(max_batch=2, prefill_chunk=128))
    try:
        _, running = submit(model, "Write a long story about a dragon.", 60)
        wait_for(lambda: len(running.token_steps) >= 2, 30)
        long_prompt = "Summarise this text. " + "The river flows to the sea. " * 200
        long_sequence, long_recorder = submit(model, long_prompt, 4)
        joined_at = model.decoder.steps
        computed = len(long_sequence.prompt) - long_recorder.finished().cached_tokens
        first_long_token = long_recorder.token_steps[0]
        prompt_steps = first_long_token - joined_at
        assert computed > 1400
        assert math.ceil(computed / 128) <= prompt_steps <= math.ceil(computed / 128) + 1
        during = [s for s in running.token_steps if joined_at < s <= first_long_token]
        assert len(during) >= prompt_steps - 1  # a token at (nearly) every prefill step
        assert running.finished().tokens
    finally:
        model.close()


async def test_a_prompt_too_long_is_refused_while_the_others_keep_going() -> None:
    """A prompt that does not fit one sequence's context is refused (422 at the API) while a
    running query goes on to exactly the answer it gives alone."""
    engine = await LlamaEngine.load(EngineSettings(max_batch=2, context_size=256))
    try:
        alone = await engine.generate(PROMPTS[1], max_tokens=40)
        running = asyncio.create_task(engine.generate(PROMPTS[1], max_tokens=40))
        await until(lambda: engine.active == 1)
        with pytest.raises(PromptTooLongError, match="maximum context length is 256 tokens"):
            await engine.generate("word " * 400, max_tokens=8)
        assert (await running).text == alone.text
    finally:
        await engine.aclose()


async def test_two_hundred_mixed_queries_with_cancellations_leave_nothing_behind() -> None:
    """200 queries of 1 to 12 tokens, a quarter cancelled at random moments (seeded): every
    other one is answered within its limit, and at the end no sequence runs and no KV cell is
    held."""
    engine = await LlamaEngine.load(EngineSettings(max_batch=8, context_size=256))
    chance = random.Random(7)
    try:
        tasks = []
        for i in range(200):
            limit = chance.randint(1, 12)
            tasks.append(
                (limit, asyncio.create_task(engine.generate(PROMPTS[i % 8], max_tokens=limit)))
            )
            if chance.random() < 0.25:
                asyncio.get_running_loop().call_later(chance.random() * 0.3, tasks[-1][1].cancel)
        results = await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        answered = [(limit, r) for (limit, _), r in zip(tasks, results, strict=True)
                    if not isinstance(r, BaseException)]  # fmt: skip
        assert 0 < cancelled < 100
        assert len(answered) + cancelled == 200
        assert all(0 < g.completion_tokens <= limit for limit, g in answered)
        await until(lambda: engine.active == 0)
        assert engine.slots_holding_cells() == []
    finally:
        await engine.aclose()


def test_a_prompt_beginning_like_the_cached_one_computes_only_the_rest() -> None:
    """One slot, warmed at load with the system prompt: a first question and the next take
    exactly the shared tokens from the prompt cache and answer as a model without the cache
    does; the same prompt again computes only its last token; idle, the slot keeps the cells
    of the prompt and of the answer computed after it (all but the last token sampled)."""
    cached = load_model(default_model_path(), EngineSettings(max_batch=1))
    plain = load_model(default_model_path(), EngineSettings(max_batch=1, prompt_cache=False))
    try:
        first, second = tokens_of(cached, PROMPTS[0]), tokens_of(cached, PROMPTS[4])
        shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
        assert 10 < shared < len(second) - 3  # the system prompt, not the question
        assert cached.decoder.cached_prompt_tokens() == shared
        assert submit(cached, PROMPTS[0], 16)[1].finished().cached_tokens == shared
        with_cache = submit(cached, PROMPTS[4], 32)[1].finished()
        without = submit(plain, PROMPTS[4], 32)[1].finished()
        assert with_cache.cached_tokens == shared
        assert without.cached_tokens == 0
        assert with_cache.tokens == without.tokens
        assert with_cache.confidence == pytest.approx(without.confidence, rel=1e-6)
        again = submit(cached, PROMPTS[4], 32)[1].finished()
        assert again.cached_tokens == len(second) - 1
        assert again.tokens == without.tokens
        assert cached.decoder.slots_holding_cells() == []
        assert again.finish_reason == "length"
        assert cached.decoder.cached_prompt_tokens() == len(second) + len(again.tokens) - 1
        assert plain.decoder.slots_holding_cells() == []
        assert plain.decoder.cached_prompt_tokens() == 0
    finally:
        cached.close()
        plain.close()


async def test_each_conversation_continues_in_the_slot_that_holds_its_earlier_turns() -> None:
    """Two conversations answered together in two slots; each next turn finds its own earlier
    turns in the prompt cache (the whole first prompt and the answer, computed as it was
    generated), whichever order they come back in, and answers as without the cache."""
    engine = await LlamaEngine.load(EngineSettings(max_batch=2))
    plain = await LlamaEngine.load(EngineSettings(max_batch=1, prompt_cache=False))
    try:
        questions = [PROMPTS[0], PROMPTS[4]]
        firsts = await asyncio.gather(*(engine.generate(q, max_tokens=24) for q in questions))
        system = Message("system", EngineSettings().system_prompt)
        for question, first in reversed(list(zip(questions, firsts, strict=True))):
            turns = [system, Message("user", question), Message("assistant", first.text),
                     Message("user", "Say that again in other words.")]  # fmt: skip
            following = await engine.generate(turns, max_tokens=8)
            assert following.cached_tokens >= first.prompt_tokens + first.completion_tokens - 2
            assert following.prompt_tokens > first.prompt_tokens + first.completion_tokens
            assert following.text == (await plain.generate(turns, max_tokens=8)).text
    finally:
        await engine.aclose()
        await plain.aclose()


def test_the_batch_is_in_slot_order_however_sequences_come_and_go() -> None:
    """Sequences of different lengths leave slots free in any order and new ones take them:
    every generating step's batch still lists its sequence ids in ascending order (llama.cpp
    decodes a batch in one pass per ascending run of ids, so disorder costs whole passes)."""
    model = load_model(default_model_path(), EngineSettings(max_batch=4))
    batch = model.decoder._batch
    orders: list[list[int]] = []

    def record(_token: int) -> None:  # on the decode thread, between two steps
        order = [batch.seq_id[i][0] for i in range(batch.n_tokens)]
        if len(set(order)) == len(order):  # one token each: no prompt prefilled in this step
            orders.append(order)

    try:
        recorders = []
        for round_, limits in enumerate(([24, 3, 12, 6], [5, 20, 2, 9], [7, 1, 15, 4])):
            for i, limit in enumerate(limits):
                sequence, recorder = submit(model, PROMPTS[(i + round_) % 8], limit)
                sequence.on_token = record
                recorders.append(recorder)
        for recorder in recorders:
            recorder.finished()
    finally:
        model.close()
    assert len(orders) > 20
    assert all(order == sorted(order) for order in orders)
    assert any(order != list(range(len(order))) for order in orders)  # slots were reused


def test_new_questions_take_the_lowest_free_slots() -> None:
    """Every slot holds a cached prompt; new questions that share only the system prompt with
    all of them take the lowest slots, keeping the batch's sequence ids consecutive."""
    model = load_model(default_model_path(), EngineSettings(max_batch=6))
    try:
        warm = [submit(model, prompt, 2) for prompt in PROMPTS[:6]]
        for _, recorder in warm:
            recorder.finished()
        new = [submit(model, f"{i}: What is {i} times three?", 2) for i in range(3)]
        for _, recorder in new:
            recorder.finished()
    finally:
        model.close()
    assert sorted(sequence.slot for sequence, _ in warm) == list(range(6))
    assert [sequence.slot for sequence, _ in new] == [0, 1, 2]


def test_every_slot_starts_with_the_system_prompt_computed() -> None:
    """Loaded, each slot already holds the prompt all queries begin with, so the first queries
    answered together each take it from the cache instead of computing it."""
    model = load_model(default_model_path(), EngineSettings(max_batch=3))
    try:
        prompts = [tokens_of(model, question) for question in PROMPTS[:3]]
        shared = next(i for i, (a, b) in enumerate(zip(*prompts[:2], strict=False)) if a != b)
        assert model.decoder.cached_prompt_tokens() == 3 * shared
        firsts = [submit(model, question, 4)[1] for question in PROMPTS[:3]]
        assert [recorder.finished().cached_tokens for recorder in firsts] == [shared] * 3
    finally:
        model.close()


def test_a_long_conversation_finishing_mid_batch_keeps_its_cache() -> None:
    """Three long prompts (300+ tokens past the system prompt) together; the middle one ends
    first. Its slot stays a gap rather than take the top sequence (whose cells would overwrite
    its prompt cache), so the conversation's next turn finds all of its prompt cached."""
    model = load_model(default_model_path(), EngineSettings(max_batch=3))
    try:
        long_ones = [f"Conversation {n}: tell me about ships and the sea. " * 30 for n in range(3)]
        limits = [40, 2, 40]
        running = [submit(model, p, n) for p, n in zip(long_ones, limits, strict=True)]
        asked = [recorder.finished() for _, recorder in running]
        middle = running[1][0]
        assert middle.slot == 1
        next_turn = middle.prompt + tokens_of(model, "And the rivers?")[-8:]
        recorder = Recorder(model.decoder)
        model.decoder.submit(Sequence(next_turn, 2, GREEDY, on_finish=recorder.on_finish))
        assert recorder.finished().cached_tokens == len(middle.prompt)
    finally:
        model.close()
    assert [outcome.finish_reason for outcome in asked] == ["length"] * 3


def test_a_sequence_moves_down_into_a_gap_and_keeps_its_answer() -> None:
    """Sequences in the middle of the batch finish first: the ones above move down into the
    freed slots, so every step decodes one consecutive run of ids (one pass), and each moved
    sequence's answer is, token for token, its answer alone."""
    model = load_model(default_model_path(), EngineSettings(max_batch=8))
    batch = model.decoder._batch
    runs: dict[int, list[int]] = {}

    def record(_token: int) -> None:  # on the decode thread, between two steps
        runs[model.decoder.steps] = sorted(batch.seq_id[i][0] for i in range(batch.n_tokens))

    limits = [40, 3, 40, 7, 40, 1, 40, 12]
    try:
        requests = list(zip(PROMPTS, limits, strict=True))
        alone = [submit(model, p, n)[1].finished().tokens for p, n in requests]
        together = [submit(model, p, n) for p, n in requests]
        for sequence, _ in together:
            sequence.on_token = record
        answers = [recorder.finished().tokens for _, recorder in together]
    finally:
        model.close()
    assert answers == alone
    assert any(sequence.slot != i for i, (sequence, _) in enumerate(together))  # moved
    generating = [run for run in runs.values() if len(set(run)) == len(run)]
    assert len(generating) > 20
    assert all(run == list(range(run[0], run[0] + len(run))) for run in generating)


def test_sequences_sharing_a_running_prompt_copy_its_cells_and_answer_the_same() -> None:
    """The same long question four times at once, sampled with four seeds (a request's `n`
    choices): the first computes the prompt, the others copy its cells (their cached tokens
    are all but the last), and each answer is, token for token, its seed's answer computed
    alone, one after another."""
    question = " ".join(PROMPTS) + " Answer only the last question."
    shared = load_model(default_model_path(), EngineSettings(max_batch=4))
    plain = load_model(default_model_path(), EngineSettings(max_batch=1))

    def sampled(model: LoadedModel, seed: int) -> tuple[Sequence, Recorder]:
        recorder = Recorder(model.decoder)
        sampling = SamplingParams(temperature=0.8, repeat_penalty=1.1, seed=seed)
        sequence = Sequence(tokens_of(model, question), 24, sampling, recorder.on_finish)
        model.decoder.submit(sequence)
        return sequence, recorder

    try:
        together = [sampled(shared, seed)[1] for seed in range(4)]
        answers = [recorder.finished() for recorder in together]
        alone = [sampled(plain, seed)[1].finished().tokens for seed in range(4)]
        prompt = len(tokens_of(shared, question))
        assert shared.decoder.slots_holding_cells() == []
    finally:
        shared.close()
        plain.close()
    assert [answer.tokens for answer in answers] == alone
    assert len(set(map(tuple, alone))) > 1  # the seeds do differ
    assert answers[0].cached_tokens < prompt - 40  # the system prompt only
    assert [answer.cached_tokens for answer in answers[1:]] == [prompt - 1] * 3
