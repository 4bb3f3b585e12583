"""`POST /v1/embeddings` on a real `prsm serve`, as OpenAI's client and LangChain call it."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from tests.support import API_KEY, ServerProcess


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0)


def test_the_official_client_gets_unit_vectors_in_order(models_server: ServerProcess) -> None:
    """Its default asks base64; the vectors decode to unit length, in the order given, and
    `usage` counts the tokens read."""
    answer = client(models_server).embeddings.create(
        model="text-embedding-3-small", input=["first text", "second", "third one here"]
    )
    assert answer.model == "minilm"
    assert [d.index for d in answer.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in answer.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == 4 + 3 + 5


def test_float_and_base64_carry_the_same_vector(models_server: ServerProcess) -> None:
    """base64 is the little-endian float32 bytes of the float list."""
    body = {"model": "minilm", "input": "the same text"}
    with httpx.Client(base_url=models_server.base_url, headers=auth()) as http:
        floats = http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
        packed = http.post("/v1/embeddings", json=body | {"encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats, atol=1e-7)


def test_langchain_embeds_documents_and_a_query(models_server: ServerProcess) -> None:
    """LangChain's OpenAIEmbeddings, as retrieval apps use it: a paraphrase ranks first."""
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=models_server.base_url + "/v1",
        api_key=API_KEY,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,  # its default sends OpenAI's token ids: refused
    )
    documents = ["The invoice is due at the end of the month.", "Cats sleep most of the day."]
    stored = np.array(embeddings.embed_documents(documents))
    query = np.array(embeddings.embed_query("When do I have to pay the bill?"))
    assert int(np.argmax(stored @ query)) == 0


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": [[101, 2023]]}, "input", "invalid_value"),
        ({"input": []}, "input", "invalid_value"),
        ({"input": ["fine", ""]}, "input[1]", "invalid_value"),
        ({"input": ["x"] * 2049}, "input", "invalid_value"),
        ({"input": "word " * 300}, "input[0]", "context_length_exceeded"),
        ({"input": "x", "dimensions": 128}, "dimensions", "unsupported_value"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", None),
        ({"input": "x", "truncate": True}, "truncate", "unsupported_parameter"),
    ],
)
def test_what_the_model_cannot_take_is_a_400_naming_it(
    models_server: ServerProcess, body: dict[str, object], param: str, code: str | None
) -> None:
    """OpenAI's error shape, naming the parameter; never a 500."""
    with httpx.Client(base_url=models_server.base_url, headers=auth()) as http:
        answer = http.post("/v1/embeddings", json={"model": "minilm"} | body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    assert code is None or error["code"] == code


def test_the_langchain_default_of_token_ids_is_told_what_to_do(
    models_server: ServerProcess,
) -> None:
    """A client that sends token arrays learns to send text, in the message."""
    with httpx.Client(base_url=models_server.base_url, headers=auth()) as http:
        answer = http.post("/v1/embeddings", json={"model": "minilm", "input": [1, 2, 3]})
    assert "check_embedding_ctx_length=False" in answer.json()["error"]["message"]


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {API_KEY}"}
