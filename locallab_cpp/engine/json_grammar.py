"""A JSON schema as GBNF for llama.cpp's grammar sampler, with explicit limits.

Pure Python: llama_cpp is not imported. Every bound is written with ``{m,n}`` repetitions
in chunks (:meth:`locallab_cpp.engine.gbnf.Rules.repeat`), never as nested optional
groups, so the grammar text nests parentheses at most a few levels whatever the schema;
the schema's own nesting is capped by :data:`MAX_DEPTH` (llama.cpp recurses through
leftmost rule references when it checks a grammar for left recursion), and the grammar's
size by :data:`locallab_cpp.engine.gbnf.MAX_RULE_UNITS`. Each refusal is an
InvalidRequest naming the schema field (``properties.a.maxLength``) and the limit.

What is enforced and what is not is listed in docs/api.md ("Structured output").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from locallab_cpp.engine.gbnf import MAX_RULE_UNITS, GrammarTooLarge, Rules, rule_name
from locallab_cpp.engine.json_keywords import (
    FORMATS,
    NEEDS,
    PRIMITIVES,
    at,
    integer_bound,
    is_name,
    json_literal,
    max_count,
    min_count,
    optional_in_order,
    refuse,
)
from locallab_cpp.engine.json_regex import pattern_rule
from locallab_cpp.errors import InvalidRequest

MAX_DEPTH = 64
"""The deepest nesting of subschemas (properties, items, anyOf branches, $ref hops) a
schema may have: deeper ones are refused before anything reaches llama.cpp."""


def convert_schema(schema: Mapping[str, Any] | bool) -> str:
    """GBNF (root rule ``root``) matching the JSON documents valid under ``schema``, as far
    as docs/api.md says; InvalidRequest for what it cannot take or exceeds a limit."""
    if schema is False:
        raise InvalidRequest("The JSON schema is false: no document satisfies it.")
    converter = _Converter(schema if isinstance(schema, Mapping) else {})
    body = converter.visit(converter.root, "", 0, "root")
    converter.rules.define("root", body)
    return converter.rules.text()


class _Converter:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.rules = Rules()
        self.refs: dict[str, str] = {}
        self.rules.reserve("root")  # defined last, by convert_schema; no other rule takes the name

    # ----- helpers ----------------------------------------------------------------------

    def prim(self, name: str) -> str:
        """A primitive rule's name, defining it (and what it uses) on first use."""
        if name not in self.rules.rules:
            self.rules.rules[name] = PRIMITIVES[name]
            for need in NEEDS.get(name, ()):
                self.prim(need)
        return name

    def rule(self, name: str, body: str) -> str:
        return self.rules.add(rule_name(name), body)

    def visit(self, schema: Any, path: str, depth: int, name: str) -> str:
        """The GBNF body for ``schema`` at ``path`` (the JSON-pointer-ish field name)."""
        if depth > MAX_DEPTH:
            raise refuse(path, f"nests subschemas deeper than the limit of {MAX_DEPTH} levels")
        try:
            return self._visit(schema, path, depth, name)
        except GrammarTooLarge:
            raise refuse(
                path,
                f"makes the grammar larger than the limit of {MAX_RULE_UNITS} elements",
            ) from None

    def sub(self, schema: Any, path: str, depth: int, name: str) -> str:
        """A rule name for a subschema (its body made a rule unless it is one name)."""
        body = self.visit(schema, path, depth + 1, name)
        if is_name(body):
            return body
        return self.rule(name, body)

    # ----- dispatch ---------------------------------------------------------------------

    def _visit(self, schema: Any, path: str, depth: int, name: str) -> str:
        if schema is True or schema == {}:
            return self.prim("value")
        if schema is False:
            raise refuse(path, "is false: no value satisfies it")
        if not isinstance(schema, Mapping):
            raise refuse(path, "is not a schema (an object or true/false)")
        if "$ref" in schema:
            return self._ref(schema["$ref"], path, depth)
        if "const" in schema:
            return f"{json_literal(schema['const'], path)} space" + self._space()
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise refuse(at(path, "enum"), "must be a non-empty array")
            self.prim("space")
            choices = " | ".join(dict.fromkeys(json_literal(v, path) for v in values))
            self.rules.spend(len(values))
            return f"({choices}) space"
        for key in ("anyOf", "oneOf"):  # oneOf as anyOf: the grammar cannot count matches
            if key in schema:
                return self._any_of(schema[key], at(path, key), depth, name)
        if "allOf" in schema:
            return self._visit(self._all_of(schema, path), path, depth + 1, name)
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                raise refuse(at(path, "type"), "is an empty list")
            branches = [{**schema, "type": t} for t in kind]
            return " | ".join(
                self.sub(b, path, depth, f"{name}-{t}") for b, t in zip(branches, kind, strict=True)
            )
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                return self.prim("value")
        if kind == "object":
            return self._object(schema, path, depth, name)
        if kind == "array":
            return self._array(schema, path, depth, name)
        if kind == "string":
            return self._string(schema, path, name)
        if kind == "integer":
            return self._integer(schema, path, name)
        if kind in ("number", "boolean", "null"):
            return self.prim(kind)
        raise refuse(at(path, "type"), f"is {kind!r}, which is not a JSON Schema type")

    def _space(self) -> str:
        self.prim("space")
        return ""

    # ----- references and combinations --------------------------------------------------

    def _ref(self, ref: Any, path: str, depth: int) -> str:
        where = at(path, "$ref")
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise refuse(where, "is not a local reference ('#/...'); remote ones are not fetched")
        known = self.refs.get(ref)
        if known is not None:
            return known
        target = self._resolve(ref, where)
        name = self.rules.reserve(rule_name("ref-" + ref.rsplit("/", 1)[-1]))
        self.refs[ref] = name  # before visiting, so a recursive schema refers to itself
        self.rules.define(name, self.visit(target, ref[2:].replace("/", "."), depth + 1, name))
        return name

    def _resolve(self, ref: str, where: str) -> Any:
        node: Any = self.root
        for raw in ref[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise refuse(where, f"names {ref!r}, which the schema does not define")
        return node

    def _any_of(self, branches: Any, path: str, depth: int, name: str) -> str:
        if not isinstance(branches, list) or not branches:
            raise refuse(path, "must be a non-empty array of schemas")
        names = [self.sub(b, f"{path}.{i}", depth, f"{name}-{i}") for i, b in enumerate(branches)]
        return " | ".join(dict.fromkeys(names))

    def _all_of(self, schema: Mapping[str, Any], path: str) -> dict[str, Any]:
        """allOf merged into one schema: properties and required united, other keywords
        of later parts winning (enough for allOf of objects, its common use)."""
        parts = schema["allOf"]
        if not isinstance(parts, list):
            raise refuse(at(path, "allOf"), "must be an array of schemas")
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for i, part in enumerate(parts):
            hops = 0
            while isinstance(part, Mapping) and "$ref" in part and hops < MAX_DEPTH:
                part, hops = self._resolve_checked(part["$ref"], f"{path}.allOf.{i}"), hops + 1
            if not isinstance(part, Mapping):
                raise refuse(f"{path}.allOf.{i}", "must be an object schema")
            for key, value in part.items():
                if key == "properties" and isinstance(value, Mapping):
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def _resolve_checked(self, ref: Any, path: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise refuse(at(path, "$ref"), "is not a local reference ('#/...')")
        return self._resolve(ref, at(path, "$ref"))

    # ----- objects ----------------------------------------------------------------------

    def _object(self, schema: Mapping[str, Any], path: str, depth: int, name: str) -> str:
        props = schema.get("properties", {})
        if not isinstance(props, Mapping):
            raise refuse(at(path, "properties"), "must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise refuse(at(path, "required"), "must be an array of property names")
        extra = schema.get("additionalProperties", None if props else True)
        self._space()
        if not props and not required and extra in (True, None, {}):
            return self.prim("object")
        kvs: dict[str, str] = {}
        for key in [*props, *(r for r in required if r not in props)]:
            sub = props.get(key, True)
            where = f"{path}.properties.{key}" if path else f"properties.{key}"
            value = self.sub(sub, where, depth, f"{name}-{key}")
            kvs[key] = self.rule(
                f"{name}-{key}-kv", f'{json_literal(key, where)} ":" space {value}'
            )
        wanted = set(required)
        must = [kvs[k] for k in kvs if k in wanted]
        maybe = [kvs[k] for k in kvs if k not in wanted]
        extra_kv = None
        if extra not in (None, False):
            where = at(path, "additionalProperties")
            value = self.sub(extra, where, depth, f"{name}-additional")
            extra_kv = self.rule(
                f"{name}-additional-kv", f'{self.prim("string")} ":" space {value}'
            )
        tail = f' ("," space {extra_kv})*' if extra_kv else ""
        if must:
            parts = [' "," space '.join(must), *(f'("," space {m})?' for m in maybe)]
            self.rules.spend(len(parts))
            return f'"{{" space {" ".join(parts)}{tail} "}}" space'
        options = []
        if maybe:
            options.append(optional_in_order(self.rules, maybe, name) + tail)
        if extra_kv:
            options.append(f"{extra_kv}{tail}")
        return f'"{{" space ({" | ".join(options)})? "}}" space'

    # ----- arrays -----------------------------------------------------------------------

    def _array(self, schema: Mapping[str, Any], path: str, depth: int, name: str) -> str:
        self._space()
        items = schema.get("items", True)
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft 4-2019 tuples
            prefix, items = items, schema.get("additionalItems", False)
        low = min_count(schema, "minItems", path)
        high = max_count(schema, "maxItems", path)
        if prefix is not None and prefix != []:
            if not isinstance(prefix, list):
                raise refuse(at(path, "prefixItems"), "must be an array of schemas")
            names = [
                self.sub(p, f"{path}.prefixItems.{i}", depth, f"{name}-{i}")
                for i, p in enumerate(prefix)
            ]
            self.rules.spend(len(names))
            body = ' "," space '.join(names)
            if items is not False and (high is None or high > len(names)):
                item = self.sub(items, at(path, "items"), depth, f"{name}-item")
                nxt = self.rule(f"{name}-next", f'"," space {item}')
                more_high = None if high is None else high - len(names)
                more = self.rules.repeat(nxt, max(0, low - len(names)), more_high, f"{name}-more")
                body = f"{body} {more}".strip()
            return f'"[" space {body} "]" space'
        if items is False:
            return '"[" space "]" space'
        item = self.sub(items, at(path, "items"), depth, f"{name}-item")
        if high is not None and high < low:
            raise refuse(at(path, "maxItems"), f"is below minItems ({low})")
        if high == 0:
            return '"[" space "]" space'
        nxt = self.rule(f"{name}-next", f'"," space {item}')
        rest = self.rules.repeat(nxt, max(0, low - 1), None if high is None else high - 1, name)
        inner = f"{item} {rest}".strip()
        return f'"[" space {inner} "]" space' if low > 0 else f'"[" space ({inner})? "]" space'

    # ----- scalars ----------------------------------------------------------------------

    def _string(self, schema: Mapping[str, Any], path: str, name: str) -> str:
        self._space()
        fmt = schema.get("format")
        if fmt in FORMATS:
            return f'"\\"" {self.prim(fmt)} "\\"" space'
        if "pattern" in schema:
            where = at(path, "pattern")
            return f'"\\"" {pattern_rule(self.rules, schema["pattern"], name, where)} "\\"" space'
        low = min_count(schema, "minLength", path)
        high = max_count(schema, "maxLength", path)
        if high is not None and high < low:
            raise refuse(at(path, "maxLength"), f"is below minLength ({low})")
        if low == 0 and high is None:
            return self.prim("string")
        chars = self.rules.repeat(self.prim("char"), low, high, f"{name}-chars")
        return f'"\\"" {chars} "\\"" space'

    def _integer(self, schema: Mapping[str, Any], path: str, name: str) -> str:
        self._space()
        low = integer_bound(schema, "minimum", "exclusiveMinimum", path, math.ceil, 1)
        high = integer_bound(schema, "maximum", "exclusiveMaximum", path, math.floor, -1)
        if low is not None and high is not None and low > high:
            raise refuse(path, f"allows no integer: the range is {low} to {high}")
        return f"{self.rules.integer_range(low, high, f'{name}-int')} space"
