"""A JSON schema string ``pattern`` (a regular expression) as GBNF for the string's
characters as JSON writes them (``"`` as ``\\"``, a newline as ``\\n``).

The common subset: literals and escapes, ``.``, classes (``[a-z]``, ``[^...]``, ``\\d``
``\\w`` ``\\s`` and their negations), groups (``(...)``, ``(?:...)``, named), alternation
and the quantifiers ``* + ? {m} {m,} {m,n}`` (lazy ones as greedy: a grammar only says
what may be written). ``^`` and ``$`` only at the ends; a pattern without them matches
anywhere in the string, as JSON Schema says. Lookarounds, backreferences, word
boundaries and Unicode properties are refused with an InvalidRequest naming the field.
``.`` and negated classes do not produce control characters (JSON writes them escaped).
"""

from __future__ import annotations

import json
from typing import Any

from locallab_cpp.engine.gbnf import MAX_BOUND, Rules, class_char, literal
from locallab_cpp.errors import InvalidRequest

MAX_PATTERN_LENGTH = 4096
"""The longest ``pattern`` accepted, in characters."""

MAX_PATTERN_DEPTH = 32
"""The deepest nesting of groups in a ``pattern``."""

Ranges = list[tuple[int, int]]
_TOP = 0x10FFFF
_PRINTABLE: Ranges = [(0x20, 0x7E), (0x80, 0xD7FF), (0xE000, _TOP)]
_CLASSES: dict[str, Ranges] = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": [(0x09, 0x0D), (0x20, 0x20)],
}
_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B, "0": 0x00}
_JSON_SPECIAL = {0x22, 0x5C}


