"""The default weights keep the model file's quality, and the measure can tell when they do not."""

from __future__ import annotations

from prsm.config import EngineSettings
from prsm.engines.llama import default_model_path
from prsm.engines.quality import measure, reference_text

SAMPLE = {"chunks": 4, "chunk_tokens": 128}


def test_the_default_weights_stay_within_one_percent_of_the_file() -> None:
    """Perplexity on a small sample of Python's documentation: the default `engine.weights`
    within 1 % of the file's, while `q4_0` (a second 4-bit rounding) is clearly worse — so a
    faster default that made answers worse would fail here."""
    path = default_model_path()
    file = measure(path, "as_file", **SAMPLE)
    default = measure(path, EngineSettings().weights, **SAMPLE)
    requantized = measure(path, "q4_0", **SAMPLE)
    assert file.tokens == default.tokens == 4 * 63
    assert default.perplexity <= file.perplexity * 1.01
    assert requantized.perplexity > file.perplexity * 1.05


def test_the_reference_text_is_python_s_own_and_stable() -> None:
    """The text comes from the running CPython, the same on every call."""
    text = reference_text()
    assert len(text) > 100_000
    assert text == reference_text()
