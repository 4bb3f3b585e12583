"""Continuous batching on one llama.cpp context: many sequences advanced by one decode a step.

One thread owns the context. Every step it:

1. takes newly submitted sequences into free slots (one KV-cache sequence id each), each
   into the free slot whose cached prompt begins most like its own (see below);
2. builds one batch: the next chunk of each new sequence's prompt (at most `prefill_chunk`
   prompt tokens a step in all, so a long prompt never stalls everyone else for long), and the
   last sampled token of every sequence already generating, in slot order (llama.cpp decodes
   a batch in one pass per ascending run of sequence ids);
3. runs `llama_decode` once;
4. samples one token for every sequence whose prompt is done, with that sequence's own
   llama.cpp sampler chain (repeat penalty, then greedy, or top-k/top-p/temperature with its
   seed), and hands it out as it comes;
5. retires finished and cancelled sequences at once: their slot is free for the next step,
   and their KV cells are freed but for those of the prompt and the answer.

A free slot keeps the KV cells of the last prompt it held and of the answer computed after it
(the prompt cache). A new sequence whose prompt begins the same way (the system prompt, the
earlier turns of a conversation and their answers) starts after the shared part instead of
computing it again; the rest of the slot's cells are
dropped then. Each slot's cells are its own (llama.cpp's per-sequence KV streams), so sharing
needs no copying and attention never reads another sequence's cells. Before the first query,
every slot computes the prompt all queries begin with (the system prompt), so the first
`max_batch` queries find it cached as later ones do.

A new sequence whose prompt shares more with a *running* sequence's prompt than with any free
slot's cache (the `n` choices of one request, the same question asked twice at once) does not
compute that part: it waits for the running one to have computed it, then copies those KV
cells into its own slot (`MIN_SHARED` tokens or more beyond what its slot already holds).

The event loop never waits on this thread: results come back through callbacks that the
engine turns into futures and queues with `call_soon_threadsafe`.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prsm.engines.matcher import Constraint
from prsm.errors import EngineError, PromptTooLongError

log = logging.getLogger("prsm.engine")

PENALTY_WINDOW = 64
"""Tokens the repeat penalty looks back over."""
TOP_K = 40
TOP_P = 0.95
MIN_SHARED = 8
"""Prompt tokens a new sequence must share with a running one, beyond what its slot caches,
for it to copy them rather than compute them (a copy moves the whole KV stream)."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one sequence samples its tokens: temperature, top-p, seed, penalties, biases."""

    temperature: float
    repeat_penalty: float
    seed: int
    top_p: float = TOP_P
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token, bias) pairs added to the logits before sampling."""


@dataclass(frozen=True, slots=True)
class Finished:
    """What a sequence produced, handed to its `on_finish`."""

    tokens: list[int]
    prompt_tokens: int
    confidence: float
    finish_reason: str
    cached_tokens: int = 0
    """Prompt tokens found in the prompt cache."""
    first_token_at: float | None = None
    """When the first token was sampled (`time.perf_counter()`), if one was."""
    logprobs: tuple[Scored, ...] | None = None
    """Asked for: each answer token's log probability and the likeliest alternatives."""


Scored = tuple[int, float, tuple[tuple[int, float], ...]]
"""A token, its log probability, and the top tokens there with theirs."""


@dataclass(eq=False)
class Sequence:
    """One generation in the batch. Built by the engine; the decode thread owns its state."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    on_finish: Callable[[Finished | BaseException], None]
    on_token: Callable[[int], None] | None = None
    constraint: Constraint | None = None
    """The grammar the answer is held to (structured output), if any."""
    top_logprobs: int = -1
    """Report each token's log probability with this many alternatives (-1: none)."""
    scored: list[Scored] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # The decode thread's bookkeeping.
    slot: int = -1
    prefilled: int = 0
    answer: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0
    sampled: int = 0
    sampler: Any = None
    pending: int | None = None
    """The token sampled last step, to be decoded this step."""
    output_index: int = -1
    """This step's batch index whose logits this sequence samples from, or -1."""
    cached: int = 0
    """Prompt tokens found in its slot's prompt cache instead of being computed."""
    first_token_at: float | None = None
    leader: Sequence | None = None
    """A running sequence whose prompt's first `lead` tokens this one copies, once computed."""
    lead: int = 0

    @property
    def generating(self) -> bool:
        """Whether the sequence is past its prompt and producing tokens."""
        return self.prefilled == len(self.prompt)


