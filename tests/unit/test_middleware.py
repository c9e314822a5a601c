"""The ASGI stack of http/middleware.py: its documented order, CORS preflights never
throttled, a 429 that leaves through the CORS layer in the path's API format, paths
normalized before routing, and API-key headers that nothing refuses while no key is set.

The rate-limit tests send from a client off the loopback interface (helpers.from_address):
loopback clients are exempt by default."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import assert_error, from_address, make_client, make_settings
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from locallab_cpp.api import error_formats
from locallab_cpp.app import BUILTIN_APIS
from locallab_cpp.http import middleware

PREFLIGHT = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}


def test_stack_order_is_as_documented(models_file: Path) -> None:
    assert middleware.ORDER == (
        "request_counter",
        "normalize_path",
        "host_check",
        "cors",
        "api_key",
        "content_type",
        "rate_limit",
    )
    with make_client(models_file, rate_limit=60.0) as client:
        assert tuple(middleware.names(client.app.asgi_handler)) == middleware.ORDER


def test_no_rate_limit_layer_when_it_is_off(models_file: Path) -> None:
    with make_client(models_file, rate_limit=0.0) as client:
        assert tuple(middleware.names(client.app.asgi_handler)) == middleware.ORDER[:-1]


def test_preflights_are_never_rate_limited(models_file: Path) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=1) as client:
        from_address(client)
        for _ in range(5):  # they spend no budget...
            assert client.options("/generate", headers=PREFLIGHT).status_code != 429
        assert client.get("/models/available").status_code == 200
        for _ in range(5):  # ...and pass with an empty bucket
            assert client.options("/chat", headers=PREFLIGHT).status_code != 429
        # A plain OPTIONS is no preflight: it is limited like any request.
        assert_error(client.options("/generate"), 429, "Rate limit")


def test_429_on_a_locallab_path_is_detail_with_retry_after(models_file: Path) -> None:
    with make_client(models_file, rate_limit=6.0, rate_burst=1) as client:
        from_address(client)
        assert client.post("/generate", json={"prompt": "x"}).status_code == 200
        response = client.post("/generate", json={"prompt": "x"})
        assert_error(response, 429, "Rate limit")
        assert 1 <= int(response.headers["retry-after"]) <= 10


def test_request_counter_counts_refused_requests_too(models_file: Path) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=1) as client:
        from_address(client)
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
        from_address(client)

        ok = client.get("/models/available")
        assert ok.headers["access-control-allow-origin"] == "*"
        limited = client.get("/models/available")
        assert_error(limited, 429, "Rate limit")
        assert limited.headers["access-control-allow-origin"] == "*"
        assert "retry-after" in limited.headers


# ------------------------------------------------------------------- path normalization


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        ("/", "/"),
        ("/health", "/health"),
        ("/health/", "/health"),
        ("/v1/models/", "/v1/models"),
        ("/v1/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/v1/models/", "/v1/models"),
        ("/v1//chat/completions", "/v1/chat/completions"),
        ("//generate", "/generate"),
        ("/v1/v1", "/v1"),
        ("/v1", "/v1"),
        ("/v1x/v1/models", "/v1x/v1/models"),  # only a doubled /v1 prefix is undone
        ("/models/v1/v1", "/models/v1/v1"),
    ],
)
def test_normalize_path(sent: str, seen: str) -> None:
    assert middleware.normalize_path(sent) == seen


async def _echo_path(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app that answers with the path and raw_path it was given: it stands in
    for the OpenAI /v1 routes, which are not in this tree yet."""
    body = f"{scope['path']} {scope['raw_path'].decode()}".encode()  # type: ignore[typeddict-item]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _echoed(method: str, url: str) -> str:
    """What the echo app behind the normalizer saw of a request to ``url``."""

    async def run() -> str:
        transport = httpx.ASGITransport(app=middleware.PathNormalizer(_echo_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return (await c.request(method, url, json={"model": "m"})).text

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        ("/v1/models/", "/v1/models"),
        ("/v1/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/", "/"),
    ],
)
def test_the_layer_rewrites_path_and_raw_path(sent: str, seen: str) -> None:
    assert _echoed("POST", sent) == f"{seen} {seen}"
    # The query string is not part of the path: it is left alone.
    assert _echoed("GET", sent + "?a=1") == f"{seen} {seen}"


def test_trailing_slashes_reach_locallab_routes(models_file: Path) -> None:
    with make_client(models_file) as client:
        health = client.get("/health/")
        assert health.status_code == 200, health.text
        assert health.json() == client.get("/health").json()
        # A POST is served where it was sent: no redirect, which would lose its body.
        generated = client.post("/generate/", json={"prompt": "x"})
        assert generated.status_code == 200, generated.text
        assert generated.json() == client.post("/generate", json={"prompt": "x"}).json()
        assert client.get("/models/available/").status_code == 200


def test_unknown_paths_still_404_after_normalizing(models_file: Path) -> None:
    with make_client(models_file) as client:
        assert_error(client.get("/nowhere/"), 404)


def test_normalized_health_stays_exempt_from_the_rate_limit(models_file: Path) -> None:
    # The normalizer is above the rate limit, which so sees /health, not /health/.
    with make_client(models_file, rate_limit=1.0, rate_burst=1) as client:
        from_address(client)
        assert all(client.get("/health/").status_code == 200 for _ in range(5))


# ------------------------------------------------------- API-key headers with no key set


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer sk-whatever"}, {"x-api-key": "x"}, {"Authorization": "Bearer"}],
)
def test_api_key_headers_are_accepted_when_no_key_is_set(
    models_file: Path, headers: dict[str, str]
) -> None:
    # Editors send a key even to a local server (OpenAI clients insist on one); with no key
    # configured, nothing may refuse them.
    with make_client(models_file) as client:
        assert client.get("/health", headers=headers).status_code == 200
        response = client.post("/generate", json={"prompt": "x"}, headers=headers)
        assert response.status_code == 200, response.text
