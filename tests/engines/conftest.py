"""What the engine tests share: the embedded model, loaded once per module."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from prsm.config import EngineSettings
from prsm.engines.llama import LlamaEngine


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    """The embedded model at default settings; it belongs to no event loop, so any test may
    use it."""
    loaded = LlamaEngine._load_sync(EngineSettings())
    yield loaded
    asyncio.run(loaded.aclose())
