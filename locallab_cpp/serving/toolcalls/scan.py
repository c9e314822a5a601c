"""Incremental scanning of generated text: where a JSON value ends, and the head of a
tool-call object (``{"name": "...", "arguments": {``) read from a prefix of the text.

Both work on text that is still growing: they say "need more" instead of failing when the
text so far could still become what they look for, so a streamer can hold it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

ARGUMENT_KEYS = ("arguments", "parameters")
"""Keys a call object holds its arguments under: Hermes and Mistral write "arguments",
Llama 3.x "parameters"; models of one family slip into the other's, so both are read."""
_SKIPPED_KEYS = ("type", "id")
"""String-valued keys a call object may carry before its name (Llama 3.x's
``"type": "function"``, an id)."""
_WHITESPACE = " \t\r\n"


class JsonScanner:
    """Follows one JSON value (an object or array) character by character, to find where
    it ends, and writes it compact: whitespace outside strings is dropped.

    It checks nesting and strings only, not the full grammar: the text is parsed with
    :func:`json.loads` once it is complete. Compacting this way keeps the model's own
    spelling of numbers and strings, so the streamed fragments of a call's arguments join
    to exactly the arguments that :meth:`ToolCallFormat.parse` reports.
    """

    __slots__ = ("_depth", "_escape", "_in_string", "done")

    def __init__(self, depth: int = 0) -> None:
        self._depth = depth
        self._in_string = False
        self._escape = False
        self.done = False

    def feed(self, text: str, start: int = 0) -> tuple[int, str]:
        """Scan ``text[start:]``: (the index just after the value's end, or len(text) when
        it has not ended yet; the compact text of what was scanned)."""
        out: list[str] = []
        i = start
        n = len(text)
        while i < n and not self.done:
            ch = text[i]
            i += 1
            if self._in_string:
                out.append(ch)
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                continue
            if ch in _WHITESPACE:
                continue
            out.append(ch)
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth <= 0:
                    self.done = True
        return i, "".join(out)


Status = Literal["ok", "more", "whole", "fail"]


@dataclass(frozen=True, slots=True)
class Header:
    """What :func:`read_call_header` found.

    ``ok``: the name is known and the arguments object starts at ``end``; ``more``: the text
    may still become a call head; ``whole``: it is an object, but not in the streamable
    order (arguments before the name, arguments as a string): read the whole object;
    ``fail``: not a call.
    """

    status: Status
    name: str = ""
    end: int = 0


_MORE = Header("more")
_FAIL = Header("fail")
_WHOLE = Header("whole")


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _read_string(text: str, i: int) -> tuple[str | None, int]:
    """A JSON string starting at ``text[i]`` (a quote): (its value, the index after it);
    (None, -1) when it is not finished yet, (None, -2) when it is not a valid string."""
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == '"':
            try:
                value = json.loads(text[i : j + 1])
            except ValueError:
                return None, -2
            return value, j + 1
        j += 1
    return None, -1


def read_call_header(text: str, i: int) -> Header:
    """Read a call object's head at ``text[i:]`` (whitespace, then ``{``): its keys up to
    the start of the arguments object, the name among them."""
    i = _skip_ws(text, i)
    if i >= len(text):
        return _MORE
    if text[i] != "{":
        return _FAIL
    name: str | None = None
    i += 1
    while True:
        i = _skip_ws(text, i)
        if i >= len(text):
            return _MORE
        if text[i] == "}":
            return _WHOLE  # an object without arguments: the whole-object reading decides
        if text[i] != '"':
            return _FAIL
        key, i = _read_string(text, i)
        if i == -1:
            return _MORE
        if key is None:
            return _FAIL
        i = _skip_ws(text, i)
        if i >= len(text):
            return _MORE
        if text[i] != ":":
            return _FAIL
        i = _skip_ws(text, i + 1)
        if i >= len(text):
            return _MORE
        if key in ARGUMENT_KEYS:
            if name is None or text[i] != "{":
                return _WHOLE
            return Header("ok", name, i)
        if key != "name" and key not in _SKIPPED_KEYS:
            return _FAIL
        if text[i] != '"':
            return _WHOLE if key == "name" else _FAIL
        value, i = _read_string(text, i)
        if i == -1:
            return _MORE
        if value is None:
            return _FAIL
        if key == "name":
            name = value
        i = _skip_ws(text, i)
        if i >= len(text):
            return _MORE
        if text[i] == "}":
            return _WHOLE
        if text[i] != ",":
            return _FAIL
        i += 1


def call_from_object(raw: str) -> tuple[str, str] | None:
    """(name, compact arguments JSON) of a whole call object's text, or None when it is not
    a call: a string name, and arguments that are an object, a string holding a JSON
    object, or absent (no arguments)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments: object = {}
    for key in ARGUMENT_KEYS:
        if key in obj:
            arguments = obj[key]
            break
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return obj["name"], json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))


def partial_suffix(text: str, markers: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that begins one of ``markers`` (and is
    shorter than it): the text to hold back because a marker may be arriving."""
    best = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text)), best, -1):
            if marker.startswith(text[-k:]):
                best = k
                break
    return best
