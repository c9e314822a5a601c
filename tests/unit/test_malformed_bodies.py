"""Malformed request bodies never give a 500: every POST route of both APIs answers a 4xx
in its own error format (LocalLab's ``{"detail"}``, OpenAI's ``{"error": {...}}``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeFactory
from helpers import make_client, write_registry
from litestar.testing import TestClient

BODY_ROUTES = (
    "/generate",
    "/chat",
    "/generate/batch",
    "/models/load",
    "/v1/chat/completions",
    "/v1/completions",
)

_ALL_FIELDS = (
    b'"prompts": ["x"], "messages": [{"role": "user", "content": "x"}], '
    b'"model_id": "alpha", "model": "alpha"'
)

MALFORMED: dict[str, bytes] = {
    "truncated": b'{"prompt": "hi", "messages": [{"role": "user"',
    "array": b'[{"role": "user", "content": "hi"}]',
    "number": b"42",
    "string": b'"hello"',
    "null": b"null",
    "empty": b"",
    "invalid_utf8": b'{"prompt": "\xff\xfe", "model_id": "\xc3(", "model": "\xff"}',
    "wrong_types": (
        b'{"prompt": 5, "prompts": "x", "messages": "hi", "model_id": 7, "model": [],'
        b' "max_tokens": "10", "stream": "yes"}'
    ),
    "huge_numbers": (
        b'{"prompt": "x", ' + _ALL_FIELDS + b', "max_length": 1e999, "max_tokens": '
        b'100000000000000000000000000, "temperature": 1e308, "n": 99999999999}'
    ),
    "raw_control_characters": b'{"prompt": "a\x00\x01b", "model_id": "a\nb"}',
    "deep_nesting": b"[" * 5000 + b"]" * 5000,
    "lone_surrogate": b'{"prompt": "\\ud800", "prompts": ["\\udc00"], "model_id": "\\ud800"}',
    "nan": b'{"prompt": "x", ' + _ALL_FIELDS + b', "temperature": NaN}',
}
"""Bodies no route accepts."""

ODD: dict[str, bytes] = {
    "empty_strings": (
        b'{"prompt": "", "prompts": [""], "messages": [{"role": "", "content": ""}],'
        b' "model_id": "", "model": ""}'
    ),
    "escaped_control_characters": (
        b'{"prompt": "\\u0000\\u001b[31m", "prompts": ["\\u0000"], "messages": [{"role": '
        b'"user", "content": "\\u0000\\n"}], "model_id": "x\\n\\u001b[2J", "model": "\\u0000"}'
    ),
}
"""Bodies a route may accept or refuse, but never with a 5xx."""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    registry = write_registry(tmp_path_factory.mktemp("registry"))
    with make_client(registry, FakeFactory()) as c:
        assert c.post("/models/load", json={"model_id": "alpha"}).status_code == 200
        yield c


def _post(client: TestClient[Any], route: str, body: bytes) -> Any:
    return client.post(route, content=body, headers={"content-type": "application/json"})


def assert_api_error(route: str, response: Any) -> None:
    """A 4xx in the error format of the API that owns ``route``."""
    assert 400 <= response.status_code < 500, (route, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if route.startswith("/v1/"):
        assert list(body) == ["error"], body
        assert isinstance(body["error"]["message"], str) and body["error"]["type"]
    else:
        assert list(body) == ["detail"] and isinstance(body["detail"], str), body


@pytest.mark.parametrize("name", sorted(MALFORMED))
@pytest.mark.parametrize("route", BODY_ROUTES)
def test_malformed_bodies_are_a_4xx_in_the_api_format(
    client: TestClient[Any], route: str, name: str
) -> None:
    assert_api_error(route, _post(client, route, MALFORMED[name]))


@pytest.mark.parametrize("name", sorted(ODD))
@pytest.mark.parametrize("route", BODY_ROUTES)
def test_odd_values_are_never_a_server_error(
    client: TestClient[Any], route: str, name: str
) -> None:
    response = _post(client, route, ODD[name])
    if response.status_code >= 400:
        assert_api_error(route, response)
    if route == "/models/load":  # keep the model loaded for the other cases
        assert client.post("/models/load", json={"model_id": "alpha"}).status_code == 200


def test_unload_reads_no_body(tmp_path: Path) -> None:
    with make_client(write_registry(tmp_path), FakeFactory()) as client:
        for body in MALFORMED.values():
            assert _post(client, "/models/unload", body).status_code == 200
