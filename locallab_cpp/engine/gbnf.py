"""Writing GBNF for llama.cpp: a rule set with a size budget, literals, bounded repetition
and integer ranges; and a cheap scan of grammar text before llama.cpp parses it.

Pure Python (no llama_cpp import): the JSON-schema converter (:mod:`.json_grammar`) and
the HTTP layer use it. Facts about llama.cpp's parser (src/llama-grammar.cpp) it relies on:

* ``S{m,n}`` is rewritten into a chain of n - m rules (``S'(k) ::= S S'(k-1) |``) after m
  inline copies of S: no recursion, but a repetition bound above 2000 is refused (for the
  minimum) or silently dropped (for the maximum: ``x{0,5000}`` means ``x*``). So a bound is
  written with chunks of at most :data:`CHUNK` (see :meth:`Rules.repeat`).
* A parenthesised group is parsed by recursion, one C++ frame pair per level: grammar
  text whose groups nest deeply overflows the stack (SIGSEGV), so
  :func:`check_grammar_shape` caps the nesting before llama.cpp sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from locallab_cpp.errors import InvalidRequest

CHUNK = 1000
"""The largest repetition count written as one ``{m,n}``: llama.cpp refuses a minimum above
2000 and drops a maximum above 2000, so larger bounds are composed of chunks."""

MAX_BOUND = 1_000_000
"""The largest minimum count (``minLength``, ``minItems``, a pattern's ``{m,}``) accepted:
no context window holds more. A maximum above it is accepted and left unenforced, for the
same reason."""

MAX_RULE_UNITS = 1_000_000
"""The most grammar elements (rule references, characters, one per rule a repetition
expands to) a converted schema may cost llama.cpp: about 16 bytes each there, so tens of
megabytes at most, parsed in well under a second."""

MAX_GRAMMAR_CHARS = 8 * 1024 * 1024
"""The longest grammar text the engine hands to llama.cpp."""

MAX_GROUP_DEPTH = 100
"""The deepest nesting of parentheses in a grammar the engine hands to llama.cpp: its
parser recurses once per level and overflows its stack at some thousands."""

MAX_EXPANDED_UNITS = 4_000_000
"""The most elements llama.cpp's expansion of a grammar's ``{m,n}`` repetitions may
produce (estimated from the text by :func:`check_grammar_shape`): a short text such as
``x{2000} x{2000} ...`` would otherwise cost gigabytes."""


class GrammarTooLarge(Exception):
    """The rule budget ran out; the schema converter turns this into an InvalidRequest
    that names the field where it happened."""


def literal(text: str) -> str:
    """``text`` as a GBNF string literal (any characters)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def class_char(code: int) -> str:
    """One code point as it may stand inside a GBNF character class."""
    ch = chr(code)
    if ch in ']\\^-["':
        return "\\" + ch
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02X}"
    if 0xD800 <= code <= 0xDFFF or code > 0xFFFF:
        return f"\\U{code:08X}"
    return ch


_INLINE_COST = 16  # a repetition costing more than this many elements gets a rule of its own


