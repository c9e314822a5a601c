"""Constraining a sequence to a GBNF grammar with llama.cpp's grammar sampler.

JSON schemas become GBNF in :mod:`locallab_cpp.engine.schema`. Every grammar is screened
before llama.cpp parses it (:func:`locallab_cpp.engine.gbnf.check_grammar_shape`): its
parser recurses per nested parenthesis and crashes the process on deep nesting.

The grammar sampler is kept out of the sampler chain: checking all 262k tokens of Gemma's
vocabulary against a grammar takes tens of milliseconds, more than a decode step of a small
model. Like llama.cpp's own common sampler, :meth:`GrammarConstraint.choose` first picks
without the grammar and only checks that one token (greedy: the few likeliest); only when the
grammar rejects them all does it mask the whole row and pick again. For sampling this is
exact: a draw from p that is kept when allowed, else redrawn from p restricted to the allowed
tokens, gives each allowed token p / P(allowed).
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np

from locallab_cpp.engine.gbnf import check_grammar_shape
from locallab_cpp.engine.llama.sampling import Logits
from locallab_cpp.errors import InvalidRequest

GREEDY_CANDIDATES = 16
"""Greedy decoding checks this many likeliest tokens before masking the whole row: the
likeliest allowed one among them is the greedy choice."""

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)

INVALID_GRAMMAR = (
    "The grammar is not valid GBNF: llama.cpp could not parse it. It needs a 'root' rule, "
    "every rule it names defined, closed quotes and brackets, and no left recursion."
)


ACCEPTED_CACHE = 256
"""How many grammars llama.cpp accepted without a vocabulary are remembered (by digest),
so that the engine's check on the event loop of a grammar the API layer checked in a
worker thread is a lookup, not a second parse."""

_accepted: OrderedDict[bytes, None] = OrderedDict()
_accepted_lock = threading.Lock()


def _digest(grammar: str) -> bytes:
    return hashlib.sha256(grammar.encode("utf-8", "surrogatepass")).digest()


def _known(digest: bytes) -> bool:
    with _accepted_lock:
        if digest in _accepted:
            _accepted.move_to_end(digest)
            return True
    return False


def _init_sampler(vocab: Any, grammar: str) -> Any:
    if not grammar.strip():
        raise InvalidRequest("The grammar is empty.")
    if "\0" in grammar:
        raise InvalidRequest("The grammar contains a NUL character.")
    if not _known(_digest(grammar)):
        check_grammar_shape(grammar)  # before llama.cpp's recursive parser sees it
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:  # NULL: llama.cpp could not parse it (and logged why)
        raise InvalidRequest(INVALID_GRAMMAR)
    return sampler


def check_grammar(vocab: Any, grammar: str) -> None:
    """Raise InvalidRequest unless llama.cpp accepts ``grammar`` (any thread: the
    vocabulary is read-only).

    With ``vocab`` None the grammar is parsed without one (it may then name no tokens,
    ``<...>``), and remembered: what parses without a vocabulary parses with any, so a
    later check of the same text with a vocabulary is a lookup.
    """
    digest = _digest(grammar)
    if _known(digest):
        return
    llama_cpp.llama_sampler_free(_init_sampler(vocab, grammar))
    if vocab is None:
        with _accepted_lock:
            _accepted[digest] = None
            while len(_accepted) > ACCEPTED_CACHE:
                _accepted.popitem(last=False)


class GrammarConstraint:
    """One sequence's grammar state: which tokens may come next (engine thread only)."""

    def __init__(self, vocab: Any, grammar: str) -> None:
        self._vocab = vocab
        self._sampler: Any = _init_sampler(vocab, grammar)
        self._cands: np.ndarray[Any, np.dtype[np.void]] | None = None

    def close(self) -> None:
        """Free the llama.cpp sampler; idempotent."""
        if self._sampler is not None:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None

    def __del__(self) -> None:
        self.close()

    def _apply(self, cands: np.ndarray[Any, np.dtype[np.void]]) -> None:
        """Let the grammar set the logit of every token it rejects to -inf, in place."""
        array = llama_cpp.llama_token_data_array(
            data=cands.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=len(cands),
            selected=-1,
            sorted=False,
        )
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(array))

    def allowed(self, tokens: np.ndarray[Any, np.dtype[Any]]) -> np.ndarray[Any, np.dtype[Any]]:
        """Which of ``tokens`` the grammar allows next (a boolean array)."""
        cands = np.zeros(len(tokens), dtype=_TOKEN_DATA)
        cands["id"] = tokens
        self._apply(cands)
        return np.isfinite(cands["logit"])

    def mask(self, logits: Logits) -> bool:
        """Set the logit of every token the grammar rejects to -inf, in place; False when it
        allows none."""
        if self._cands is None:  # reused: 3 MB for a 262k vocabulary
            self._cands = np.zeros(len(logits), dtype=_TOKEN_DATA)
            self._cands["id"] = np.arange(len(logits), dtype=np.int32)
        self._cands["logit"] = logits
        self._apply(self._cands)
        logits[:] = self._cands["logit"]
        return bool(np.isfinite(logits).any())

    def choose(self, logits: Logits, pick: Callable[[], int] | None) -> int | None:
        """The next token under the grammar, accepted into its state; None when the grammar
        allows no token at all.

        ``pick`` draws a token from the (possibly masked) row, None for greedy decoding.
        """
        if pick is None:
            k = min(GREEDY_CANDIDATES, len(logits))
            top = np.argpartition(-logits, k - 1)[:k]
            top = top[np.lexsort((top, -logits[top]))]  # likeliest first, as argmax breaks ties
            ok = self.allowed(top)
            if ok.any():
                token = int(top[int(ok.argmax())])
            elif self.mask(logits):
                token = int(logits.argmax())
            else:
                return None
        else:
            token = pick()
            if not self.allowed(np.array([token]))[0]:
                if not self.mask(logits):
                    return None
                token = pick()
        # Accepting a token the grammar rejects aborts the process inside llama.cpp, so only
        # checked tokens get here.
        llama_cpp.llama_sampler_accept(self._sampler, token)
        return token
