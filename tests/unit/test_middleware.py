"""The ASGI stack of http/middleware.py: its documented order, CORS preflights never
throttled, and a 429 that leaves through the CORS layer in the path's API format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import assert_error, make_client, make_settings
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from locallab_cpp.api import error_formats
from locallab_cpp.app import BUILTIN_APIS
from locallab_cpp.http import middleware

PREFLIGHT = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}


def test_stack_order_is_as_documented(models_file: Path) -> None:
    assert middleware.ORDER == ("request_counter", "host_check", "cors", "api_key", "rate_limit")
    with make_client(models_file, rate_limit=60.0) as client:
        assert tuple(middleware.names(client.app.asgi_handler)) == middleware.ORDER


def test_no_rate_limit_layer_when_it_is_off(models_file: Path) -> None:
    with make_client(models_file, rate_limit=0.0) as client:
        assert tuple(middleware.names(client.app.asgi_handler)) == middleware.ORDER[:-1]


def test_preflights_are_never_rate_limited(models_file: Path) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=1) as client:
        for _ in range(5):  # they spend no budget...
            assert client.options("/generate", headers=PREFLIGHT).status_code != 429
        assert client.get("/models/available").status_code == 200
        for _ in range(5):  # ...and pass with an empty bucket
            assert client.options("/chat", headers=PREFLIGHT).status_code != 429
        # A plain OPTIONS is no preflight: it is limited like any request.
        assert_error(client.options("/generate"), 429, "Rate limit")


def test_429_on_a_locallab_path_is_detail_with_retry_after(models_file: Path) -> None:
    with make_client(models_file, rate_limit=6.0, rate_burst=1) as client:
        assert client.post("/generate", json={"prompt": "x"}).status_code == 200
        response = client.post("/generate", json={"prompt": "x"})
        assert_error(response, 429, "Rate limit")
        assert 1 <= int(response.headers["retry-after"]) <= 10


def test_request_counter_counts_refused_requests_too(models_file: Path) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=1) as client:
        before = client.app.state.request_count
        client.get("/models/available")
        assert client.get("/models/available").status_code == 429
        client.options("/generate", headers=PREFLIGHT)
        assert client.app.state.request_count == before + 3


class MarkingCors:
    """A CORS stand-in that adds an Allow-Origin header to every response it passes out."""

    name = "cors"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"access-control-allow-origin", b"*")]
                message = {**message, "headers": headers}  # type: ignore[typeddict-item]
            await send(message)

        await self.app(scope, receive, marked)


def _litestar_handler(handler: Any) -> Any:
    while isinstance(getattr(handler, "name", None), str):
        handler = handler.app
    return handler


def test_a_429_passes_back_out_through_cors(models_file: Path) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=1) as client:
        app = client.app
        settings = make_settings(models_file, rate_limit=1.0, rate_burst=1)
        stack = middleware.layers(settings, app.state, error_formats(BUILTIN_APIS))
        stack = [
            middleware.Layer("cors", MarkingCors) if layer.name == "cors" else layer
            for layer in stack
        ]
        app.asgi_handler = middleware.build(_litestar_handler(app.asgi_handler), stack)
        assert tuple(middleware.names(app.asgi_handler)) == middleware.ORDER

        ok = client.get("/models/available")
        assert ok.headers["access-control-allow-origin"] == "*"
        limited = client.get("/models/available")
        assert_error(limited, 429, "Rate limit")
        assert limited.headers["access-control-allow-origin"] == "*"
        assert "retry-after" in limited.headers
