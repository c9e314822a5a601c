"""From tokens to text: token pieces, and the stop strings that hold text back."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Sequence
from typing import Any

import llama_cpp


class Pieces:
    """Token id to bytes, through one reusable buffer (engine thread only)."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._buf = ctypes.create_string_buffer(256)

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of ``token``; ``special`` renders control tokens as their text."""
        n = llama_cpp.llama_token_to_piece(
            self._vocab, token, self._buf, len(self._buf), 0, special
        )
        if n < 0:
            self._buf = ctypes.create_string_buffer(-n + 16)
            n = llama_cpp.llama_token_to_piece(
                self._vocab, token, self._buf, len(self._buf), 0, special
            )
        return self._buf.raw[:n]

    def longest(self) -> int:
        """The most bytes one token's text takes (control tokens as their text)."""
        return max(
            (
                len(self.piece(t, special=True))
                for t in range(llama_cpp.llama_vocab_n_tokens(self._vocab))
            ),
            default=0,
        )

    def special_ids(self, texts: Iterable[str]) -> frozenset[int]:
        """The ids of the control tokens whose text is one of ``texts`` (texts that are not
        a single control token of this vocabulary are left out)."""
        ids = set()
        for text in texts:
            data = text.encode("utf-8")
            buf = (llama_cpp.llama_token * 4)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, 4, False, True)
            if n == 1 and llama_cpp.llama_vocab_is_control(self._vocab, buf[0]):
                ids.add(int(buf[0]))
        return frozenset(ids)

    def text(self, token: int) -> str:
        """A token's text, control tokens included (for chat-template markers)."""
        return self.piece(token, special=True).decode("utf-8", errors="replace")


def stop_hold(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` to hold back: they may begin a stop string."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return hold


def find_stop(text: str, stops: Sequence[str], start: int) -> tuple[int, str | None]:
    """Index of the earliest stop string in ``text`` at or after ``start`` and that string
    (the first listed of those found there), or (-1, None)."""
    cut, which = -1, None
    for stop in stops:
        found = text.find(stop, start)
        if found != -1 and (cut == -1 or found < cut):
            cut, which = found, stop
    return cut, which
