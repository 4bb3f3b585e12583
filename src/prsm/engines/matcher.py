"""The decode side of structured output: a model's vocabulary as llguidance sees it, and one
sequence's matcher (`Constraint`) on the decode thread — before each token it masks the
tokens that cannot continue a valid answer, after it it takes the token. Only the embedded
engine imports this module (it brings numpy and llguidance's tokenizer)."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np

from prsm.errors import UnenforceableSchemaError


class Vocabulary:
    """llguidance's view of a model's tokens, built on first use (about 0.3 s) and shared."""

    def __init__(self, llama_cpp: Any, vocab: Any) -> None:
        self._lib, self._vocab = llama_cpp, vocab
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def tokenizer(self) -> Any:
        """The llguidance tokenizer of this vocabulary."""
        with self._lock:
            if self._tokenizer is None:
                from llguidance.llamacpp import lltokenizer_from_vocab

                with warnings.catch_warnings():  # it reads each token's kind the older way
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._tokenizer = lltokenizer_from_vocab(self._vocab)
            return self._tokenizer

    def constraint(self, grammar: str) -> Constraint:
        """A new matcher for `grammar` (compiled: call it off the event loop)."""
        from llguidance import LLMatcher

        matcher = LLMatcher(self.tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise UnenforceableSchemaError(f"the schema cannot be enforced: {matcher.get_error()}")
        return Constraint(matcher, int(self._lib.llama_vocab_n_tokens(self._vocab)))


class Constraint:
    """One sequence's grammar state, on the decode thread."""

    def __init__(self, matcher: Any, n_vocab: int) -> None:
        self._matcher = matcher
        self._mask = np.full((n_vocab + 31) // 32, -1, dtype=np.int32)
        self._bits = np.empty(n_vocab, dtype=bool)

    def restrict(self, logits: np.ndarray) -> None:
        """Set to -inf, in place, the logits of tokens that cannot come next."""
        mask = self._mask
        self._matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        allowed = np.unpackbits(mask.view(np.uint8), bitorder="little", count=len(logits))
        np.equal(allowed, 0, out=self._bits)
        logits[self._bits] = -np.inf

    def take(self, token: int) -> bool:
        """Advance past the token sampled; False if it breaks the grammar (see `error`)."""
        return bool(self._matcher.consume_token(token))

    @property
    def error(self) -> str:
        """Why the matcher failed, if it did."""
        return str(self._matcher.get_error())

    @property
    def complete(self) -> bool:
        """Whether the answer is whole: nothing but its end may follow."""
        return bool(self._matcher.is_stopped())