def pattern_rule(rules: Rules, pattern: Any, name: str, path: str) -> str:
    """A rule name matching the JSON-escaped strings that ``pattern`` matches."""
    if not isinstance(pattern, str):
        raise _refuse(path, "must be a string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise _refuse(path, f"is longer than the limit of {MAX_PATTERN_LENGTH} characters")
    body = pattern
    anchored_start = body.startswith("^")
    if anchored_start:
        body = body[1:]
    anchored_end = body.endswith("$") and not _escaped_at(body, len(body) - 1)
    if anchored_end:
        body = body[:-1]
    emitter = _Pattern(rules, body, f"{name}-re", path)
    expr = emitter.parse()
    anything = ""
    if not (anchored_start and anchored_end):
        anything = rules.repeat(emitter.chars(_PRINTABLE), 0, None, f"{name}-any")
    parts = [anything if not anchored_start else "", expr, anything if not anchored_end else ""]
    return rules.add(f"{name}-re", " ".join(p for p in parts if p) or '""')


def _escaped_at(text: str, index: int) -> bool:
    slashes = 0
    while index - 1 - slashes >= 0 and text[index - 1 - slashes] == "\\":
        slashes += 1
    return slashes % 2 == 1


class _Pattern:
    """A recursive-descent reader of one pattern, writing rules as it goes."""

    def __init__(self, rules: Rules, text: str, name: str, path: str) -> None:
        self.rules, self.text, self.name, self.path = rules, text, name, path
        self.pos = 0

    def parse(self) -> str:
        expr = self.alternation(0)
        if self.pos < len(self.text):
            raise self.error(f"has an unmatched ')' at position {self.pos}")
        return expr

    def error(self, why: str) -> InvalidRequest:
        return _refuse(self.path, why)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    # ----- structure --------------------------------------------------------------------

    def alternation(self, depth: int) -> str:
        if depth > MAX_PATTERN_DEPTH:
            raise self.error(f"nests groups deeper than the limit of {MAX_PATTERN_DEPTH}")
        branches = [self.sequence(depth)]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence(depth))
        if len(branches) == 1:
            return branches[0]
        self.rules.spend(len(branches))
        return self.rules.add(f"{self.name}-alt", " | ".join(b or '""' for b in branches))

    def sequence(self, depth: int) -> str:
        items: list[str] = []
        while self.pos < len(self.text) and self.peek() not in "|)":
            atom = self.atom(depth)
            items.append(self.quantified(atom))
        if len(items) > 1:
            return self.rules.add(f"{self.name}-seq", " ".join(i for i in items if i) or '""')
        return items[0] if items else ""

    def quantified(self, atom: str) -> str:
        ch = self.peek()
        if ch in ("*", "+", "?"):
            self.pos += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        elif ch == "{" and self._is_count():
            low, high = self._count()
        else:
            return atom
        if self.peek() == "?":  # lazy: the same set of strings
            self.pos += 1
        elif self.peek() == "+":
            raise self.error("uses a possessive quantifier, which is not supported")
        if not atom:
            raise self.error("has a quantifier with nothing before it")
        return self.rules.repeat(atom, low, high, f"{self.name}-rep")

    def _is_count(self) -> bool:
        end = self.text.find("}", self.pos)
        inner = self.text[self.pos + 1 : end] if end > 0 else ""
        head, _, tail = inner.partition(",")
        return bool(head.isdigit() and (tail == "" or tail.isdigit()))

    def _count(self) -> tuple[int, int | None]:
        end = self.text.index("}", self.pos)
        head, comma, tail = self.text[self.pos + 1 : end].partition(",")
        self.pos = end + 1
        low = int(head)
        high = low if not comma else int(tail) if tail else None
        if low > MAX_BOUND:
            raise self.error(f"repeats {low} times; the limit is {MAX_BOUND}")
        if high is not None and high < low:
            raise self.error(
                f"has a quantifier {{{low},{high}}} whose maximum is below its minimum"
            )
        return low, None if high is not None and high > MAX_BOUND else high

    def atom(self, depth: int) -> str:
        ch = self.peek()
        self.pos += 1
        if ch == "(":
            self._group_prefix()
            inner = self.alternation(depth + 1)
            if self.peek() != ")":
                raise self.error("has an unclosed '('")
            self.pos += 1
            return self.rules.add(f"{self.name}-grp", inner or '""')
        if ch == "[":
            return self.chars(self.char_class())
        if ch == ".":
            return self.chars(_subtract(_PRINTABLE, [(0x0A, 0x0A)]))
        if ch == "\\":
            return self.chars(self.escape(in_class=False))
        if ch in "^$":
            raise self.error(f"uses '{ch}' inside the pattern; only at its ends is it supported")
        if ch in "*+?":
            raise self.error(f"has a quantifier '{ch}' with nothing before it")
        return self.chars([(ord(ch), ord(ch))])

    def _group_prefix(self) -> None:
        if self.peek() != "?":
            return
        rest = self.text[self.pos : self.pos + 3]
        if rest.startswith("?:"):
            self.pos += 2
        elif rest.startswith(("?P<", "?<")) and rest[:3] not in ("?<=", "?<!"):
            end = self.text.find(">", self.pos)
            if end < 0:
                raise self.error("has an unclosed group name")
            self.pos = end + 1
        else:
            raise self.error("uses a lookaround or group flag '(?', which is not supported")

    # ----- characters -------------------------------------------------------------------

    def escape(self, in_class: bool) -> Ranges:
        ch = self.peek()
        if not ch:
            raise self.error("ends with a lone backslash")
        self.pos += 1
        if ch.lower() in _CLASSES:
            ranges = _CLASSES[ch.lower()]
            return _subtract(_PRINTABLE, ranges) if ch.isupper() else ranges
        if ch in _ESCAPES:
            return [(_ESCAPES[ch], _ESCAPES[ch])]
        if ch in "xu":
            size = 2 if ch == "x" else 4
            digits = self.text[self.pos : self.pos + size]
            if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise self.error(f"has a malformed '\\{ch}' escape")
            self.pos += size
            code = int(digits, 16)
            return [(code, code)]
        if ch == "b" and in_class:
            return [(0x08, 0x08)]
        if ch.isalnum():
            raise self.error(f"uses '\\{ch}', which is not supported")
        return [(ord(ch), ord(ch))]

    def char_class(self) -> Ranges:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: Ranges = []
        first = True
        while True:
            ch = self.peek()
            if not ch:
                raise self.error("has an unclosed '['")
            if ch == "]" and not first:
                self.pos += 1
                break
            first = False
            low = self._class_item()
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self._class_item()
                if len(low) != 1 or len(high) != 1 or low[0][0] != low[0][1]:
                    raise self.error("has a class range between character classes")
                if high[0][0] < low[0][0]:
                    raise self.error("has a class range out of order")
                ranges.append((low[0][0], high[0][1]))
            else:
                ranges.extend(low)
        return _subtract(_PRINTABLE, ranges) if negated else _normalize(ranges)

    def _class_item(self) -> Ranges:
        ch = self.peek()
        self.pos += 1
        if ch == "\\":
            return self.escape(in_class=True)
        if ch == "[" and self.peek() == ":":
            raise self.error("uses a POSIX class '[:...:]', which is not supported")
        return [(ord(ch), ord(ch))]

    def chars(self, ranges: Ranges) -> str:
        """An atom matching one character of ``ranges`` as JSON writes it."""
        ranges = _normalize(ranges)
        if not ranges:
            raise self.error("has a character class that matches nothing")
        plain = _subtract(ranges, [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])
        escaped = [
            literal(json.dumps(chr(c))[1:-1])
            for lo, hi in ranges
            for c in range(lo, min(hi, 0x5C) + 1)
            if c < 0x20 or c in _JSON_SPECIAL
        ]
        alts = []
        if plain:
            if len(plain) == 1 and plain[0][0] == plain[0][1]:
                alts.append(literal(chr(plain[0][0])))
            else:
                alts.append(
                    "["
                    + "".join(
                        class_char(lo) if lo == hi else f"{class_char(lo)}-{class_char(hi)}"
                        for lo, hi in plain
                    )
                    + "]"
                )
        alts += escaped
        self.rules.spend(len(plain) + len(escaped))
        if len(alts) == 1:
            return alts[0]
        return self.rules.add(f"{self.name}-ch", " | ".join(alts))


def _normalize(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _subtract(base: Ranges, minus: Ranges) -> Ranges:
    out: Ranges = []
    cut = _normalize(minus)
    for lo, hi in _normalize(base):
        start = lo
        for c_lo, c_hi in cut:
            if c_hi < start or c_lo > hi:
                continue
            if c_lo > start:
                out.append((start, c_lo - 1))
            start = max(start, c_hi + 1)
        if start <= hi:
            out.append((start, hi))
    return out


def _refuse(path: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"The JSON schema cannot be turned into a grammar: '{path}' {why}.")
