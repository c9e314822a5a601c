"""Schemas as fuzz: generated JSON schemas (types, bounds, enums, nesting, $ref, anyOf)
go through the real conversion and llama.cpp's grammar parser in a child process, so a
crash fails the test instead of killing pytest. Each gives a grammar llama.cpp accepts
or an InvalidRequest, within a time bound."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("grammar_child.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
ANSWER_TIMEOUT_S = 60.0  # generous: a loaded 2-core machine; the usual answer takes ms

_bounds = st.one_of(
    st.integers(0, 5),
    st.integers(0, 3000),
    st.integers(0, 2_000_000),
    st.sampled_from([999, 1000, 1001, 2000, 2001]),
)
_ints = st.one_of(st.integers(-(10**6), 10**6), st.integers(-(10**25), 10**25))
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=8))
_names = st.text(min_size=1, max_size=6)


def _string_schema() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={
            "minLength": _bounds,
            "maxLength": _bounds,
            "format": st.sampled_from(["date", "time", "date-time", "uuid", "email"]),
            "pattern": st.sampled_from(
                ["^[a-z]+$", "^\\d{2,4}-x$", "(a|b)*c", '^[^"\\\\]{0,3000}$', "^(?=x)$", "^a{5,2}$"]
            ),
        },
    )


def _integer_schema() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just("integer")},
        optional={
            "minimum": _ints,
            "maximum": _ints,
            "exclusiveMinimum": _ints,
            "exclusiveMaximum": _ints,
        },
    )


_leaves = st.one_of(
    _string_schema(),
    _integer_schema(),
    st.sampled_from([{"type": "number"}, {"type": "boolean"}, {"type": "null"}, {}, True]),
    st.builds(lambda v: {"enum": v}, st.lists(_json_scalars, min_size=1, max_size=5)),
    st.builds(lambda v: {"const": v}, _json_scalars),
    st.just({"$ref": "#/$defs/item"}),
    st.just({"$ref": "#"}),
    st.just({"$ref": "#/$defs/nope"}),
    st.just({"type": ["string", "null"], "maxLength": 3}),
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    objects = st.builds(
        lambda props, required, extra: {
            "type": "object",
            "properties": props,
            "required": [k for k in props if k in required],
            **({} if extra is None else {"additionalProperties": extra}),
        },
        st.dictionaries(_names, children, max_size=6),
        st.sets(_names, max_size=3),
        st.one_of(st.none(), st.booleans(), children),
    )
    arrays = st.builds(
        lambda items, low, high: {
            "type": "array",
            "items": items,
            "minItems": low,
            "maxItems": high,
        },
        children,
        _bounds,
        _bounds,
    )
    tuples = st.builds(
        lambda p: {"type": "array", "prefixItems": p}, st.lists(children, max_size=3)
    )
    unions = st.builds(lambda b: {"anyOf": b}, st.lists(children, min_size=1, max_size=4))
    return st.one_of(objects, arrays, tuples, unions)


_schemas = st.builds(
    lambda body, item: {**body, "$defs": {"item": item}} if isinstance(body, dict) else body,
    st.recursive(_leaves, _extend, max_leaves=12),
    st.recursive(_leaves, _extend, max_leaves=4),
)


class Child:
    """The converter in its own process, asked one schema at a time."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # llama.cpp logs every refused grammar there
            cwd=REPO_ROOT,
            env=env,
            text=True,
        )
        self.selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)

    def ask(self, schema: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(schema) + "\n")
        self.proc.stdin.flush()
        if not self.selector.select(ANSWER_TIMEOUT_S):
            raise AssertionError(f"no answer within {ANSWER_TIMEOUT_S} s for {schema!r}")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=10)
            raise AssertionError(f"the converter's process died ({code}) on {schema!r}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def child() -> Iterator[Child]:
    proc = Child()
    yield proc
    proc.close()


@settings(
    max_examples=300,
    deadline=None,  # the child's own timeout bounds each example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(schema=_schemas)
def test_every_schema_gives_a_grammar_or_a_clear_refusal(child: Child, schema: Any) -> None:
    answer = child.ask(schema)
    event(answer["result"])  # --hypothesis-show-statistics shows the share of each
    assert answer["result"] in ("ok", "invalid"), answer
    if answer["result"] == "invalid":
        assert answer["message"].strip(), answer


def test_the_child_reports_both_outcomes(child: Child) -> None:
    assert child.ask({"type": "string", "maxLength": 50_000}) == {"result": "ok"}
    refused = child.ask({"properties": {"a": {"type": "string", "minLength": 10**9}}})
    assert refused["result"] == "invalid" and "properties.a.minLength" in refused["message"]
