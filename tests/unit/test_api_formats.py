"""Errors are rendered in the format of the API that owns the request's path.

A made-up "toy" API at /toy, with an error format of its own, sits beside LocalLab: every
kind of error on a /toy path (unknown route, wrong method, validation, a domain error, an
unexpected exception, a 429) comes back in the toy format, and LocalLab's paths keep
``{"detail"}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers import assert_error, from_address, make_client
from litestar import Controller, get, post
from litestar.params import JSONBody
from litestar.testing import TestClient

from locallab_cpp.api import Api, error_formats
from locallab_cpp.api.locallab.errors import LOCALLAB_ERRORS
from locallab_cpp.api.locallab.routes import LOCALLAB_API
from locallab_cpp.errors import ErrorKind, NoModelLoaded
from locallab_cpp.http.errors import ErrorFormats, Problem, render


class ToyErrors:
    """An error format unlike LocalLab's, with a status of its own for NO_MODEL."""

    def status(self, kind: ErrorKind) -> int:
        return 424 if kind is ErrorKind.NO_MODEL else LOCALLAB_ERRORS.status(kind)

    def body(self, problem: Problem, status: int) -> Any:
        return {"error": {"message": problem.detail, "type": problem.kind.value, "code": status}}


class EchoBody(msgspec.Struct):
    n: int


class ToyController(Controller):
    @get("/ping")
    async def ping(self) -> dict[str, bool]:
        return {"pong": True}

    @post("/echo", status_code=200)
    async def echo(self, data: JSONBody[EchoBody]) -> EchoBody:
        return data

    @get("/needs-model")
    async def needs_model(self) -> None:
        raise NoModelLoaded()

    @get("/boom")
    async def boom(self) -> None:
        raise RuntimeError("boom in /home/alice/secret.py")


TOY = ToyErrors()
TOY_API = Api(name="toy", prefix="/toy", routes=(ToyController,), errors=TOY)


@pytest.fixture
def toy_client(models_file: Path) -> Iterator[TestClient[Any]]:
    with make_client(models_file, apis=(LOCALLAB_API, TOY_API)) as client:
        yield client


def toy_error(response: Any, status: int, kind: ErrorKind) -> str:
    """The response is ``status`` in the toy format with ``kind``; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    assert body["error"]["type"] == kind.value and body["error"]["code"] == status
    return str(body["error"]["message"])


def test_toy_routes_are_mounted_under_their_prefix(toy_client: TestClient[Any]) -> None:
    assert toy_client.get("/toy/ping").json() == {"pong": True}
    assert_error(toy_client.get("/ping"), 404)  # not at the root


@pytest.mark.parametrize("path", ["/toy/nope", "/toy", "/toy/ping/deeper"])
def test_unknown_route_under_a_prefix_is_404_in_its_format(
    toy_client: TestClient[Any], path: str
) -> None:
    assert "Not found" in toy_error(toy_client.get(path), 404, ErrorKind.NOT_FOUND)


def test_prefixes_match_whole_segments(toy_client: TestClient[Any]) -> None:
    assert_error(toy_client.get("/toys/nope"), 404)
    assert_error(toy_client.get("/nope"), 404)


def test_wrong_method_is_405_in_its_format_with_allow(toy_client: TestClient[Any]) -> None:
    response = toy_client.delete("/toy/ping")
    toy_error(response, 405, ErrorKind.METHOD_NOT_ALLOWED)
    assert "GET" in response.headers["allow"]


def test_validation_error_is_400_in_its_format(toy_client: TestClient[Any]) -> None:
    message = toy_error(
        toy_client.post("/toy/echo", json={"n": "one"}), 400, ErrorKind.INVALID_REQUEST
    )
    assert "'n'" in message
    toy_error(
        toy_client.post("/toy/echo", content=b"{", headers={"content-type": "application/json"}),
        400,
        ErrorKind.INVALID_REQUEST,
    )
    assert toy_client.post("/toy/echo", json={"n": 1}).json() == {"n": 1}


def test_domain_error_gets_the_apis_own_status(toy_client: TestClient[Any]) -> None:
    message = toy_error(toy_client.get("/toy/needs-model"), 424, ErrorKind.NO_MODEL)
    assert "POST /models/load" in message


def test_unexpected_error_is_500_without_internals(toy_client: TestClient[Any]) -> None:
    response = toy_client.get("/toy/boom")
    assert toy_error(response, 500, ErrorKind.INTERNAL).startswith("Internal server error")
    for leak in ("boom", "alice", "RuntimeError", "Traceback"):
        assert leak not in response.text


def test_rate_limit_answers_in_the_paths_format(models_file: Path) -> None:
    with make_client(
        models_file, apis=(LOCALLAB_API, TOY_API), rate_limit=1.0, rate_burst=1
    ) as client:
        from_address(client)  # off loopback: the limit applies
        assert client.get("/toy/ping").status_code == 200
        toy = client.get("/toy/ping")
        assert "Rate limit" in toy_error(toy, 429, ErrorKind.RATE_LIMITED)
        assert 1 <= int(toy.headers["retry-after"]) <= 60
        assert_error(client.get("/models/available"), 429, "Rate limit")


def test_locallab_paths_keep_detail_bodies(toy_client: TestClient[Any]) -> None:
    assert_error(toy_client.get("/nope"), 404, "Not found")
    assert_error(toy_client.get("/generate"), 405)
    assert toy_client.get("/health").status_code == 200


# ----- the registry by itself ---------------------------------------------------------------


def test_longest_prefix_wins() -> None:
    other = ToyErrors()
    formats = ErrorFormats(LOCALLAB_ERRORS)
    formats.register("/v1", TOY)
    formats.register("/v1/messages/", other)
    assert formats.for_path("/v1/chat/completions") is TOY
    assert formats.for_path("/v1") is TOY
    assert formats.for_path("/v1/messages") is other
    assert formats.for_path("/v1/messages/count_tokens") is other
    assert formats.for_path("/v1/messagesx") is TOY
    assert formats.for_path("/v10/x") is LOCALLAB_ERRORS
    assert formats.for_path("/generate") is LOCALLAB_ERRORS


def test_a_prefix_is_registered_once() -> None:
    formats = ErrorFormats(LOCALLAB_ERRORS)
    formats.register("/api", TOY)
    formats.register("/api", TOY)  # the same renderer again is harmless
    with pytest.raises(ValueError, match="twice"):
        formats.register("/api/", ToyErrors())


def test_exactly_one_api_owns_the_root() -> None:
    assert error_formats([LOCALLAB_API, TOY_API]).default is LOCALLAB_ERRORS
    with pytest.raises(ValueError, match="root"):
        error_formats([TOY_API])
    with pytest.raises(ValueError, match="root"):
        error_formats([LOCALLAB_API, LOCALLAB_API])


def test_render_adds_retry_after_and_keeps_fixed_status() -> None:
    rendered = render(LOCALLAB_ERRORS, Problem.of(ErrorKind.BUSY, "full", retry_after=3))
    assert (rendered.status, rendered.body) == (503, {"detail": "full"})
    assert rendered.headers == {"Retry-After": "3"}
    fixed = render(TOY, Problem.of(ErrorKind.INVALID_REQUEST, "x in /home/bob/y", status=415))
    assert fixed.status == 415
    assert fixed.body["error"]["message"] == "x in <path>"
