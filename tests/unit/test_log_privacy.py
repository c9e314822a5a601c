"""Privacy of responses and logs: no path, traceback or user name in an error body (both
APIs); request data cannot forge log lines; prompts are not logged, even at debug level."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import FakeFactory
from helpers import make_client, write_registry
from uvicorn.logging import AccessFormatter

from locallab_cpp import logsafe

FORGED = "x\nINFO locallab_cpp: model admin loaded\x1b[2J\u2028"
SECRET = "SECRET-PROMPT-TEXT-4711"


_LOGGERS = ("", "locallab_cpp", "litestar", "httpx", "uvicorn")


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], None]]:
    """A function that sends every record, at debug level, to ``caplog``; call it once the
    app has started (Litestar configures logging then, replacing the root's handlers).
    Levels and handlers are put back afterwards."""
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    root = logging.getLogger()

    def capture() -> None:
        if caplog.handler not in root.handlers:
            root.addHandler(caplog.handler)
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)

    yield capture
    root.removeHandler(caplog.handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_loggable_escapes_control_characters() -> None:
    assert logsafe.loggable("a\nb\r\x1b[31m\u2028\u202e") == "a\\nb\\r\\x1b[31m\\u2028\\u202e"
    assert logsafe.loggable("plain text, ünïcode") == "plain text, ünïcode"


def test_request_data_cannot_forge_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, debug_logs: Callable[[], None]
) -> None:
    with make_client(write_registry(tmp_path), FakeFactory()) as client:
        debug_logs()
        client.post("/models/load", json={"model_id": FORGED})
        client.post("/models/load", json={"model_id": "gone"})  # its file is missing
        client.post("/v1/chat/completions", json={"model": FORGED, "messages": []})
        client.get("/v1/models/x%0AINFO%20forged")
        client.post("/generate", json={"prompt": "hi", "model_id": FORGED})
    assert caplog.records  # the capture works (httpx, litestar, locallab_cpp records)
    for record in caplog.records:
        # Nothing the server logs carries the client's text unescaped.
        assert "\n" not in record.getMessage() or "INFO locallab_cpp" not in record.getMessage()
        assert "\x1b" not in record.getMessage()


def test_the_filter_escapes_uvicorn_access_lines() -> None:
    # uvicorn logs the percent-decoded path: "GET /%0AINFO..." would print a second line.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/models/" + FORGED, "1.1", 404),
        None,
    )
    assert logsafe.ESCAPE_FILTER.filter(record)
    line = AccessFormatter("%(message)s", use_colors=False).format(record)
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert "/v1/models/x\\nINFO locallab_cpp: model admin loaded\\x1b[2J\\u2028" in line


def test_install_adds_the_filter_once(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("locallab-test-install")
    handler = logging.StreamHandler()
    monkeypatch.setattr(logger, "handlers", [handler])
    logsafe.install([logger.name])
    logsafe.install([logger.name])
    assert handler.filters == [logsafe.ESCAPE_FILTER]


def test_prompts_are_not_logged_at_debug_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, debug_logs: Callable[[], None]
) -> None:
    messages = [{"role": "user", "content": SECRET}]
    with make_client(write_registry(tmp_path), FakeFactory()) as client:
        debug_logs()
        assert client.post("/models/load", json={"model_id": "alpha"}).status_code == 200
        assert client.post("/generate", json={"prompt": SECRET}).status_code == 200
        assert client.post("/generate/batch", json={"prompts": [SECRET]}).status_code == 200
        assert client.post("/chat", json={"messages": messages}).status_code == 200
        body = {"model": "alpha", "messages": messages, "stream": True}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        body = {"model": "alpha", "prompt": SECRET}
        assert client.post("/v1/completions", json=body).status_code == 200
    assert caplog.records
    assert SECRET not in caplog.text
    assert all(SECRET not in str(r.args) for r in caplog.records)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/generate", {"prompt": "hi"}),
        ("/v1/completions", {"model": "alpha", "prompt": "hi"}),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}]},
        ),
    ],
)
def test_error_bodies_carry_no_path_or_user_name(tmp_path: Path, route: str, body: dict) -> None:
    # The fake fails with "llama_decode failed in /home/alice/llama.cpp".
    with make_client(write_registry(tmp_path), FakeFactory(fail_after=0)) as client:
        assert client.post("/models/load", json={"model_id": "alpha"}).status_code == 200
        response = client.post(route, json=body)
    assert response.status_code == 500, response.text
    assert "/home" not in response.text and "alice" not in response.text
    assert "Traceback" not in response.text
