"""An engine that asks any OpenAI-compatible server: vLLM, Ollama, llama.cpp's server, OpenAI.

It requests token log-probabilities and turns them into the same confidence as the embedded
engine. A server that cannot return them (llama.cpp's server started without `logits_all`)
is asked again without, and its answers report confidence 0, logged once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import aiohttp

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
from prsm.engines.constraints import wire_format
from prsm.engines.tally import count_generated, uncounted
from prsm.engines.text import StreamedText, TextSink
from prsm.engines.tools import ToolCall, ToolUse, wire_calls
from prsm.errors import EngineUnavailableError, PromptTooLongError

log = logging.getLogger("prsm.engines.openai")


class OpenAIEngine:
    """Chat completions over HTTP. Build with `await OpenAIEngine.load(settings)`."""

    def __init__(self, settings: EngineSettings, model: str) -> None:
        self._settings = settings
        self._model = model
        self._base = settings.openai_base_url.rstrip("/")
        self._logprobs = True
        headers = {}
        if settings.openai_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.openai_api_key.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=settings.timeout_seconds)
        )

    @classmethod
    async def load(cls, settings: EngineSettings) -> OpenAIEngine:
        """Connects and learns the served model's name (unless `model_name` is set)."""
        engine = cls(settings, settings.model_name or "")
        if not engine._model:
            try:
                listing = await engine._request("GET", "/models")
                engine._model = str(listing["data"][0]["id"])
            except (EngineUnavailableError, KeyError, IndexError, TypeError) as exc:
                await engine.aclose()
                raise EngineUnavailableError(
                    f"cannot list models at {engine._base}/models: {exc}"
                ) from None
        return engine

    @property
    def model(self) -> str:
        """The served model's name (from the backend's model list unless `engine.model_name`)."""
        return self._model

    async def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int,
        options: Options = DEFAULT_OPTIONS,
        on_text: TextSink | None = None,
    ) -> Generation:
        """The server's answer, asked for whole: `on_text` gets it in one piece when it is
        complete."""
        messages = conversation(prompt, self._settings.system_prompt)
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [wire_message(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": _either(options.temperature, self._settings.temperature),
            "seed": _either(options.seed, self._settings.seed),
        }
        if options.top_p is not None:
            body["top_p"] = options.top_p
        if options.stop:
            body["stop"] = list(options.stop)
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(options, name):
                body[name] = getattr(options, name)
        if options.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in options.logit_bias}
        if options.response_format.constrained:
            body["response_format"] = wire_format(options.response_format)
        if options.tools.tools:
            body |= wire_tools(options.tools)
        with uncounted():
            generation = await self._complete(body, options.logprobs)
        count_generated(generation.completion_tokens)
        streamed = StreamedText((), on_text)
        streamed.add(generation.text)
        streamed.finish()
        # Asked whole: its first token reaches PRSM with the rest.
        return dataclasses.replace(generation, first_token_at=time.perf_counter())

    async def _complete(self, body: dict[str, Any], asked: int | None) -> Generation:
        """The server's answer, with token logprobs when it gives them (for the confidence,
        and for the caller when `asked` for, with that many alternatives)."""
        if asked is not None or self._logprobs:
            # llama.cpp's server needs both fields.
            wanted = {"logprobs": True, "top_logprobs": max(1, asked or 0)}
            try:
                reply = await self._request("POST", "/chat/completions", body | wanted)
                return self._parse(reply, asked)
            except EngineUnavailableError as exc:
                if "logprob" not in str(exc).lower():
                    raise
                self._logprobs = False
                log.warning("the server returns no token logprobs; confidence will be 0")
        return self._parse(await self._request("POST", "/chat/completions", body), None)

    def _parse(self, reply: dict[str, Any], asked: int | None) -> Generation:
        try:
            choice = reply["choices"][0]
            usage = reply.get("usage") or {}
            message = choice["message"]
            scored = [
                _scored(item, asked or 0)
                for item in ((choice.get("logprobs") or {}).get("content") or [])
            ]
            calls = tuple(
                ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                for c in message.get("tool_calls") or ()
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EngineUnavailableError(f"unexpected chat completion shape: {exc!r}") from None
        logprobs = [t.logprob for t in scored]
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return Generation(
            text="" if calls else (message.get("content") or "").strip(),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", len(logprobs))),
            confidence=min(1.0, max(0.0, confidence)),
            model=str(reply.get("model") or self._model),
            finish_reason="tool_calls" if calls else str(choice.get("finish_reason") or "stop"),
            tool_calls=calls,
            logprobs=tuple(scored) if asked is not None else None,
        )

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        url = self._base + path
        try:
            async with self._session.request(method, url, json=body) as response:
                text = await response.text()
                if response.status >= 400:
                    if response.status == 400 and "context" in text.lower():
                        raise PromptTooLongError(f"the engine refused the prompt: {text[:300]}")
                    raise EngineUnavailableError(
                        f"{method} {url} answered {response.status}: {text[:300]}"
                    )
                data = await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise EngineUnavailableError(f"{method} {url} failed: {exc}") from None
        if not isinstance(data, dict):
            raise EngineUnavailableError(f"{method} {url} did not answer a JSON object")
        return data

    async def count_tokens(self, prompt: Prompt, options: Options = DEFAULT_OPTIONS) -> int:
        """An estimate (a token per four bytes, rounded up, plus four a message): the server's
        tokenizer is not known here."""
        messages = conversation(prompt, self._settings.system_prompt)
        return sum(4 + -(-len(m.content.encode()) // 4) for m in messages)

    async def aclose(self) -> None:
        """Close the HTTP session to the backend."""
        await self._session.close()


def wire_message(message: Message) -> dict[str, Any]:
    """A message as OpenAI's chat completions take it (with its tool calls or call id)."""
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = wire_calls(message.tool_calls)
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def wire_tools(use: ToolUse) -> dict[str, Any]:
    """`tools`, `tool_choice` and `parallel_tool_calls` as OpenAI's chat completions take them."""
    tools = [
        {"type": "function", "function": {"name": t.name, "description": t.description,
                                          "parameters": dict(t.parameters)}}
        for t in use.tools
    ]  # fmt: skip
    named = use.choice not in ("auto", "none", "required")
    choice = {"type": "function", "function": {"name": use.choice}} if named else use.choice
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": use.parallel}


def _scored(item: dict[str, Any], alternatives: int) -> TokenLogprob:
    """One token's log probability as OpenAI gives it, with up to `alternatives` others."""

    def spelled(entry: dict[str, Any]) -> bytes:
        given = entry.get("bytes")
        return bytes(given) if given else str(entry["token"]).encode()

    top = tuple(
        (spelled(other), float(other["logprob"]))
        for other in (item.get("top_logprobs") or [])[:alternatives]
    )
    return TokenLogprob(spelled(item), float(item["logprob"]), top)


def _either(given: float | int | None, configured: float | int) -> float | int:
    return configured if given is None else given
