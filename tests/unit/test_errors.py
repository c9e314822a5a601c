"""The error hierarchy, path scrubbing, and the {"detail"} body of every LocalLab error."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeFactory
from helpers import assert_error, make_client

from locallab_cpp.api.locallab.errors import (
    LOCALLAB_ERRORS,
    STATUS_OF_KIND,
    error_body,
    status_of,
)
from locallab_cpp.errors import (
    ClientDisconnected,
    ConfigError,
    ContextLengthExceeded,
    EngineFailure,
    ErrorKind,
    GenerationAborted,
    InvalidRequest,
    LoadConflict,
    LocalLabError,
    ModelNotFound,
    ModelUnavailable,
    NoModelLoaded,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerBusy,
    scrub,
)
from locallab_cpp.http.errors import ErrorFormats, exception_handlers


@pytest.mark.parametrize(
    "path",
    [
        "/root/.cache/huggingface/hub/model.gguf",
        "/home/alice/models/tiny.gguf",
        "/Users/alice/Library/Caches/model.gguf",
        "/tmp/pytest-of-alice/model.gguf",
        "/var/folders/xy/alice/model.gguf",
        "C:\\Users\\alice\\models\\tiny.gguf",
        "d:\\alice\\tiny.gguf",
        "~/models/alice/tiny.gguf",
        "/home/alice",
        "/root",
    ],
)
def test_scrub_removes_paths(path: str) -> None:
    message = f"could not open '{path}': No such file"
    cleaned = scrub(message)
    assert path not in cleaned
    assert "alice" not in cleaned
    assert cleaned == "could not open '<path>': No such file"


def test_scrub_removes_every_path_of_a_message() -> None:
    cleaned = scrub("copy /home/alice/a.gguf to ~/b.gguf failed")
    assert cleaned == "copy <path> to <path> failed"


@pytest.mark.parametrize(
    "message",
    [
        "GET /models/available lists the ids this server knows.",
        "Load one with POST /models/load first.",
        "See /schema, /health, /system/info, /generate/batch and /chat.",
        "POST /models/unload frees memory; /models/current shows it.",
        "The prompt is 300 tokens; the context holds 256 per request.",
        "ratio 3/4 and and/or stay",
    ],
)
def test_scrub_keeps_route_names_and_plain_text(message: str) -> None:
    assert scrub(message) == message


def test_scrub_keeps_routes_beside_paths() -> None:
    cleaned = scrub("open /home/bob/m.gguf failed; see /models/available")
    assert cleaned == "open <path> failed; see /models/available"


def test_error_body_is_detail_only() -> None:
    assert error_body("x") == {"detail": "x"}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (LocalLabError(), 500),
        (ConfigError(), 500),
        (InvalidRequest(), 400),
        (NotFound(), 404),
        (ModelNotFound("m"), 404),
        (NoModelLoaded(), 503),
        (LoadConflict(), 409),
        (PayloadTooLarge(), 413),
        (ContextLengthExceeded(), 413),
        (RateLimited(), 429),
        (ServerBusy(), 503),
        (ModelUnavailable("gone"), 503),
        (GenerationAborted(), 503),
        (EngineFailure(), 500),
        (ClientDisconnected(), 499),
    ],
)
def test_status_codes(error: LocalLabError, status: int) -> None:
    assert status_of(error) == status
    assert error.detail and str(error) == error.detail


def test_detail_and_retry_after() -> None:
    exc = ServerBusy("full", retry_after=4)
    assert exc.detail == "full"
    assert exc.retry_after == 4
    assert ServerBusy().detail == ServerBusy.default_detail
    assert "POST /models/load" in NoModelLoaded().detail


def test_unexpected_exception_is_500_without_internals(models_file: Path) -> None:
    boom = RuntimeError("boom in /home/alice/secret/module.py, line 3")
    with make_client(models_file, FakeFactory(tokenize_error=boom)) as client:
        response = client.post("/generate", json={"prompt": "hi"})
    detail = assert_error(response, 500)
    assert detail == "Internal server error; see the server log."
    for leak in ("Traceback", "boom", "alice", "RuntimeError", "module.py", 'File "'):
        assert leak not in response.text


def test_engine_failure_is_500_with_scrubbed_detail(models_file: Path) -> None:
    failure = EngineFailure("llama_decode returned -1 for /home/alice/m.gguf")
    with make_client(models_file, FakeFactory(tokenize_error=failure)) as client:
        response = client.post("/chat", json={"messages": [{"role": "user", "content": "x"}]})
    detail = assert_error(response, 500, "llama_decode returned -1")
    assert "alice" not in detail and "<path>" in detail


def test_path_like_model_id_is_404_and_scrubbed(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/generate", json={"prompt": "hi", "model_id": "/home/alice/evil.gguf"})
    detail = assert_error(response, 404, "/models/available")
    assert "alice" not in detail


def test_locallab_errors_keep_their_retry_after_header(models_file: Path) -> None:
    factory = FakeFactory(queue_capacity=0, retry_after=9)
    with make_client(models_file, factory) as client:
        response = client.post("/generate", json={"prompt": "hi"})
    assert_error(response, 503)
    assert response.headers["retry-after"] == "9"


def test_handlers_cover_every_exception() -> None:
    assert set(exception_handlers(ErrorFormats(LOCALLAB_ERRORS))) >= {LocalLabError, Exception}


def test_every_kind_has_a_locallab_status() -> None:
    assert set(STATUS_OF_KIND) == set(ErrorKind)


def test_domain_errors_know_no_http() -> None:
    assert not hasattr(LocalLabError(), "status_code")
    assert NotFound().kind is ErrorKind.NOT_FOUND
    assert ModelNotFound("m").kind is ErrorKind.MODEL_NOT_FOUND


def test_a_text_too_long_for_any_tokenization_is_refused_before_tokenizing() -> None:
    from locallab_cpp.errors import ContextLengthExceeded

    ContextLengthExceeded.check_text(10 * 48 - 48, 48, 10)  # 9 tokens at least: may fit
    ContextLengthExceeded.check_text(10**9, 0, 10)  # longest token unknown: no check
    with pytest.raises(ContextLengthExceeded, match="at least 10 tokens"):
        ContextLengthExceeded.check_text(10 * 48, 48, 10)
