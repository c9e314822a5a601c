"""The parts of the JSON-schema converter (:mod:`.json_grammar`) that read keywords or
write fixed rules: the primitive rules, bounds read from a schema, the rule for a run of
optional object properties, and the refusals' wording."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from locallab_cpp.engine.gbnf import MAX_BOUND, MAX_INT_DIGITS, Rules, literal
from locallab_cpp.errors import InvalidRequest

# "space" is at most one space between tokens, so a model cannot run away in whitespace.
PRIMITIVES: dict[str, str] = {
    "space": '" "?',
    "char": '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "string": '"\\"" char* "\\"" space',
    "number": '"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? space',
    "boolean": '("true" | "false") space',
    "null": '"null" space',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" space (string ":" space value ("," space string ":" space value)*)? "}" space',
    "array": '"[" space (value ("," space value)*)? "]" space',
    "hex": "[0-9a-fA-F]",
    "date": '[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])',
    "time": '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? '
    '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])',
    "date-time": 'date "T" time',
    "uuid": 'hex{8} "-" hex{4} "-" hex{4} "-" hex{4} "-" hex{12}',
}
NEEDS = {
    "string": ("char", "space"),
    "number": ("space",),
    "boolean": ("space",),
    "null": ("space",),
    "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("string", "value", "space"),
    "array": ("value", "space"),
    "date-time": ("date", "time"),
    "uuid": ("hex",),
}
FORMATS = ("date", "time", "date-time", "uuid")


def optional_in_order(rules: Rules, maybe: Sequence[str], name: str) -> str:
    """A rule for one or more of the optional properties ``maybe``, in order, commas
    between: some ``kv_i``, then any of those after it.

    "Any of those after i" is ``suffix_i``: the first node of the canonical cover of
    ``[i, n)`` by a balanced tree of ``("," kv)?`` rules, then ``suffix_j`` after that
    node. Chains of rules stay O(log n) long (a chain ``rest_i ::= ("," kv_i)?
    rest_i+1`` would make llama.cpp's left-recursion check recurse n deep) and the
    text O(n)."""
    count = len(maybe)
    nodes: dict[tuple[int, int], str] = {}
    suffixes: dict[int, str] = {}

    def node(lo: int, hi: int) -> str:
        known = nodes.get((lo, hi))
        if known is None:
            if hi - lo == 1:
                body = f'("," space {maybe[lo]})?'
            else:
                mid = (lo + hi) // 2
                body = f"{node(lo, mid)} {node(mid, hi)}"
            known = nodes[(lo, hi)] = rules.add(f"{name}-o{lo}-{hi}", body)
        return known

    def first_cover(start: int) -> tuple[int, int]:
        """The first node of the canonical cover of [start, count)."""
        lo, hi = 0, count
        while start > lo:
            mid = (lo + hi) // 2
            if start >= mid:
                lo = mid
            else:
                hi = mid
        return lo, hi

    def suffix(start: int) -> str:
        if start >= count:
            return ""
        known = suffixes.get(start)
        if known is None:
            lo, hi = first_cover(start)
            body = f"{node(lo, hi)} {suffix(hi)}".strip()
            known = suffixes[start] = rules.add(f"{name}-s{start}", body)
        return known

    for i in range(count - 1, 0, -1):  # deepest first: suffix() then never recurses far
        suffix(i)
    alts = [f"{kv} {suffix(i + 1)}".strip() for i, kv in enumerate(maybe)]
    rules.spend(2 * count)
    return rules.add(f"{name}-first", " | ".join(alts))


def min_count(schema: Mapping[str, Any], key: str, path: str) -> int:
    """``minLength``/``minItems``: a non-negative integer up to MAX_BOUND (0 when absent)."""
    value = _count(schema, key, path)
    if value is None:
        return 0
    if value > MAX_BOUND:
        raise refuse(at(path, key), f"is {value}; the limit is {MAX_BOUND}")
    return value


def max_count(schema: Mapping[str, Any], key: str, path: str) -> int | None:
    """``maxLength``/``maxItems``: a non-negative integer, None when absent or above
    MAX_BOUND (no context window could reach it, so it is left unenforced)."""
    value = _count(schema, key, path)
    return None if value is None or value > MAX_BOUND else value


def _count(schema: Mapping[str, Any], key: str, path: str) -> int | None:
    if key not in schema:
        return None
    value = schema[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise refuse(at(path, key), "must be a non-negative integer")
    return value


def integer_bound(
    schema: Mapping[str, Any], key: str, exclusive: str, path: str, to_int: Any, step: int
) -> int | None:
    """An integer range's end from ``minimum``/``exclusiveMinimum`` (or the maximum pair):
    the tighter of the two; None when absent or beyond what the grammar writes."""
    ends: list[int] = []
    for name in (key, exclusive):
        value = schema.get(name)
        if value is None or isinstance(value, bool):  # draft-4 boolean exclusive* below
            continue
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise refuse(at(path, name), "must be a finite number")
        if isinstance(value, float) and abs(value) >= 10**MAX_INT_DIGITS:
            continue
        end = to_int(value)
        if name == exclusive or (schema.get(exclusive) is True and name == key):
            end = end + step if end == value else end
        ends.append(int(end))
    ends = [e for e in ends if abs(e) < 10**MAX_INT_DIGITS]
    if not ends:
        return None
    return max(ends) if step > 0 else min(ends)


def json_literal(value: Any, path: str) -> str:
    try:
        return literal(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        raise refuse(path, "holds a value that is not JSON") from None


def is_name(body: str) -> bool:
    return bool(body) and all(c.isalnum() or c == "-" for c in body)


def at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def refuse(path: str, why: str) -> InvalidRequest:
    field = f"'{path}'" if path else "(its root)"
    return InvalidRequest(f"The JSON schema cannot be turned into a grammar: {field} {why}.")
