"""The translation both ways: an OpenAI request into the `Ask` every wire format becomes,
and a `Generation` into OpenAI's chat completion or text completion."""

from __future__ import annotations

import itertools
import time
from typing import Any

from prsm.engines import Generation
from prsm.engines.base import fingerprint
from prsm.engines.tools import wire_calls
from prsm.server.auth import Principal
from prsm.server.openai.wire import ChatRequest, CompletionRequest, refuse_unread_parts
from prsm.server.service import Ask


def chat_ask(body: ChatRequest, principal: Principal) -> Ask:
    """The query a chat completions request asks (its schemas are compiled, or refused, by
    the service once the cheap checks passed)."""
    refuse_unread_parts("messages", (message.content for message in body.messages))
    options = body.options()
    return Ask(
        prompt=tuple(m.message() for m in body.messages),
        user_id=body.user or principal.key_id,
        max_tokens=body.answer_tokens(),
        model=body.model,
        options=options,
        operation="chat",
        schema_param="response_format.json_schema.schema",
        wire=body.model_dump(mode="json", exclude_none=True, by_alias=True),
        choices=body.n or 1,
        seeded=body.seed is not None,
    )


def completion_ask(body: CompletionRequest, principal: Principal) -> Ask:
    """The query a completions request asks (one chat turn: the served model is an instruct
    model)."""
    return Ask(
        prompt=body.prompt if isinstance(body.prompt, str) else body.prompt[0],
        user_id=body.user or principal.key_id,
        max_tokens=body.max_tokens or 16,  # OpenAI's default for completions
        model=body.model,
        options=body.options(),
        operation="text_completion",
        wire=body.model_dump(mode="json", exclude_none=True),
        choices=body.n or 1,
        seeded=body.seed is not None,
    )


# -- responses ---------------------------------------------------------------------------------


def usage(generation: Generation) -> dict[str, Any]:
    """OpenAI's `usage` object for a generation."""
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.total_tokens,
        "prompt_tokens_details": {"cached_tokens": generation.cached_tokens},
    }


def finish_reason(generation: Generation) -> str:
    """OpenAI's `finish_reason` for a generation."""
    if generation.finish_reason in ("length", "tool_calls"):
        return generation.finish_reason
    return "stop"


def chat_logprobs(generation: Generation) -> dict[str, Any] | None:
    """OpenAI's chat `logprobs`: each token, its log probability and bytes, its alternatives."""
    if generation.logprobs is None:
        return None

    def spelled(token: bytes, logprob: float) -> dict[str, Any]:
        return {"token": _readable(token), "logprob": logprob, "bytes": list(token)}

    content = [
        spelled(t.token, t.logprob) | {"top_logprobs": [spelled(b, lp) for b, lp in t.top]}
        for t in generation.logprobs
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(generation: Generation) -> dict[str, Any] | None:
    """The completions format's `logprobs`: the tokens, their log probabilities, the likeliest
    tokens at each, and where each token starts in the text."""
    if generation.logprobs is None:
        return None
    scored = generation.logprobs
    tokens = [_readable(t.token) for t in scored]
    starts = list(itertools.accumulate((len(token) for token in tokens[:-1]), initial=0))
    return {
        "tokens": tokens,
        "token_logprobs": [t.logprob for t in scored],
        "top_logprobs": [{_readable(b): lp for b, lp in t.top} for t in scored],
        "text_offset": starts if tokens else [],
    }


def _readable(token: bytes) -> str:
    return token.decode("utf-8", errors="replace")


def chat_completion(generation: Generation, cid: str) -> dict[str, Any]:
    """A generation as OpenAI's `chat.completion`: a choice per answer."""
    choices = [_chat_choice(answer, index) for index, answer in enumerate(generation.answers)]
    return envelope("chat.completion", "chatcmpl", generation.model, cid) | {
        "choices": choices,
        "usage": usage(generation),
        "prsm": {"confidence": generation.confidence, "correlationId": cid},
    }


def _chat_choice(answer: Generation, index: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_calls:
        message |= {"content": None, "tool_calls": wire_calls(answer.tool_calls)}
    return {"index": index, "message": message, "finish_reason": finish_reason(answer),
            "logprobs": chat_logprobs(answer)}  # fmt: skip


def text_completion(generation: Generation, cid: str) -> dict[str, Any]:
    """A generation as OpenAI's `text_completion`: a choice per answer."""
    choices = [
        {
            "index": index,
            "text": answer.text,
            "finish_reason": finish_reason(answer),
            "logprobs": completion_logprobs(answer),
        }
        for index, answer in enumerate(generation.answers)
    ]
    return envelope("text_completion", "cmpl", generation.model, cid) | {
        "choices": choices,
        "usage": usage(generation),
        "prsm": {"confidence": generation.confidence, "correlationId": cid},
    }


def envelope(kind: str, prefix: str, model: str, cid: str) -> dict[str, Any]:
    """The fields every OpenAI answer and chunk carries: id, object, created, model, and
    `system_fingerprint`."""
    return {"id": f"{prefix}-{cid}", "object": kind, "created": int(time.time()), "model": model,
            "system_fingerprint": fingerprint(model)}  # fmt: skip