class BatchDecoder:
    """The decode thread and the llama.cpp context it owns.

    `submit` is thread-safe and never blocks; callbacks run on the decode thread.
    """

    def __init__(
        self,
        llama_cpp: Any,
        model: Any,
        *,
        max_batch: int,
        context_per_sequence: int,
        threads: int,
        prefill_chunk: int = 256,
        prompt_cache: bool = True,
        warm_prompt: list[int] | None = None,
        is_end: Callable[[int], bool],
    ) -> None:
        self._lib = llama_cpp
        self.max_batch = max_batch
        self.context_per_sequence = context_per_sequence
        self.prefill_chunk = prefill_chunk
        self._is_end = is_end
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = context_per_sequence * max_batch
        params.n_batch = max(prefill_chunk + max_batch, 64)
        params.n_ubatch = params.n_batch
        params.n_seq_max = max_batch
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise MemoryError("llama.cpp could not create a context for the batch")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._capacity = int(params.n_batch)
        self._batch = llama_cpp.llama_batch_init(self._capacity, 0, 1)
        self._inbox: queue.SimpleQueue[Sequence | None] = queue.SimpleQueue()
        self._free_slots = list(range(max_batch - 1, -1, -1))
        self._prompt_cache = prompt_cache
        self._cached: list[list[int]] = [[] for _ in range(max_batch)]
        """The prompt whose KV cells each slot keeps while free."""
        self._active: list[Sequence] = []
        self.steps = 0
        """Decodes run so far (read by tests to reason in steps rather than seconds)."""
        self._warm_prompt = (warm_prompt or [])[: context_per_sequence - 1] if prompt_cache else []
        self._warmed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prsm-llama-batch", daemon=True)
        self._thread.start()
        self._warmed.wait()

    @property
    def active(self) -> int:
        """Sequences in the batch now."""
        return len(self._active)

    @property
    def kv_cells(self) -> int:
        """KV-cache cells the context has: `max_batch` streams of `context_per_sequence`."""
        return self.max_batch * self.context_per_sequence

    def kv_cells_used(self) -> int:
        """KV-cache cells the sequences in the batch hold now: their prompt computed so far
        and their answer (read from any thread: a gauge's reading, not a count to rely on)."""
        return sum(s.prefilled + len(s.answer) for s in list(self._active))

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence; the decode loop takes it into the batch when a slot is free."""
        self._inbox.put(sequence)

    def slots_holding_cells(self) -> list[int]:
        """KV-cache sequence ids holding cells beyond their cached prompt; empty when idle
        (for tests and checks; call it while nothing is running)."""
        memory, lib = self._memory, self._lib
        return [
            slot
            for slot in range(self.max_batch)
            if lib.llama_memory_seq_pos_max(memory, slot) != len(self._cached[slot]) - 1
        ]

    def cached_prompt_tokens(self) -> int:
        """Prompt tokens the free slots keep cached (call it while nothing is running)."""
        return sum(len(prompt) for prompt in self._cached)

    def close(self) -> None:
        """Stop the thread (sequences still running end as cancelled) and free the context."""
        self._inbox.put(None)
        self._thread.join()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)

    # --- the decode thread ---

    def _warm(self, prompt: list[int]) -> None:
        """Compute `prompt` into every slot's cache, in as few decodes as the batch allows.
        On the decode thread, like every decode: warmed from the loading thread instead, the
        steps after ran about 30 % slower (llama.cpp's CPU threads belong to the caller)."""
        n = 0
        for slot in range(self.max_batch if prompt else 0):
            for position, token in enumerate(prompt):
                self._put(n, token, position, slot, output=False)
                n += 1
                if n == self._capacity:
                    self._decode(n)
                    n = 0
            self._cached[slot] = list(prompt)
        if n:
            self._decode(n)

    def _decode(self, tokens: int) -> None:
        self._batch.n_tokens = tokens
        if self._lib.llama_decode(self._ctx, self._batch) != 0:
            raise RuntimeError("llama_decode failed (KV cache full?)")

    def _run(self) -> None:
        try:
            self._warm(self._warm_prompt)
        except Exception:  # a cold cache is slower, not wrong
            log.exception("could not compute the system prompt into the prompt cache")
            self._lib.llama_memory_clear(self._memory, True)
            self._cached = [[] for _ in range(self.max_batch)]
        finally:
            self._warmed.set()
        while True:
            self._retire_cancelled()  # before taking new ones: a freed slot is filled at once
            if not self._take_new(block=not self._active):
                break
            if not self._active:
                continue
            try:
                self._close_gaps()
                self._step()
            except Exception as exc:  # a failed decode fails the sequences in it, not the thread
                log.exception("batch decode failed")
                for sequence in list(self._active):
                    self._retire(sequence, exc)
        for sequence in list(self._active):
            sequence.cancelled.set()
            self._retire(sequence, None)

    def _take_new(self, *, block: bool) -> bool:
        """Move submitted sequences into free slots; False once closed."""
        while self._free_slots:
            try:
                sequence = self._inbox.get(block=block)
            except queue.Empty:
                return True
            if sequence is None:
                return False
            block = False
            self._start(sequence)
        return True

    def _start(self, sequence: Sequence) -> None:
        if sequence.cancelled.is_set():  # gone before it started
            sequence.on_finish(Finished([], len(sequence.prompt), 0.0, "cancelled"))
            return
        if len(sequence.prompt) >= self.context_per_sequence:
            window, prompt = self.context_per_sequence, len(sequence.prompt)
            sequence.on_finish(PromptTooLongError(window=window, prompt_tokens=prompt))
            return
        self._take_slot(sequence)
        sequence.sampler = self._sampler(sequence.sampling)
        self._active.append(sequence)
        # In slot order: with a KV stream per sequence, llama.cpp decodes a batch in one pass
        # per run of ascending consecutive sequence ids; out of order, a step took twice as long.
        self._active.sort(key=lambda running: running.slot)

    def _take_slot(self, sequence: Sequence) -> None:
        """Give `sequence` the free slot whose cached prompt shares most of its own (all but
        its last token at most: that one is decoded for the logits of its first answer), the
        lowest of equals, so running sequences stay on few runs of consecutive ids; drop that
        slot's cells past the shared part."""
        limit = len(sequence.prompt) - 1
        shares = {
            free: shared_length(self._cached[free], sequence.prompt, limit)
            for free in self._free_slots
        }
        slot = min(shares, key=lambda free: (-shares[free], free))
        self._free_slots.remove(slot)
        shared = shares[slot]
        if not self._lib.llama_memory_seq_rm(self._memory, slot, shared, -1):
            self._lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
            shared = 0
        self._cached[slot] = []
        sequence.slot = slot
        sequence.prefilled = sequence.cached = shared
        self._choose_leader(sequence)

    def _choose_leader(self, sequence: Sequence) -> None:
        """The running sequence whose prompt shares the most with `sequence`'s, if that is
        `MIN_SHARED` tokens more than its slot already holds: its cells will be copied."""
        limit = len(sequence.prompt) - 1
        for running in self._active:
            share = shared_length(running.prompt, sequence.prompt, limit)
            if share >= max(sequence.lead, sequence.prefilled + MIN_SHARED):
                sequence.leader, sequence.lead = running, share

    def _copy_from_leader(self, sequence: Sequence) -> None:
        """Once its leader has computed the shared prompt, copy those cells into `sequence`'s
        slot; if the leader ended first, compute them after all."""
        leader = sequence.leader
        if leader is None:
            return
        running = leader in self._active
        if running and leader.prefilled < sequence.lead:  # still computing them
            return
        if running:
            lib, memory = self._lib, self._memory
            lib.llama_memory_seq_cp(memory, leader.slot, sequence.slot, -1, -1)
            lib.llama_memory_seq_rm(memory, sequence.slot, sequence.lead, -1)
            sequence.prefilled = sequence.cached = sequence.lead
        sequence.leader = None

    def _close_gaps(self) -> None:
        """With no query waiting for a slot, move the running sequence in the highest slot down
        into a free slot between the running ones, until their ids are one consecutive run:
        llama.cpp decodes one pass per run, and a gap cost a quarter of a step at 7 of 8
        sequences. The move copies the sequence's KV cells over the free slot's prompt cache,
        so a slot whose cache would spare a later query a prefill chunk or more beyond the
        system prompt (a conversation's earlier turns: its next turn finds them there) is left
        a gap; the next query to come takes the lowest free slot and closes it."""
        lib, memory = self._lib, self._memory
        worth_keeping = len(self._warm_prompt) + self.prefill_chunk
        while self._free_slots:
            top = self._active[-1]
            gaps = [
                free
                for free in self._free_slots
                if self._active[0].slot < free < top.slot
                and len(self._cached[free]) < worth_keeping
            ]
            if not gaps:
                return
            slot = min(gaps)
            lib.llama_memory_seq_rm(memory, slot, -1, -1)
            lib.llama_memory_seq_cp(memory, top.slot, slot, -1, -1)
            lib.llama_memory_seq_rm(memory, top.slot, -1, -1)
            self._free_slots.remove(slot)
            self._free_slots.append(top.slot)
            self._cached[slot], self._cached[top.slot] = [], []
            top.slot = slot
            self._active.sort(key=lambda running: running.slot)

    def _sampler(self, sampling: SamplingParams) -> Any:
        return sampler_chain(self._lib, self.n_vocab, sampling)

    def _retire_cancelled(self) -> None:
        for sequence in [s for s in self._active if s.cancelled.is_set()]:
            self._retire(sequence, None)

    def _step(self) -> None:
        self._decode(self._fill_batch())
        self.steps += 1
        for sequence in list(self._active):
            if sequence.output_index >= 0:
                self._advance(sequence)

    def _fill_batch(self) -> int:
        """One token of every generating sequence and the next prompt chunks, in slot order
        (the batch holds `prefill_chunk + max_batch` tokens, so everything fits); returns the
        batch's token count."""
        n = 0
        prefill_budget = self.prefill_chunk
        for sequence in self._active:
            self._copy_from_leader(sequence)
        for sequence in self._active:
            sequence.output_index = -1
            if sequence.leader is not None:  # waiting for the cells it will copy
                continue
            if sequence.generating:
                assert sequence.pending is not None
                position = len(sequence.prompt) + len(sequence.answer) - 1
                self._put(n, sequence.pending, position, sequence.slot, output=True)
                sequence.output_index = n
                n += 1
                continue
            start = sequence.prefilled
            stop = min(len(sequence.prompt), start + prefill_budget)
            for position in range(start, stop):
                last = position == len(sequence.prompt) - 1
                self._put(n, sequence.prompt[position], position, sequence.slot, output=last)
                if last:
                    sequence.output_index = n
                n += 1
            prefill_budget -= stop - start
            sequence.prefilled = stop
        return n

    def _put(self, index: int, token: int, position: int, slot: int, *, output: bool) -> None:
        batch = self._batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = slot
        batch.logits[index] = output

    def _advance(self, sequence: Sequence) -> None:
        index, constraint = sequence.output_index, sequence.constraint
        logits = np.ctypeslib.as_array(
            self._lib.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,)
        )
        log_total = _log_sum_exp(logits)  # the model's own distribution, before any mask
        top = _top(logits, log_total, sequence.top_logprobs)
        if constraint is not None:
            constraint.restrict(logits)
        token = int(self._lib.llama_sampler_sample(sequence.sampler, self._ctx, index))
        if sequence.first_token_at is None:
            sequence.first_token_at = time.perf_counter()
        logprob = float(logits[token]) - log_total
        sequence.logprob_sum += logprob
        sequence.sampled += 1
        if self._is_end(token):
            self._retire(sequence, "stop")
            return
        if top is not None:
            sequence.scored.append((token, logprob, top))
        if constraint is not None and not constraint.take(token):
            self._retire(sequence, EngineError(f"the answer left its format: {constraint.error}"))
            return
        sequence.answer.append(token)
        sequence.pending = token
        if sequence.on_token is not None:
            sequence.on_token(token)
        room = self.context_per_sequence - len(sequence.prompt)
        if sequence.cancelled.is_set():
            self._retire(sequence, None)
        elif constraint is not None and constraint.complete:
            self._retire(sequence, "stop")
        elif len(sequence.answer) >= min(sequence.max_tokens, room):
            self._retire(sequence, "length")

    def _free_cells(self, sequence: Sequence) -> None:
        """Free `sequence`'s KV cells, keeping those of its prompt and of its answer as its
        slot's prompt cache: a conversation's next turn begins with both."""
        lib, memory, slot = self._lib, self._memory, sequence.slot
        computed = sequence.prompt[: sequence.prefilled]
        if sequence.generating:
            computed += sequence.answer
        # The cells computed: the last token sampled (ended by length) was never decoded.
        cells = lib.llama_memory_seq_pos_max(memory, slot) + 1
        kept = min(cells, len(computed)) if self._prompt_cache else 0
        if kept and lib.llama_memory_seq_rm(memory, slot, kept, -1):
            self._cached[slot] = computed[:kept]
        else:
            lib.llama_memory_seq_rm(memory, slot, -1, -1)

    def _retire(self, sequence: Sequence, outcome: str | BaseException | None) -> None:
        """Take `sequence` out of the batch, free its KV cells and slot, and report it;
        `outcome` is its finish reason, an error, or None for cancelled."""
        self._active.remove(sequence)
        self._free_cells(sequence)
        self._lib.llama_sampler_free(sequence.sampler)
        self._free_slots.append(sequence.slot)
        if isinstance(outcome, BaseException):
            sequence.on_finish(outcome)
            return
        confidence = math.exp(sequence.logprob_sum / sequence.sampled) if sequence.sampled else 0.0
        sequence.on_finish(
            Finished(
                tokens=sequence.answer,
                prompt_tokens=len(sequence.prompt),
                confidence=confidence,
                finish_reason=outcome or "cancelled",
                cached_tokens=sequence.cached,
                first_token_at=sequence.first_token_at,
                logprobs=tuple(sequence.scored) if sequence.top_logprobs >= 0 else None,
            )
        )


