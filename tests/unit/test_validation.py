"""Request validation over HTTP: defaults for null, unknown fields, 400s naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeFactory
from helpers import assert_error, make_client

from locallab_cpp.engine.types import SamplingParams

DEFAULT_SAMPLING = SamplingParams(
    temperature=0.7, top_p=0.9, top_k=80, repetition_penalty=1.15, do_sample=True, seed=None
)
USER = [{"role": "user", "content": "hi"}]


def test_null_fields_take_defaults(client: Any, factory: FakeFactory) -> None:
    body = {
        "prompt": "hello",
        "model_id": None,
        "stream": None,
        "max_length": None,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "repetition_penalty": None,
        "do_sample": None,
        "seed": None,
        "stop": None,
    }
    response = client.post("/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "alpha"
    [seen] = factory.last.seen
    assert seen.sampling == DEFAULT_SAMPLING
    assert seen.max_tokens == 8192
    assert seen.stop == ()


def test_unknown_fields_are_ignored(client: Any, factory: FakeFactory) -> None:
    response = client.post(
        "/generate",
        json={"prompt": "hello", "frobnicate": 1, "options": {"x": [1]}, "temperature": 0.3},
    )
    assert response.status_code == 200, response.text
    assert factory.last.seen[-1].sampling.temperature == 0.3
    response = client.post(
        "/chat", json={"messages": [{"role": "user", "content": "x", "name": "bob"}], "n": 2}
    )
    assert response.status_code == 200, response.text


OUT_OF_RANGE = [
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("top_p", 0),
    ("top_p", -0.5),
    ("top_p", 1.01),
    ("top_k", -1),
    ("top_k", 1001),
    ("repetition_penalty", 0),
    ("repetition_penalty", -1.0),
    ("repetition_penalty", 2.5),
    ("max_length", 0),
    ("max_length", -5),
    ("max_length", 16385),
    ("seed", -1),
    ("seed", 2**40),
    ("stop", ""),
    ("stop", [""]),
    ("stop", ["s"] * 9),
    ("stop", "x" * 257),
    ("model_id", ""),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
@pytest.mark.parametrize("route", ["/generate", "/chat", "/generate/batch"])
def test_out_of_range_is_400_naming_the_field(
    client: Any, factory: FakeFactory, route: str, field: str, value: Any
) -> None:
    base: dict[str, Any] = {
        "/generate": {"prompt": "hi"},
        "/chat": {"messages": USER},
        "/generate/batch": {"prompts": ["hi"]},
    }[route]
    response = client.post(route, json={**base, field: value})
    assert_error(response, 400, f"'{field}")  # 'stop' or 'stop[0]'
    assert factory.last.seen == []  # nothing reached the engine


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0),
        ("temperature", 2),
        ("top_p", 1),
        ("top_p", 0.001),
        ("top_k", 0),
        ("top_k", 1000),
        ("repetition_penalty", 2),
        ("repetition_penalty", 0.01),
        ("max_length", 1),
        ("max_length", 16384),
        ("seed", 0),
        ("stop", ["a", "b", "c", "d", "e", "f", "g", "h"]),
        ("do_sample", False),
    ],
)
def test_boundary_values_are_accepted(
    client: Any, factory: FakeFactory, field: str, value: Any
) -> None:
    response = client.post("/generate", json={"prompt": "hi", field: value})
    assert response.status_code == 200, response.text
    [seen] = factory.last.seen
    if field == "max_length":
        assert seen.max_tokens == value
    elif field == "stop":
        assert seen.stop == tuple(value)
    else:
        assert getattr(seen.sampling, field) == value


@pytest.mark.parametrize(
    "body",
    [
        b"{bad",
        b'{"prompt": "hi",}',
        b'{"prompt": "hi"',
        b'{"prompt": "hi", "temperature": NaN}',
        b'{"prompt": "hi", "temperature": Infinity}',
        b"\xff\xfe",
        b"not json at all",
    ],
)
def test_malformed_json_is_400(client: Any, body: bytes) -> None:
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400)


def test_missing_body_is_400(client: Any) -> None:
    response = client.post("/generate")
    assert_error(response, 400)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/generate", {"prompt": 5}, "prompt"),
        ("/generate", {"prompt": None}, "prompt"),
        ("/generate", {"prompt": ["a"]}, "prompt"),
        ("/generate", {"prompt": "hi", "temperature": "hot"}, "temperature"),
        ("/generate", {"prompt": "hi", "top_k": 1.5}, "top_k"),
        ("/generate", {"prompt": "hi", "max_length": 10.5}, "max_length"),
        ("/generate", {"prompt": "hi", "do_sample": "maybe"}, "do_sample"),
        ("/generate", {"prompt": "hi", "stream": "often"}, "stream"),
        ("/generate", {"prompt": "hi", "stop": 5}, "stop"),
        ("/generate", {"prompt": "hi", "stop": [1, 2]}, "stop"),
        ("/generate", {"prompt": "hi", "model_id": 7}, "model_id"),
        ("/generate", {"prompt": "hi", "seed": "abc"}, "seed"),
        ("/chat", {"messages": "hello"}, "messages"),
        ("/chat", {"messages": [{"role": "user"}]}, "content"),
        ("/chat", {"messages": [{"role": "user", "content": 3}]}, "content"),
        ("/chat", {"messages": [{"content": "x"}]}, "role"),
        ("/generate/batch", {"prompts": "abc"}, "prompts"),
        ("/generate/batch", {"prompts": ["a", 2]}, "prompts"),
        ("/models/load", {"model_id": 5}, "model_id"),
    ],
)
def test_wrong_types_are_400_naming_the_field(
    client: Any, route: str, body: dict[str, Any], field: str
) -> None:
    assert_error(client.post(route, json=body), 400, field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "0.5"),
        ("top_k", "40"),
        ("max_length", "100"),
        ("seed", "7"),
        ("do_sample", 1),
        ("do_sample", "true"),
    ],
)
def test_coercible_wrong_types_are_400_too(client: Any, field: str, value: Any) -> None:
    """decisions.md: wrong types are 400. A JSON string is not a number, nor 1 a boolean."""
    assert_error(client.post("/generate", json={"prompt": "hi", field: value}), 400, f"'{field}'")


@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty", "top_k", "seed"])
def test_infinity_is_400_naming_the_field(client: Any, field: str) -> None:
    # 1e999 is how JSON spells a number too large for a float, i.e. Infinity.
    body = b'{"prompt": "hi", "%s": 1e999}' % field.encode()
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, field)


def test_nan_string_is_400_naming_the_field(client: Any) -> None:
    assert_error(client.post("/generate", json={"prompt": "hi", "top_p": "NaN"}), 400, "top_p")


def test_missing_required_fields_are_400(client: Any) -> None:
    assert_error(client.post("/generate", json={}), 400, "prompt")
    assert_error(client.post("/chat", json={}), 400, "messages")
    assert_error(client.post("/generate/batch", json={}), 400, "prompts")
    assert_error(client.post("/models/load", json={}), 400, "model_id")


def test_body_must_be_an_object(client: Any) -> None:
    assert_error(client.post("/generate", json=["prompt"]), 400)
    assert_error(client.post("/generate", json="prompt"), 400)


def test_empty_prompt_is_400(client: Any) -> None:
    assert_error(client.post("/generate", json={"prompt": ""}), 400, "prompt")


@pytest.mark.parametrize("role", ["tool", "function", "developer", "", "USER"])
def test_unknown_roles_are_400(client: Any, factory: FakeFactory, role: str) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": role, "content": "x"}]
    assert_error(client.post("/chat", json={"messages": messages}), 400, "role")
    assert factory.last.chat_calls == []


def test_each_allowed_role_is_accepted(client: Any, factory: FakeFactory) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    assert client.post("/chat", json={"messages": messages}).status_code == 200
    assert factory.last.chat_calls == [messages]


def test_empty_messages_is_400(client: Any) -> None:
    assert_error(client.post("/chat", json={"messages": []}), 400, "messages")


@pytest.mark.parametrize("count", [0, 65])
def test_batch_size_limits(client: Any, count: int) -> None:
    response = client.post("/generate/batch", json={"prompts": ["p"] * count})
    assert_error(response, 400, "prompts")


def test_batch_of_64_is_accepted(client: Any) -> None:
    response = client.post("/generate/batch", json={"prompts": [f"p{i}" for i in range(64)]})
    assert response.status_code == 200, response.text
    assert len(response.json()["responses"]) == 64


def test_batch_prompts_must_be_non_empty(client: Any) -> None:
    assert_error(client.post("/generate/batch", json={"prompts": ["a", ""]}), 400, "prompts")


def test_unknown_route_is_404(client: Any) -> None:
    # /v1 belongs to the OpenAI API (its own error format): test_openai_api.py covers it.
    for response in (client.get("/nope"), client.post("/v2/chat/completions", json={})):
        detail = assert_error(response, 404)
        assert "Not found" in detail


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("get", "/generate"),
        ("get", "/chat"),
        ("put", "/models/load"),
        ("delete", "/health"),
        ("post", "/models/current"),
        ("post", "/system/info"),
    ],
)
def test_wrong_method_is_405(client: Any, method: str, route: str) -> None:
    assert_error(client.request(method.upper(), route), 405)


def test_body_over_the_size_limit_is_413(models_file: Path) -> None:
    factory = FakeFactory()
    with make_client(models_file, factory, max_body_bytes=1024) as client:
        response = client.post("/generate", json={"prompt": "word " * 400})
        assert_error(response, 413)
        assert factory.last.seen == []
        small = client.post("/generate", json={"prompt": "word " * 10})
        assert small.status_code == 200


def test_validation_detail_is_readable(client: Any) -> None:
    detail = assert_error(client.post("/generate", json={"prompt": "hi", "top_k": 5000}), 400)
    assert detail.startswith("Invalid request")
    assert "$." not in detail  # msgspec's JSON-path suffix is turned into the field name
    assert json.dumps(detail)  # plain string
