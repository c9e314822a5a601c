"""JSON schemas with large bounds, deep nesting and many properties, through the real
engine and the real server: each gets a grammar the model generates under, or a 400 that
names the field, and the server stays up (before our converter, maxLength 50000 killed it
with SIGSEGV)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from it_support import HTTP_TIMEOUT, assert_no_leak, open_embedded_engine

from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.schema import checked_grammar, grammar_for_json_schema
from locallab_cpp.engine.types import Completion, GenerationInput, SamplingParams

pytestmark = pytest.mark.integration

PROMPT = "User: Describe a cat as JSON.\nAssistant:"


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": 4}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def _object(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props)}


# (name, schema, the field a 400 must name or None when a grammar must come)
BIG: list[tuple[str, dict[str, Any], str | None]] = [
    ("maxLength 50000", _object({"a": {"type": "string", "maxLength": 50_000}}), None),
    ("maxLength 100000", _object({"a": {"type": "string", "maxLength": 100_000}}), None),
    (
        "maxItems 100000",
        _object({"a": {"type": "array", "items": {"type": "integer"}, "maxItems": 100_000}}),
        None,
    ),
    (
        "minItems 3",
        _object({"a": {"type": "array", "items": {"type": "boolean"}, "minItems": 3}}),
        None,
    ),
    (
        "nested bounded arrays",
        _object(
            {
                "a": {
                    "type": "array",
                    "maxItems": 5000,
                    "items": {
                        "type": "array",
                        "maxItems": 3000,
                        "items": {"type": "string", "maxLength": 20_000},
                    },
                }
            }
        ),
        None,
    ),
    (
        "wide integers",
        _object({"a": {"type": "integer", "minimum": -(10**12), "maximum": 10**15}}),
        None,
    ),
    (
        "10000 properties",
        _object({f"p{i}": {"type": "integer"} for i in range(10_000)}, required=[]),
        None,
    ),
    ("100 levels", _nested(100), "properties.a.properties.a"),
    ("1000 levels", _nested(1000), "properties.a.properties.a"),
    (
        "minLength 10^9",
        _object({"a": {"type": "string", "minLength": 10**9}}),
        "properties.a.minLength",
    ),
]


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    engine = open_embedded_engine(parallel=2, n_ctx=512)
    yield engine
    engine.close()


def _complete(
    engine: LlamaEngine, grammar: str, max_tokens: int, sampling: SamplingParams | None = None
) -> Completion:
    # Greedy by default: it checks the likeliest tokens first and masks the whole
    # vocabulary only when the grammar refuses them all (cheaper on a loaded machine).
    sampling = sampling or SamplingParams(do_sample=False)
    inp = GenerationInput(tuple(engine.tokenize(PROMPT)), sampling, max_tokens, grammar=grammar)

    async def run() -> Completion:
        [handle] = engine.submit([inp])
        return await handle.result()

    return asyncio.run(run())


def test_bounded_output_validates(engine: LlamaEngine) -> None:
    schema = _object(
        {
            "name": {"type": "string", "maxLength": 3},
            "age": {"type": "integer", "minimum": 10, "maximum": 20},
            "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "maxItems": 2},
        }
    )
    grammar = grammar_for_json_schema(schema)
    for sampling in (SamplingParams(do_sample=False), SamplingParams(temperature=1.0, seed=5)):
        done = _complete(engine, grammar, 80, sampling)
        assert done.finish_reason == "stop", done.text
        value = json.loads(done.text)
        assert len(value["name"]) <= 3, value
        assert 10 <= value["age"] <= 20, value
        assert 1 <= len(value["tags"]) <= 2 and set(value["tags"]) <= {"x", "y"}, value


@pytest.mark.parametrize(("name", "schema", "field"), BIG, ids=[b[0] for b in BIG])
def test_big_schemas_in_the_engine(
    engine: LlamaEngine, name: str, schema: dict[str, Any], field: str | None
) -> None:
    from locallab_cpp.errors import InvalidRequest

    if field is not None:
        with pytest.raises(InvalidRequest, match=field.replace(".", r"\.")):
            grammar_for_json_schema(schema)
        return
    grammar = checked_grammar(grammar_for_json_schema(schema))
    done = _complete(engine, grammar, 12)
    assert done.text.startswith("{"), (name, done.text)
    assert done.finish_reason in ("length", "stop"), (name, done.finish_reason)


# ----- the real server -----------------------------------------------------------------


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=HTTP_TIMEOUT) as c:
        yield c


def _check(r: httpx.Response, field: str | None, *, prompt_may_not_fit: bool = False) -> None:
    """200 when a grammar must come, else a 400 in OpenAI's shape naming ``field``."""
    assert_no_leak(r.text)
    if (
        r.status_code == 400
        and prompt_may_not_fit
        and r.json()["error"]["code"] == "context_length_exceeded"
    ):
        return  # the tools are rendered into the prompt: 10,000 of them do not fit
    if field is None:
        assert r.status_code == 200, r.text[:500]
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] in ("length", "stop", "tool_calls"), choice
    else:
        assert r.status_code == 400, r.text[:500]
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and field in error["message"], error


def _post(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    # The 1000-level schema needs more than Python's default recursion limit to encode.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        content = json.dumps(body)
    finally:
        sys.setrecursionlimit(limit)
    headers = {"content-type": "application/json"}
    return client.post("/v1/chat/completions", content=content, headers=headers)


@pytest.mark.parametrize(("name", "schema", "field"), BIG, ids=[b[0] for b in BIG])
def test_big_schemas_over_http(
    client: httpx.Client, name: str, schema: dict[str, Any], field: str | None
) -> None:
    base = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "JSON please"}]}
    r = _post(
        client,
        {
            **base,
            "max_tokens": 6,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        },
    )
    # 1000 schema levels are 3000 JSON levels: the body decoder refuses them first.
    field = "nests" if name == "1000 levels" else field
    _check(r, field)
    tool = {"type": "function", "function": {"name": "put", "parameters": schema}}
    r = _post(
        client,
        {
            **base,
            "max_tokens": 6,
            "tools": [tool],
            "tool_choice": {"type": "function", "function": {"name": "put"}},
        },
    )
    _check(r, field, prompt_may_not_fit=name == "10000 properties")
    assert client.get("/health").status_code == 200  # the server is alive
