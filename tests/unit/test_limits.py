"""Request limits (issue #11, item 2): body size (chunked bodies too), prompt against the
context, max_length, batch size, stop strings, message count, and sampling values that are
out of range, NaN, Infinity or absurdly large: each refused with a 413 or a 400 that names
the field, before the engine sees anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fakes import FakeFactory
from helpers import assert_error, make_client

from locallab_cpp.api.locallab.protocol import MAX_BATCH_PROMPTS, MAX_MESSAGES, MAX_STOP_STRINGS

JSON = {"Content-Type": "application/json"}
LIMIT = 4096


def _chunks(total: int) -> Iterator[bytes]:
    """A JSON body of about ``total`` bytes, sent without Content-Length (chunked)."""
    yield b'{"prompt": "'
    for _ in range(total // 1000):
        yield b"a" * 1000
    yield b'", "max_length": 2}'


def test_a_chunked_body_over_the_limit_is_413(models_file: Path, factory: FakeFactory) -> None:
    with make_client(models_file, factory, max_body_bytes=LIMIT) as client:
        response = client.post("/generate", content=_chunks(10 * LIMIT), headers=JSON)
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_error(response, 413, "too large")
        assert factory.last.seen == []
        # A chunked body under the limit is read whole and served.
        small = client.post("/generate", content=_chunks(LIMIT // 2), headers=JSON)
        assert small.status_code == 200, small.text


def test_a_body_over_the_limit_is_413(models_file: Path) -> None:
    with make_client(models_file, max_body_bytes=LIMIT) as client:
        assert_error(client.post("/generate", json={"prompt": "a" * LIMIT}), 413)
        chat = {"messages": [{"role": "user", "content": "a" * LIMIT}]}
        assert_error(client.post("/chat", json=chat), 413)


def test_a_prompt_longer_than_the_context_is_413(models_file: Path, factory: FakeFactory) -> None:
    # The fake engine's context holds 64 tokens; its tokens are words.
    with make_client(models_file, factory) as client:
        response = client.post("/generate", json={"prompt": "word " * 100})
        assert_error(response, 413, "context")
        batch = {"prompts": ["short", "word " * 100]}
        assert_error(client.post("/generate/batch", json=batch), 413)  # refused whole
        assert factory.last.seen == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "max_length": 16385}, "max_length"),
        ({"prompt": "x", "max_length": 0}, "max_length"),
        ({"prompt": "x", "stop": ["s"] * (MAX_STOP_STRINGS + 1)}, "stop"),
        ({"prompt": "x", "stop": "s" * 257}, "stop"),
        ({"prompt": "x", "stop": ["ok", "s" * 257]}, "stop"),
        ({"prompt": "x", "stop": [""]}, "stop"),
        ({"prompt": "x", "temperature": 2.5}, "temperature"),
        ({"prompt": "x", "temperature": 1e308}, "temperature"),
        ({"prompt": "x", "top_p": 0}, "top_p"),
        ({"prompt": "x", "top_k": 10**30}, "top_k"),
        ({"prompt": "x", "seed": 2**64}, "seed"),
        ({"prompt": "x", "repetition_penalty": -1}, "repetition_penalty"),
    ],
)
def test_out_of_range_values_are_400_naming_the_field(
    models_file: Path, factory: FakeFactory, body: dict[str, Any], field: str
) -> None:
    with make_client(models_file, factory) as client:
        assert_error(client.post("/generate", json=body), 400, field)
        assert factory.last.seen == []


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty"])
def test_nan_and_infinity_are_400(models_file: Path, token: bytes, field: str) -> None:
    body = b'{"prompt": "hi", "%s": %s}' % (field.encode(), token)
    with make_client(models_file) as client:
        assert_error(client.post("/generate", content=body, headers=JSON), 400, field)


def test_batch_size_is_bounded(models_file: Path) -> None:
    with make_client(models_file) as client:
        too_many = {"prompts": ["x"] * (MAX_BATCH_PROMPTS + 1)}
        assert_error(client.post("/generate/batch", json=too_many), 400, "prompts")
        assert_error(client.post("/generate/batch", json={"prompts": []}), 400, "prompts")
        most = {"prompts": ["x"] * MAX_BATCH_PROMPTS, "max_length": 1}
        assert client.post("/generate/batch", json=most).status_code == 200


def test_message_count_is_bounded(models_file: Path) -> None:
    message = {"role": "user", "content": "hi"}
    with make_client(models_file) as client:
        too_many = {"messages": [message] * (MAX_MESSAGES + 1)}
        assert_error(client.post("/chat", json=too_many), 400, "messages")
        assert_error(client.post("/chat", json={"messages": []}), 400, "messages")


def test_the_limits_show_in_the_schema(models_file: Path) -> None:
    with make_client(models_file) as client:
        schema = msgspec.json.decode(client.get("/schema/openapi.json").content)
    text = msgspec.json.encode(schema).decode()
    assert f'"maxItems":{MAX_MESSAGES}' in text
    assert f'"maxItems":{MAX_BATCH_PROMPTS}' in text
