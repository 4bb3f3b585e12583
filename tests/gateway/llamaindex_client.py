"""LlamaIndex's OpenAI-like chat model and embeddings against a PRSM gateway, run in the
LlamaIndex venv (`.venv-llamaindex`: its OpenAI integration needs an older `openai` than the
test venv's). Prints what each call answered, as JSON, for `test_models.py` to judge.

    .venv-llamaindex/bin/python tests/gateway/llamaindex_client.py <base url> <api key>
"""

from __future__ import annotations

import json
import sys

from llama_index.core.llms import ChatMessage
from llama_index.embeddings.openai_like import OpenAILikeEmbedding
from llama_index.llms.openai_like import OpenAILike


def chat_model(base_url: str, api_key: str, model: str) -> OpenAILike:
    return OpenAILike(
        model=model,
        api_base=base_url,
        api_key=api_key,
        is_chat_model=True,
        context_window=2048,
        max_tokens=8,
        max_retries=0,
    )


def main(base_url: str, api_key: str) -> None:
    ask = [ChatMessage(role="user", content="Hi")]
    small = chat_model(base_url, api_key, "gpt-4o-mini")
    big = chat_model(base_url, api_key, "big")
    embedding = OpenAILikeEmbedding(
        model_name="text-embedding-3-small", api_base=base_url, api_key=api_key, max_retries=0
    )
    answers = {
        "chat": {
            name: llm.chat(ask).message.content
            for name, llm in (("gpt-4o-mini", small), ("big", big))
        },
        "stream": "".join(chunk.delta or "" for chunk in big.stream_chat(ask)),
        "complete": small.complete("Hi").text,
        "embeddings": [len(v) for v in embedding.get_text_embedding_batch(["Hello", "World"])],
    }
    print(json.dumps(answers))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