def sampler_chain(lib: Any, n_vocab: int, sampling: SamplingParams) -> Any:
    """llama.cpp's sampler chain for one sequence: logit biases, the penalties over the last
    `PENALTY_WINDOW` tokens, then greedy, or top-k / top-p / temperature with the seed."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if sampling.logit_bias:
        biases = (lib.llama_logit_bias * len(sampling.logit_bias))(*sampling.logit_bias)
        lib.llama_sampler_chain_add(
            chain, lib.llama_sampler_init_logit_bias(n_vocab, len(biases), biases)
        )
    penalties = (sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty)
    if penalties != (1.0, 0.0, 0.0):
        lib.llama_sampler_chain_add(
            chain, lib.llama_sampler_init_penalties(n_vocab, PENALTY_WINDOW, *penalties)
        )
    if sampling.temperature <= 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
    else:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(TOP_K))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(sampling.temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(sampling.seed))
    return chain


def _top(logits: np.ndarray, log_total: float, count: int) -> tuple[tuple[int, float], ...] | None:
    """The `count` likeliest tokens and their log probabilities (None when not asked)."""
    if count < 0:
        return None
    if count == 0:
        return ()
    best = np.argpartition(logits, -count)[-count:]
    best = best[np.argsort(-logits[best], kind="stable")]
    return tuple((int(t), float(logits[t]) - log_total) for t in best)


def _log_sum_exp(logits: np.ndarray) -> float:
    peak = float(logits.max())
    return peak + math.log(float(np.exp(logits - peak).sum()))


def shared_length(cached: list[int], prompt: list[int], limit: int | None = None) -> int:
    """How many leading tokens `prompt` shares with `cached`, at most `limit`."""
    if limit is None:
        limit = min(len(cached), len(prompt))
    for shared, (ours, theirs) in enumerate(zip(cached, prompt, strict=False)):
        if shared == limit or ours != theirs:
            return shared
    return max(0, min(len(cached), len(prompt), limit))
