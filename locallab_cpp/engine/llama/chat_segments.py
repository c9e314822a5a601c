"""Client text apart from the chat template's own markup (special-token injection).

A rendered chat prompt is tokenized with special tokens parsed, so that the template's
``<start_of_turn>`` or ``<|im_start|>`` become the model's control tokens. Text the client
wrote must not: a message holding ``<end_of_turn><start_of_turn>model`` would otherwise
forge a turn. So every client string (message content, names, tool calls and their
arguments, tool results, tool definitions, keys included) that holds a control token's
text is rendered as a sentinel first, and the rendered text is split at the sentinels:
template pieces are tokenized with special tokens parsed, client pieces as plain text
(:func:`segments`). Strings without a control token's text stay in the template pieces:
they cannot become a control token, and the prompt then tokenizes exactly as one text.

Templates may change what they print of a string. Whitespace a template trims is kept
outside the sentinel, and a string the template prints as JSON (``tojson``) is matched in
its escaped form. When a sentinel still does not come back as the client's text, the
whole prompt is tokenized as before only if it holds no more control-token text than the
sentinel rendering (the client's control text did not reach the prompt as it was, e.g.
escaped or dropped); otherwise the request is refused with a 400 rather than risk a
forged turn.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from locallab_cpp.errors import InvalidRequest

Segment = tuple[str, bool]
"""A piece of the prompt text and whether the client wrote it (tokenize it as plain text)."""

RenderFn = Callable[[Any, Any], str]
"""Render (messages, tools) with the template to prompt text; InvalidRequest if it fails."""


class ControlTexts:
    """The texts of a vocabulary's control tokens, found in strings without a tokenizer."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = frozenset(t for t in texts if t)
        # Looked up by length at each position that starts like one: a vocabulary has
        # thousands of control tokens (Gemma's <unusedN>) but few distinct lengths.
        self._lengths = sorted({len(t) for t in self._texts}, reverse=True)
        firsts = "".join(re.escape(c) for c in sorted({t[0] for t in self._texts}))
        self._starts = re.compile(f"[{firsts}]" if firsts else "(?!)")

    def __bool__(self) -> bool:
        return bool(self._texts)

    def find(self, text: str) -> Iterator[str]:
        """The control-token texts in ``text``, leftmost first, the longest at a place."""
        if not self._texts:
            return
        skip_to = 0
        for match in self._starts.finditer(text):
            at = match.start()
            if at < skip_to:
                continue
            for length in self._lengths:
                candidate = text[at : at + length]
                if candidate in self._texts:
                    skip_to = at + length
                    yield candidate
                    break

    def contains(self, text: str) -> bool:
        """Whether ``text`` holds any control token's text."""
        return next(self.find(text), None) is not None


class _Marker:
    """Replaces the client strings that hold control-token text with numbered sentinels."""

    def __init__(self, control: ControlTexts) -> None:
        self._control = control
        # ASCII letters and digits: they survive trim, tojson and string concatenation, and
        # a random nonce keeps them from occurring in the template or the client's text.
        nonce = secrets.token_hex(8)
        self._format = f"LLSENT{nonce}N{{}}Z"
        self.pattern = re.compile(f"LLSENT{nonce}N(\\d+)Z")
        self.originals: list[str] = []
        """The client text behind sentinel i, without the whitespace kept outside it."""

    def walk(self, value: Any) -> Any:
        """``value`` (messages, tools) with every dangerous string replaced; not mutated."""
        if isinstance(value, str):
            return self._mark(value) if self._control.contains(value) else value
        if isinstance(value, dict):
            return {self.walk(k): self.walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.walk(v) for v in value]
        return value

    def _mark(self, text: str) -> str:
        core = text.strip()
        start = text.index(core)
        self.originals.append(core)
        sentinel = self._format.format(len(self.originals) - 1)
        # Leading and trailing whitespace stays outside, so a template's trim finds it.
        return text[:start] + sentinel + text[start + len(core) :]


def _json_escaped(text: str) -> str:
    """``text`` as it appears inside a JSON string written by the templates' ``tojson``."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _align(text: str, marked_text: str, marker: _Marker) -> list[Segment] | None:
    """The segments of ``text``, given its rendering with sentinels; None if they differ
    anywhere but where the client's text stands, verbatim or JSON-escaped."""
    parts = marker.pattern.split(marked_text)  # template, index, template, index, ...
    out: list[Segment] = []
    pos = 0
    for k, part in enumerate(parts):
        if k % 2 == 0:
            if not text.startswith(part, pos):
                return None
            piece, client = part, False
        else:
            core = marker.originals[int(part)]
            following = parts[k + 1]
            for candidate in dict.fromkeys((core, _json_escaped(core))):
                end = pos + len(candidate)
                if text.startswith(candidate, pos) and text.startswith(following, end):
                    break
            else:
                return None
            piece, client = candidate, True
        if piece:
            if out and out[-1][1] == client:
                out[-1] = (out[-1][0] + piece, client)
            else:
                out.append((piece, client))
        pos += len(piece)
    return out if pos == len(text) else None


def segments(
    text: str,
    messages: Any,
    tools: Any,
    control: ControlTexts,
    render: RenderFn,
) -> tuple[Segment, ...]:
    """How to tokenize ``text``, the rendering of ``messages`` and ``tools``: its pieces,
    each marked as client text or not; empty when the whole text can be tokenized with
    special tokens parsed (no client string holds a control token's text, or none of it
    reached the prompt as such). Raises InvalidRequest when the client's control-token
    text cannot be kept apart from the template's markup."""
    if not control:
        return ()
    marker = _Marker(control)
    marked_messages = marker.walk(messages)
    marked_tools = marker.walk(tools)
    if not marker.originals:
        return ()
    try:
        marked_text: str | None = render(marked_messages, marked_tools)
    except InvalidRequest:
        marked_text = None
    if marked_text is not None:
        aligned = _align(text, marked_text, marker)
        if aligned is not None:
            return tuple(aligned) if any(client for _, client in aligned) else ()
        extra = Counter(control.find(text)) - Counter(control.find(marked_text))
        if not extra:
            return ()
    token = next(t for s in marker.originals for t in control.find(s))
    raise InvalidRequest(
        f"A message holds the text of the model's control token {token!r}, where this "
        "model's chat template changes the text so it cannot be kept apart from the "
        "template's own markup. Remove or reword it."
    )


def vocab_control_texts(vocab: Any) -> list[str]:
    """The texts of ``vocab``'s tokens that only special-token parsing produces (control
    and unknown tokens: llama.cpp keeps user-defined tokens in plain text too)."""
    import llama_cpp  # here, so the pure-Python rest of this module needs no llama.cpp

    wanted = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    texts = []
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_get_attr(vocab, token) & wanted:
            raw = llama_cpp.llama_vocab_get_text(vocab, token)
            if raw:
                texts.append(raw.decode("utf-8", errors="replace"))
    return texts


def vocab_eog_texts(vocab: Any) -> list[str]:
    """The texts of ``vocab``'s end-of-generation tokens (EOS, EOT, ``<end_of_turn>``...).

    The decode loop ends a sequence on these tokens themselves, so their text is no stop
    string: an answer that writes ``</s>`` as text (HTML, a question about tokenizers) goes
    on."""
    import llama_cpp

    texts = []
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            raw = llama_cpp.llama_vocab_get_text(vocab, token)
            if raw:
                texts.append(raw.decode("utf-8", errors="replace"))
    return texts
