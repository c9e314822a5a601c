"""The JSON schema to GBNF converter: what its grammars match (checked with llama.cpp's own
grammar sampler over the embedded model's vocabulary), its limits, and the screening of
grammar text before llama.cpp parses it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from locallab_cpp.engine import gbnf
from locallab_cpp.engine.json_grammar import MAX_DEPTH
from locallab_cpp.engine.schema import checked_grammar, grammar_for_json_schema
from locallab_cpp.errors import InvalidRequest


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    import llama_cpp

    from locallab_cpp.models.registry import Registry

    registry = Registry.load(None)
    spec = registry.get(registry.default_id)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(registry.ensure_local(spec)).encode(), params)
    assert model
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def _tokens(vocab: Any, text: str) -> list[int]:
    import llama_cpp

    data = text.encode()
    out = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), out, len(out), False, False)
    assert n >= 0
    return list(out[:n])


def matches(vocab: Any, grammar: str, text: str) -> bool:
    """Whether ``grammar`` lets a model write exactly ``text``, then stop."""
    import llama_cpp

    from locallab_cpp.engine.llama.grammar import GrammarConstraint

    constraint = GrammarConstraint(vocab, grammar)
    try:
        for token in _tokens(vocab, text):
            if not constraint.allowed(np.array([token]))[0]:
                return False
            llama_cpp.llama_sampler_accept(constraint._sampler, token)
        eos = llama_cpp.llama_vocab_eos(vocab)
        return bool(constraint.allowed(np.array([eos]))[0])
    finally:
        constraint.close()


def schema_matches(vocab: Any, schema: Any, value: Any) -> bool:
    return matches(vocab, grammar_for_json_schema(schema), json.dumps(value))


def test_string_lengths_are_enforced_across_chunks(vocab: Any) -> None:
    short = {"type": "string", "maxLength": 3}
    assert schema_matches(vocab, short, "abc")
    assert not schema_matches(vocab, short, "abcd")
    # Above one repetition chunk (1000): the bound is composed of chunks, exactly.
    bounded = {"type": "string", "minLength": 1002, "maxLength": 2001}
    for size, ok in [(1001, False), (1002, True), (1500, True), (2001, True), (2002, False)]:
        assert schema_matches(vocab, bounded, "ab" * (size // 2) + "c" * (size % 2)) == ok, size


def test_item_counts_are_enforced(vocab: Any) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 1001}
    assert not schema_matches(vocab, schema, [7])
    assert schema_matches(vocab, schema, [7, 8])
    assert schema_matches(vocab, schema, list(range(1001)))
    assert not schema_matches(vocab, schema, list(range(1002)))


@pytest.mark.parametrize(
    ("low", "high"), [(-5, 1234), (10, 20), (0, 0), (-300, -17), (99, 100000), (7, None)]
)
def test_integer_ranges_are_enforced(vocab: Any, low: int, high: int | None) -> None:
    schema: dict[str, Any] = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    grammar = grammar_for_json_schema(schema)
    top = high if high is not None else low + 10**6
    probes = {low - 1, low, low + 1, top - 1, top, top + 1, (low + top) // 2, 0, -1, 10**17}
    for value in probes:
        inside = low <= value and (high is None or value <= high)
        assert matches(vocab, grammar, str(value)) == inside, value
    assert not matches(vocab, grammar, "0" + str(abs(low) + 1))  # no leading zeros


def test_exclusive_bounds(vocab: Any) -> None:
    schema = {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}
    assert [v for v in range(-2, 6) if schema_matches(vocab, schema, v)] == [1, 2]


def test_objects_properties_and_combinations(vocab: Any) -> None:
    schema = {
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "type": "object",
        "properties": {
            "kind": {"enum": ["cat", "dog"]},
            "when": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
            "tree": {"$ref": "#/$defs/node"},
            "either": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"const": "x"}]},
        },
        "required": ["kind"],
        "additionalProperties": False,
    }
    grammar = grammar_for_json_schema(schema)
    good = {
        "kind": "cat",
        "when": "2024-02-29",
        "tree": {"next": {"next": {}}},
        "either": None,
        "pair": [3, "x"],
    }
    assert matches(vocab, grammar, json.dumps(good))
    assert matches(vocab, grammar, '{"kind": "dog", "id": "123e4567-e89b-12d3-a456-426614174000"}')
    assert not matches(vocab, grammar, '{"kind": "cow"}')
    assert not matches(vocab, grammar, '{"when": "2024-02-29"}')  # kind is required
    assert not matches(vocab, grammar, '{"kind": "cat", "other": 1}')
    assert not matches(vocab, grammar, '{"kind": "cat", "when": "2024-13-01"}')


def test_optional_properties_in_any_subset(vocab: Any) -> None:
    names = [f"p{i}" for i in range(9)]
    schema = {"type": "object", "properties": {n: {"type": "integer"} for n in names}}
    grammar = grammar_for_json_schema(schema)
    assert matches(vocab, grammar, "{}")
    for subset in (names[8:], names[:1], names[2:7:2], names):
        assert matches(vocab, grammar, json.dumps(dict.fromkeys(subset, 1))), subset
    assert not matches(vocab, grammar, '{"p1": 1, "p0": 1}')  # in the schema's order


def test_all_of_and_additional_properties(vocab: Any) -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": "string", "maxLength": 2}}, "required": ["b"]},
        ]
    }
    assert schema_matches(vocab, schema, {"a": 1, "b": "xy"})
    assert not schema_matches(vocab, schema, {"a": 1})
    extra = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert schema_matches(vocab, extra, {"x": 1, "y": 2})
    assert not schema_matches(vocab, extra, {"x": "no"})


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        ("^[a-z]{2,3}-\\d+$", ["ab-1", "abc-123"], ["a-1", "abcd-1", "ab-"]),
        ("^(cat|dog)s?$", ["cat", "dogs"], ["cow", "cats!"]),
        ("^[^0-9]+$", ['say "hi"', "back\\slash"], ["a1"]),
        ("x", ["x", "axb"], ["ab"]),  # unanchored: anywhere in the string
        ('^a\\.b"$', ['a.b"'], ['axb"']),
    ],
)
def test_patterns(vocab: Any, pattern: str, good: list[str], bad: list[str]) -> None:
    grammar = grammar_for_json_schema({"type": "string", "pattern": pattern})
    for text in good:
        assert matches(vocab, grammar, json.dumps(text)), text
    for text in bad:
        assert not matches(vocab, grammar, json.dumps(text)), text


# ----- limits ------------------------------------------------------------------------------


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def test_deep_nesting_is_refused_naming_the_limit() -> None:
    grammar_for_json_schema(_nested(MAX_DEPTH - 2))
    with pytest.raises(InvalidRequest, match=rf"properties\.a\.properties\.a.*{MAX_DEPTH}"):
        grammar_for_json_schema(_nested(1000))


@pytest.mark.parametrize(
    ("schema", "field", "limit"),
    [
        (
            {"properties": {"a": {"type": "string", "minLength": 2_000_000}}},
            "properties.a.minLength",
            "1000000",
        ),
        ({"type": "array", "minItems": 10**7}, "minItems", "1000000"),
        (
            {"properties": {"p": {"type": "string", "pattern": "^(?=a)$"}}},
            "properties.p.pattern",
            "lookaround",
        ),
        (
            {"properties": {"p": {"type": "string", "pattern": "^(a)\\1$"}}},
            "properties.p.pattern",
            "\\1",
        ),
        ({"properties": {"r": {"$ref": "#/$defs/missing"}}}, "properties.r.$ref", "missing"),
        ({"properties": {"r": {"$ref": "https://example.com/x"}}}, "properties.r.$ref", "remote"),
        (
            {"properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}},
            "properties.n",
            "5 to 1",
        ),
        (
            {"properties": {"s": {"type": "string", "maxLength": -1}}},
            "properties.s.maxLength",
            "non-negative",
        ),
    ],
)
def test_refusals_name_the_field(schema: dict[str, Any], field: str, limit: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        grammar_for_json_schema(schema)
    assert f"'{field}'" in str(info.value) and limit in str(info.value)


def test_huge_bounds_and_wide_schemas_give_grammars_llama_cpp_accepts() -> None:
    schemas = [
        {"type": "string", "maxLength": 100_000},
        {"type": "string", "minLength": 100_000},
        {"type": "array", "items": {"type": "string", "maxLength": 5000}, "maxItems": 100_000},
        {"type": "array", "items": {"type": "integer"}, "minItems": 999_999},
        {"type": "integer", "minimum": -(10**15), "maximum": 10**18},
        {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(10_000)}},
        {"type": "string", "maxLength": 10**12},  # above MAX_BOUND: unenforced, accepted
    ]
    for schema in schemas:
        grammar = grammar_for_json_schema(schema)
        assert checked_grammar(grammar) == grammar


def test_the_rule_budget_is_a_clear_refusal() -> None:
    wide = {
        "type": "object",
        "properties": {
            f"p{i}": {"type": "string", "minLength": i, "maxLength": i + 900} for i in range(3000)
        },
    }
    with pytest.raises(InvalidRequest, match=rf"properties\.p\d+.*{gbnf.MAX_RULE_UNITS}"):
        grammar_for_json_schema(wide)


# ----- grammar text screening -------------------------------------------------------------


def test_deeply_nested_raw_grammar_is_refused_before_llama_cpp() -> None:
    deep = "root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000  # crashes llama.cpp's parser
    with pytest.raises(InvalidRequest, match="parentheses"):
        checked_grammar(deep)
    shallow = "root ::= " + "(" * gbnf.MAX_GROUP_DEPTH + '"a"' + ")" * gbnf.MAX_GROUP_DEPTH
    assert checked_grammar(shallow) == shallow


def test_grammar_shape_skips_literals_and_counts_repetitions() -> None:
    gbnf.check_grammar_shape('root ::= "((((((" [(((] ' + '"x"{2000} ' * 10)
    with pytest.raises(InvalidRequest, match="repetitions"):
        gbnf.check_grammar_shape("root ::= " + '"abcdefgh"{2000} ' * 400)
    with pytest.raises(InvalidRequest, match="characters long"):
        gbnf.check_grammar_shape("#" * (gbnf.MAX_GRAMMAR_CHARS + 1))
