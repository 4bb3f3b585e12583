"""The `bert` embedding engine: all-MiniLM-L6-v2 in NumPy agrees with its reference
implementation, puts paraphrases together, and refuses what it cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prsm.config import EngineSettings
from prsm.engines import load_engine
from prsm.engines.bert import BertEmbedder, blas_threads
from prsm.engines.embedding import is_embedder
from prsm.errors import ValidationError

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"
"""Vectors from sentence-transformers on PyTorch, written by bench/reference_embeddings.py."""


@pytest.fixture(scope="module")
def minilm() -> BertEmbedder:
    """The wheel's all-MiniLM-L6-v2, with sentence-transformers' window; it belongs to no
    event loop, so any test may use it."""
    return BertEmbedder._load(EngineSettings(kind="bert", context_size=256))


async def test_vectors_match_the_reference_implementation(minilm: BertEmbedder) -> None:
    """Every sentence of the fixed set (empty, accented, emoji, CJK, 200 words included) is
    within cosine 0.99 of sentence-transformers' vector, and each vector has unit length."""
    reference = json.loads(REFERENCE.read_text())
    ours = await minilm.embed(reference["sentences"])
    theirs = np.array(reference["vectors"])
    cosines = (ours.vectors * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cosines.min() >= 0.99, cosines
    assert np.allclose(np.linalg.norm(ours.vectors, axis=1), 1.0, atol=1e-5)
    assert ours.vectors.shape == (len(reference["sentences"]), 384)


async def test_a_paraphrase_is_nearer_than_an_unrelated_sentence(minilm: BertEmbedder) -> None:
    """Meaning, not spelling: the paraphrase shares almost no words with the question."""
    question, paraphrase, unrelated = (
        await minilm.embed(
            [
                "How do I reset my password?",
                "I forgot my login credentials and need to change them.",
                "How do I reset the router to factory settings?",
            ]
        )
    ).vectors
    assert question @ paraphrase > question @ unrelated + 0.1


async def test_a_batch_gives_each_text_the_vector_it_gets_alone(minilm: BertEmbedder) -> None:
    """Padding a short text to a long one's length changes nothing, and the order is kept."""
    texts = ["short", "a much longer sentence " * 20, "medium length text here"]
    together = (await minilm.embed(texts)).vectors
    alone = np.stack([(await minilm.embed([t])).vectors[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


async def test_tokens_are_counted_as_the_model_reads_them(minilm: BertEmbedder) -> None:
    """[CLS] and [SEP] around each text's word pieces, in the answer and in the budget's count."""
    embedded = await minilm.embed(["hello world", "hello"])
    assert embedded.prompt_tokens == 4 + 3
    assert await minilm.count_tokens(["hello world", "hello"]) == 7
    assert is_embedder(minilm)


async def test_a_text_past_the_window_is_refused_naming_it(minilm: BertEmbedder) -> None:
    """Nothing is cut silently: a text longer than the model reads is 422 naming it."""
    with pytest.raises(ValidationError) as refused:
        await minilm.embed(["fine", "word " * 300])
    assert refused.value.code == "context_length_exceeded"
    assert refused.value.param == "input[1]"


async def test_a_missing_model_file_is_a_clear_load_error(tmp_path: Path) -> None:
    """A folder without the model's files fails to load saying which path it tried."""
    with pytest.raises(Exception, match=str(tmp_path)):
        await load_engine(EngineSettings(kind="bert", model_path=tmp_path))


def test_threads_bound_numpy_s_blas() -> None:
    """`threads` is the BLAS's thread count for the process (restored after the test)."""
    before = blas_threads()
    assert before is not None  # NumPy's wheels ship OpenBLAS
    try:
        BertEmbedder._load(EngineSettings(kind="bert", threads=1))
        assert blas_threads() == 1
    finally:
        blas_threads(before)
    assert blas_threads() == before
