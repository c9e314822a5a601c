"""The tool-call reader shared by every format: a state machine over growing text.

Text outside calls is content and is released as soon as it cannot be the start of a call
marker (partial markers and trailing whitespace are held back, as stop strings are). A
call is announced once its name is known (the object's keys up to the arguments object);
its arguments are then streamed as they arrive, compacted by :class:`JsonScanner`.

What a call looks like around its JSON object is the format's (:class:`FormatSpec`):

* an *opener* marker before it (``<tool_call>``, ``<|python_tag|>``, ``[TOOL_CALLS]``);
* a *closer* after it (``</tool_call>``), optional, since small models forget it;
* a JSON *bare start*: a call object (Llama 3.x) or array of them (Mistral, whose
  ``[TOOL_CALLS]`` is a control token that the engine's text leaves out) opening the output;
* *separators* between calls written back to back (Llama 3.x: ``;``);
* Mistral's ``[TOOL_CALLS]name[ARGS]{...}`` (and ``name[CALL_ID]id[ARGS]{...}``).

Text that turns out not to be a call before its name is known is released as content. A
call whose arguments never finish (the token limit) has already been announced when
streaming; :meth:`ToolCallStreamer.segments` lets ``parse`` give such a call back as content.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from locallab_cpp.serving.toolcalls.calls import ToolCallDelta, new_call_id
from locallab_cpp.serving.toolcalls.scan import (
    JsonScanner,
    call_from_object,
    partial_suffix,
    read_call_header,
)

_WS = " \t\r\n"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_ARGS = "[ARGS]"
_CALL_ID = "[CALL_ID]"


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """The markup around a family's call objects (see the module docstring)."""

    openers: tuple[str, ...]
    closer: str | None = None
    bare_start: str = ""
    separators: str = ""
    mistral: bool = False
    """After the opener: an array of calls, one call object, or ``name[ARGS]{...}``."""
    new_id: Callable[[], str] = new_call_id


@dataclass(slots=True)
class CallRecord:
    """A call announced while reading, and the raw text it came from."""

    index: int
    id: str
    name: str
    raw_start: int
    raw_end: int = -1
    args: list[str] = field(default_factory=list)
    complete: bool = False

    @property
    def arguments(self) -> str:
        return "".join(self.args)

    def valid(self) -> bool:
        """Its arguments finished and are a JSON object."""
        if not self.complete:
            return False
        try:
            return isinstance(json.loads(self.arguments), dict)
        except ValueError:
            return False


def _skip(text: str, i: int, chars: str = _WS) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


