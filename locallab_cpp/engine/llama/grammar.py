"""Constraining a sequence to a GBNF grammar with llama.cpp's grammar sampler, and JSON
schemas turned into GBNF.

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
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import llama_cpp
import numpy as np

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


def _init_sampler(vocab: Any, grammar: str) -> Any:
    if not grammar.strip():
        raise InvalidRequest("The grammar is empty.")
    if "\0" in grammar:
        raise InvalidRequest("The grammar contains a NUL character.")
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:  # NULL: llama.cpp could not parse it (and logged why)
        raise InvalidRequest(INVALID_GRAMMAR)
    return sampler


def check_grammar(vocab: Any, grammar: str) -> None:
    """Raise InvalidRequest unless llama.cpp accepts ``grammar`` (any thread: the
    vocabulary is read-only)."""
    llama_cpp.llama_sampler_free(_init_sampler(vocab, grammar))


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


INTEGER_ENUM_LIMIT = 1024
"""Integer ranges with at most this many values are written as an enum of them."""


def bound_integers(schema: Any) -> Any:
    """``schema`` with each small bounded integer range (``minimum``/``maximum``, exclusive
    forms too) written as an ``enum`` of its values.

    llama-cpp-python's converter ignores numeric bounds, so a grammar from ``{"type":
    "integer", "maximum": 99}`` lets a model write 1000000000000000; an enum it does honour.
    Ranges wider than INTEGER_ENUM_LIMIT values stay as they are (bounds unchecked).
    """
    if isinstance(schema, list):
        return [bound_integers(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: bound_integers(value) for key, value in schema.items()}
    if out.get("type") != "integer" or "enum" in out or "const" in out:
        return out
    low, high = out.get("minimum"), out.get("maximum")
    if isinstance(out.get("exclusiveMinimum"), int | float):
        low = (
            max(low, out["exclusiveMinimum"] + 1)
            if low is not None
            else out["exclusiveMinimum"] + 1
        )
    if isinstance(out.get("exclusiveMaximum"), int | float):
        high = (
            min(high, out["exclusiveMaximum"] - 1)
            if high is not None
            else out["exclusiveMaximum"] - 1
        )
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return out
    first, last = math.ceil(low), math.floor(high)
    if last < first or last - first + 1 > INTEGER_ENUM_LIMIT:
        return out
    rest = {k: v for k, v in out.items() if k not in _INTEGER_BOUNDS}
    return {**rest, "enum": list(range(first, last + 1))}


_INTEGER_BOUNDS = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def json_schema_to_grammar(schema: Mapping[str, Any] | bool | str) -> str:
    """GBNF text that matches the JSON documents valid under ``schema`` (a JSON Schema, as
    an object or as its JSON text), with llama-cpp-python's converter.

    Whitespace between tokens is at most one space, so a model cannot run away in
    whitespace. Raises InvalidRequest when the schema is not JSON or uses what the converter
    does not support (remote $refs, patterns not anchored with ^ and $, unknown types).
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if isinstance(schema, str):
        text = schema
    else:
        try:
            text = json.dumps(schema)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"The JSON schema is not JSON: {exc}.") from None
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"The JSON schema is not valid JSON: {exc}.") from None
    if not isinstance(parsed, dict | bool):
        raise InvalidRequest("A JSON schema must be an object (or true/false).")
    if parsed is True:
        parsed = {}
    elif parsed is False:
        raise InvalidRequest("The JSON schema is false: no document satisfies it.")
    try:
        return json_schema_to_gbnf(json.dumps(bound_integers(parsed)))
    except RecursionError:
        raise InvalidRequest("The JSON schema is nested too deeply.") from None
    except Exception as exc:  # the converter raises assertions, ValueError, KeyError...
        raise InvalidRequest(f"The JSON schema cannot be turned into a grammar: {exc}") from None