@dataclass
class Rules:
    """An ordered GBNF rule set: names made unique, bodies deduplicated, size budgeted."""

    budget: int = MAX_RULE_UNITS
    rules: dict[str, str] = field(default_factory=dict)
    _by_body: dict[str, str] = field(default_factory=dict)
    _repeats: dict[tuple[str, int, int | None], str] = field(default_factory=dict)
    used: int = 0

    def spend(self, units: int) -> None:
        """Count ``units`` elements against the budget; GrammarTooLarge when it runs out."""
        self.used += units
        if self.used > self.budget:
            raise GrammarTooLarge

    def add(self, name: str, body: str) -> str:
        """Define a rule (reusing one with the same body), returning its name."""
        known = self._by_body.get(body)
        if known is not None:
            return known
        name = unique_name(name, self.rules)
        self.rules[name] = body
        self._by_body[body] = name
        self.spend(1 + body.count(" "))  # about one element per token of the body
        return name

    def reserve(self, name: str) -> str:
        """A unique name for a rule whose body comes later (:meth:`define`): for recursion."""
        name = unique_name(name, self.rules)
        self.rules[name] = ""
        return name

    def define(self, name: str, body: str) -> None:
        """Give a reserved rule its body."""
        self.rules[name] = body
        self.spend(1 + body.count(" "))

    def text(self) -> str:
        """The grammar, one rule a line."""
        return "".join(f"{name} ::= {body}\n" for name, body in self.rules.items())

    # ----- repetition -------------------------------------------------------------------

    def repeat(self, item: str, low: int, high: int | None, name: str) -> str:
        """A sequence matching ``item`` (a rule name or literal) ``low`` to ``high`` times
        (None: no upper bound), with no count written above :data:`CHUNK`."""
        if high is not None and high < low:
            raise ValueError("high < low")
        known = self._repeats.get((item, low, high))
        if known is not None:  # the same bounds on the same item cost nothing more
            return known
        before = self.used
        exact = self._exact(item, low, name)
        if high is None:
            self.spend(1)
            out = _join(exact, f"{item}*")
        else:
            out = _join(exact, self._upto(item, high - low, name))
        if self.used - before > _INLINE_COST:
            # llama.cpp expands every occurrence of x{m,n} anew: a costly one becomes a
            # rule, written (and expanded) once however often it is used.
            out = self.add(name, out)
        self._repeats[(item, low, high)] = out
        return out

    def _exact(self, item: str, count: int, name: str) -> str:
        """``item`` exactly ``count`` times."""
        if count <= CHUNK:
            self.spend(count)
            return "" if count == 0 else item if count == 1 else f"{item}{{{count}}}"
        self.spend(CHUNK)
        block = self.add(f"{name}-x{CHUNK}", f"{item}{{{CHUNK}}}")
        many, rest = divmod(count, CHUNK)
        return _join(
            self.repeat(block, many, many, name + "-b"), self.repeat(item, rest, rest, name)
        )

    def _upto(self, item: str, count: int, name: str) -> str:
        """``item`` 0 to ``count`` times."""
        if count <= CHUNK:
            self.spend(count)
            return "" if count == 0 else f"{item}?" if count == 1 else f"{item}{{0,{count}}}"
        # 0..count = (0..q-1 whole blocks, then 0..CHUNK-1) | (q blocks, then 0..r): the two
        # cover 0..q*CHUNK-1 and q*CHUNK..count without overlap.
        self.spend(CHUNK)
        block = self.add(f"{name}-x{CHUNK}", f"{item}{{{CHUNK}}}")
        many, rest = divmod(count, CHUNK)
        below = _join(
            self.repeat(block, 0, many - 1, name + "-b"), self.repeat(item, 0, CHUNK - 1, name)
        )
        top = _join(self.repeat(block, many, many, name + "-b"), self.repeat(item, 0, rest, name))
        return self.add(f"{name}-upto", f"{below} | {top}")

    # ----- integers ---------------------------------------------------------------------

    def integer_range(self, low: int | None, high: int | None, name: str) -> str:
        """A rule matching the JSON integers from ``low`` to ``high`` (None: unbounded),
        written without leading zeros; each side has at most :data:`MAX_INT_DIGITS`."""
        alts: list[str] = []
        if low is None or low < 0:  # the negative part, as "-" and a magnitude
            top = -low if low is not None else None
            bottom = 1 if high is None or high >= 0 else -high
            if top is None or bottom <= top:
                alts += [f'"-" {a}' for a in _naturals(bottom, top)]
        if high is None or high >= 0:
            alts += _naturals(max(low or 0, 0), high)
        if not alts:
            raise ValueError("empty range")
        self.spend(sum(a.count(" ") + 1 for a in alts))
        return self.add(name, " | ".join(alts))


MAX_INT_DIGITS = 19
"""Integers the grammar writes have at most this many digits (with no bound, 16 like
llama-cpp-python's converter); a ``minimum``/``maximum`` beyond 10^19 is not enforced."""

_DIGITS = "[0-9]"


def _naturals(low: int, high: int | None) -> list[str]:
    """GBNF alternatives for the integers low..high (low >= 0), without leading zeros."""
    out: list[str] = []
    width = len(str(low))
    last = len(str(high)) if high is not None else None
    for digits in range(width, (last if last is not None else width) + 1):
        start = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        end = 10**digits - 1 if high is None else min(high, 10**digits - 1)
        if start <= end:
            out += [" ".join(seq) for seq in _same_width(str(start), str(end))]
    if high is None:  # any longer number
        out.append(
            f"[1-9] {_DIGITS}{{{width},{MAX_INT_DIGITS - 1}}}" if width < MAX_INT_DIGITS else ""
        )
        out = [a for a in out if a]
    return out