class ToolCallStreamer:
    """Splits one generation's text, fed in pieces, into content and tool-call deltas."""

    def __init__(self, spec: FormatSpec) -> None:
        self._spec = spec
        self._buf = ""
        self._pos = 0
        self._state = "content"
        self._at_start = True
        self._strip_ws = False  # drop the whitespace that follows a call
        self._call_start = 0  # where the text of the call being read begins
        self._resume = 0  # where content goes on if that text is not a call after all
        self._obj_start = 0
        self._in_array = False
        self._object_tail = True  # the arguments sit inside a call object (not name[ARGS])
        self._scanner = JsonScanner()
        self._call: CallRecord | None = None
        self._calls: list[CallRecord] = []
        self._segments: list[str | CallRecord] = []
        self._content: list[str] = []
        self._deltas: list[ToolCallDelta] = []

    # -- public ---------------------------------------------------------------------------

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Take the next piece of generated text: (content to show now, call deltas)."""
        self._buf += text
        while self._step():
            pass
        return self._take()

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """The generation ended: release what was held back."""
        while True:
            while self._step():
                pass
            state = self._state
            if state == "content":
                rest = self._buf[self._pos :]
                self._emit(rest.lstrip(_WS) if self._strip_ws else rest)
                self._pos = len(self._buf)
                break
            if state == "args":  # cut off inside the arguments: announced, never finished
                assert self._call is not None
                self._call.raw_end = len(self._buf)
                self._call = None
                self._state = "done"
                break
            if state in ("tail", "tail_scan", "after"):
                self._to_content(self._pos)
            elif state == "done":
                break
            else:  # a call's head never finished: it was text
                self._fail()
        return self._take()

    @property
    def segments(self) -> list[str | CallRecord]:
        """Content pieces and calls in the order they came (for ``parse``)."""
        return self._segments

    def raw(self, call: CallRecord) -> str:
        """The text a call was read from."""
        return self._buf[call.raw_start : call.raw_end]

    # -- output ---------------------------------------------------------------------------

    def _take(self) -> tuple[str, list[ToolCallDelta]]:
        content, deltas = "".join(self._content), self._deltas
        self._content, self._deltas = [], []
        return content, deltas

    def _emit(self, text: str) -> None:
        if text:
            self._content.append(text)
            self._segments.append(text)

    def _start_call(self, name: str, call_id: str | None = None) -> CallRecord:
        call = CallRecord(len(self._calls), call_id or self._spec.new_id(), name, self._call_start)
        self._calls.append(call)
        self._segments.append(call)
        self._call = call
        self._deltas.append(ToolCallDelta(call.index, call.id, name, ""))
        return call

    def _add_args(self, fragment: str) -> None:
        assert self._call is not None
        if fragment:
            self._call.args.append(fragment)
            self._deltas.append(ToolCallDelta(self._call.index, None, None, fragment))

    def _end_call(self) -> None:
        if self._call is not None:
            self._call.raw_end = self._pos
            self._call = None

    def _begin(self, call_start: int, resume: int, pos: int, state: str) -> None:
        self._call_start, self._resume, self._pos, self._state = call_start, resume, pos, state

    def _fail(self) -> None:
        """What was being read is no call: it is content, and reading goes on after it."""
        self._emit(self._buf[self._call_start : self._resume])
        self._pos, self._state, self._in_array = self._resume, "content", False

    def _to_content(self, pos: int) -> None:
        self._end_call()
        self._pos, self._state, self._strip_ws, self._in_array = pos, "content", True, False

    # -- states: each returns True when it moved on, False when it needs more text ----------

    def _step(self) -> bool:
        return bool(getattr(self, "_s_" + self._state)())

    def _s_done(self) -> bool:
        return False

    def _s_content(self) -> bool:
        buf, spec = self._buf, self._spec
        p = self._pos
        if self._strip_ws:
            p = self._pos = _skip(buf, p)
            if p == len(buf):
                return False
            self._strip_ws = False
        if self._at_start and spec.bare_start:
            q = _skip(buf, p)
            if q == len(buf):
                return False
            self._at_start = False
            if buf[q] == spec.bare_start:
                self._begin(p, q, q, "section" if spec.mistral else "header")
                return True
        self._at_start = False
        found = -1
        opener = ""
        for marker in spec.openers:
            i = buf.find(marker, p)
            if i != -1 and (found == -1 or i < found):
                found, opener = i, marker
        if found != -1:
            j = found
            while j > p and buf[j - 1] in _WS:  # whitespace before a call is dropped
                j -= 1
            self._emit(buf[p:j])
            after = found + len(opener)
            self._begin(j, after, after, "section" if spec.mistral else "header")
            return True
        end = len(buf) - partial_suffix(buf[p:], spec.openers)
        j = end
        while j > p and buf[j - 1] in _WS:
            j -= 1
        self._emit(buf[p:j])
        self._pos = j
        return False

    def _s_section(self) -> bool:
        """Mistral, after ``[TOOL_CALLS]``: an array of calls, one call, or name[ARGS]."""
        buf = self._buf
        q = _skip(buf, self._pos)
        if q == len(buf):
            return False
        if buf[q] == "[":
            self._in_array, self._pos, self._state = True, q + 1, "header"
        elif buf[q] == "{":
            self._pos, self._state = q, "header"
        else:
            self._pos, self._state = q, "name_form"
        return True

    def _s_header(self) -> bool:
        header = read_call_header(self._buf, self._pos)
        if header.status == "more":
            return False
        if header.status == "fail":
            self._fail()
        elif header.status == "whole":
            self._obj_start = self._pos = _skip(self._buf, self._pos)
            self._scanner, self._state = JsonScanner(), "whole"
        else:
            self._start_call(header.name)
            self._pos, self._scanner, self._state = header.end, JsonScanner(), "args"
            self._object_tail = True
        return True

    def _s_name_form(self) -> bool:
        """``name[ARGS]{...}`` or ``name[CALL_ID]id[ARGS]{...}`` (Mistral since 2025)."""
        buf, start = self._buf, self._pos
        i = start
        while i < len(buf) and buf[i] in _NAME_CHARS:
            i += 1
        if i == len(buf):
            return False
        if i == start:
            self._fail()
            return True
        name, call_id = buf[start:i], None
        if buf.startswith(_CALL_ID, i):
            j = i = i + len(_CALL_ID)
            while i < len(buf) and buf[i].isalnum():
                i += 1
            if i == len(buf):
                return False
            call_id = buf[j:i] or None
        rest = buf[i : i + len(_ARGS)]
        if len(rest) < len(_ARGS) and (_ARGS.startswith(rest) or _CALL_ID.startswith(rest)):
            return False
        if rest != _ARGS:
            self._fail()
            return True
        q = _skip(buf, i + len(_ARGS))
        if q == len(buf):
            return False
        if buf[q] != "{":
            self._fail()
            return True
        self._start_call(name, call_id)
        self._pos, self._scanner, self._state = q, JsonScanner(), "args"
        self._object_tail = False
        return True

    def _s_whole(self) -> bool:
        """A call object not in the streamable order: read it whole, then decide."""
        end, _ = self._scanner.feed(self._buf, self._pos)
        self._pos = end
        if not self._scanner.done:
            return False
        found = call_from_object(self._buf[self._obj_start : end])
        if found is None:
            self._fail()
            return True
        call = self._start_call(found[0])
        self._add_args(found[1])
        call.complete, self._state = True, "after"
        return True

    def _s_args(self) -> bool:
        end, fragment = self._scanner.feed(self._buf, self._pos)
        self._pos = end
        self._add_args(fragment)
        if not self._scanner.done:
            return False
        assert self._call is not None
        self._call.complete = True
        if self._object_tail:
            self._state = "tail"
        else:
            self._to_content(self._pos)
        return True

    def _s_tail(self) -> bool:
        """The call object's rest after the arguments (Mistral's "id"), to its ``}``."""
        buf = self._buf
        q = _skip(buf, self._pos)
        if q == len(buf):
            return False
        if buf[q] == "}":
            self._pos, self._state = q + 1, "after"
        elif buf[q] == ",":
            self._pos, self._scanner, self._state = q, JsonScanner(depth=1), "tail_scan"
        else:  # the closing brace is missing (small models): the call stands without it
            self._pos, self._state = q, "after"
        return True

    def _s_tail_scan(self) -> bool:
        self._pos, _ = self._scanner.feed(self._buf, self._pos)
        if self._scanner.done:
            self._state = "after"
            return True
        return False

    def _s_after(self) -> bool:
        """Between a call object and what follows: a closer, the next call, or content."""
        buf, spec = self._buf, self._spec
        q = _skip(buf, self._pos, _WS + spec.separators)
        rest = buf[q:]
        if spec.closer is not None:
            if rest.startswith(spec.closer):
                self._to_content(q + len(spec.closer))
                return True
            if spec.closer.startswith(rest):
                return False
            self._to_content(q)
            return True
        if q == len(buf):
            return False
        if self._in_array and rest[0] in ",]":
            self._end_call()
            if rest[0] == "]":
                self._to_content(q + 1)
            else:
                self._begin(q, q, q + 1, "header")
            return True
        if spec.separators and rest[0] == "{":  # Llama 3.x: calls back to back
            self._end_call()
            self._begin(q, q, q, "header")
            return True
        self._to_content(q)
        return True