def _same_width(lo: str, hi: str) -> list[list[str]]:
    """Sequences of digit classes matching lo..hi, two numbers of the same width."""
    if lo == hi:
        return [[literal(lo)]]
    if len(lo) == 1:
        return [[f"[{lo}-{hi}]"]]
    if lo[0] == hi[0]:
        return [[literal(lo[0]), *seq] for seq in _same_width(lo[1:], hi[1:])]
    rest = len(lo) - 1
    out: list[list[str]] = []
    first, final = int(lo[0]), int(hi[0])
    if lo[1:] != "0" * rest:  # lo's own first digit, then lo's tail up to 99..9
        out += [[literal(lo[0]), *seq] for seq in _same_width(lo[1:], "9" * rest)]
        first += 1
    tail: list[list[str]] = []
    if hi[1:] != "9" * rest:
        tail = [[literal(hi[0]), *seq] for seq in _same_width("0" * rest, hi[1:])]
        final -= 1
    if first <= final:
        head = f"[{first}-{final}]" if first < final else literal(str(first))
        out.append([head, _DIGITS if rest == 1 else f"{_DIGITS}{{{rest}}}"])
    return out + tail


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


_NAME_CHARS = re.compile(r"[^A-Za-z0-9-]+")


def rule_name(text: str) -> str:
    """``text`` made into a GBNF rule name (letters, digits, hyphens)."""
    return _NAME_CHARS.sub("-", text).strip("-")[:40] or "r"


def unique_name(name: str, taken: dict[str, str]) -> str:
    """``name`` or ``name-N``, whichever is not in ``taken``."""
    if name not in taken:
        return name
    n = 1
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


# ----- the shape of grammar text ----------------------------------------------------------

# What the shape check looks at; string literals and character classes are skipped whole,
# as llama.cpp reads them (an unclosed one runs to the end: llama.cpp then refuses it).
_SHAPE_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*(?:"|$)|\[(?:[^\]\\]|\\.)*(?:\]|$)|#[^\n]*|[()]'
    r"|\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}",
    re.DOTALL,
)
_LLAMA_REPEAT_MAX = 2000  # llama.cpp drops a maximum above this (x{0,5000} is x*)


def check_grammar_shape(grammar: str) -> None:
    """Refuse (InvalidRequest) grammar text that could make llama.cpp's parser overflow
    its stack or expand into too much memory: longer than :data:`MAX_GRAMMAR_CHARS`,
    parentheses nested deeper than :data:`MAX_GROUP_DEPTH`, or repetitions expanding to
    more than :data:`MAX_EXPANDED_UNITS` elements (estimated). One regex pass."""
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidRequest(
            f"The grammar is {len(grammar)} characters long; the limit is {MAX_GRAMMAR_CHARS}."
        )
    depth = 0
    units = 0
    literal_end, literal_size = -1, 1  # the last string literal: a repetition copies it
    for match in _SHAPE_TOKEN.finditer(grammar):
        token = match.group()
        first = token[0]
        if first == '"':
            literal_end, literal_size = match.end(), max(1, len(token) - 2)
        elif first == "(":
            depth += 1
            if depth > MAX_GROUP_DEPTH:
                raise InvalidRequest(
                    f"The grammar nests parentheses more than {MAX_GROUP_DEPTH} deep."
                )
        elif first == ")":
            depth = max(0, depth - 1)
        elif first == "{":
            low = int(match.group(1))
            high = match.group(3)
            bounded = bool(match.group(2)) and bool(high) and int(high) <= _LLAMA_REPEAT_MAX
            optional = int(high) - low if bounded and high else 1
            size = literal_size if grammar[literal_end : match.start()].strip() == "" else 1
            units += low * size + max(optional, 0) * (size + 3)  # a rule each, ~3 elements
            if units > MAX_EXPANDED_UNITS:
                raise InvalidRequest(
                    f"The grammar's repetitions expand to more than {MAX_EXPANDED_UNITS} elements."
                )
