"""Shared helpers of the unit tests: a tiny registry, app/client builders, assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
from fakes import FakeFactory
from litestar.testing import TestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from locallab_cpp.api import Api
from locallab_cpp.app import BUILTIN_APIS, create_app
from locallab_cpp.config import Settings
from locallab_cpp.models.registry import Registry

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]

MODELS_TOML = """\
[[models]]
id = "alpha"
name = "Alpha Test Model"
description = "The first entry: the default model."
path = "alpha.gguf"
chat_format = "chatml"
parameters = "1M"
quantization = "Q4_K_M"
size_bytes = 1000
context_length = 4096

[[models]]
id = "beta"
name = "Beta Test Model"
description = "A second model to switch to."
path = "models/beta.gguf"
size_bytes = 2000

[[models]]
id = "gone"
name = "Missing File"
description = "Its GGUF is not on disk."
path = "gone.gguf"
size_bytes = 3000
"""

ALPHA_BYTES = b"GGUF" + b"\0" * 12
BETA_BYTES = b"GGUF" + b"\0" * 28


def write_registry(tmp_path: Path) -> Path:
    """A models.toml with three file entries; alpha and beta exist, gone does not."""
    (tmp_path / "alpha.gguf").write_bytes(ALPHA_BYTES)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "beta.gguf").write_bytes(BETA_BYTES)
    path = tmp_path / "models.toml"
    path.write_text(MODELS_TOML, encoding="utf-8")
    return path


TEST_HOSTS = ("testserver", "testserver.local")
"""The Host names the test clients send (Litestar's TestClient, httpx's ASGI transport)."""


def make_settings(models_file: Path, **overrides: Any) -> Settings:
    """Test settings: our registry, rate limiting off unless asked for, and the test
    clients' Host names allowed by the Host check."""
    values: dict[str, Any] = {
        "models_file": str(models_file),
        "rate_limit": 0.0,
        "allowed_hosts": TEST_HOSTS,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def make_client(
    models_file: Path,
    factory: FakeFactory | None = None,
    *,
    apis: Sequence[Api] = BUILTIN_APIS,
    **overrides: Any,
) -> Iterator[TestClient[Any]]:
    """A TestClient over create_app with the fake engine and only our registry file (not
    laid over the package's models.toml); the lifespan runs inside. ``apis`` replaces the
    built-in APIs (to add a made-up one)."""
    app = create_app(
        make_settings(models_file, **overrides),
        registry=Registry.from_file(models_file),
        engine_factory=factory or FakeFactory(),
        apis=apis,
    )
    with TestClient(app) as client:
        yield client


def assert_error(response: Any, status: int, *needles: str) -> str:
    """The response is ``status`` with a body of exactly {"detail": str}; returns the detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["detail"], body
    assert isinstance(body["detail"], str) and body["detail"]
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])
    return body["detail"]


def parse_sse(body: str) -> list[tuple[str, str]]:
    """Split an SSE body into (event type, data) pairs the way an SSE client does.

    Data lines of one event are joined with "\\n"; one leading space after "data:" is
    dropped. The body must end with the blank line that closes its last event.
    """
    assert body.endswith("\n\n"), repr(body[-20:])
    events: list[tuple[str, str]] = []
    for block in body[:-2].split("\n\n"):
        kind = "message"
        data: list[str] = []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                kind = value
            else:
                raise AssertionError(f"unexpected SSE line {line!r} in {body!r}")
        events.append((kind, "\n".join(data)))
    return events


def run_async(
    models_file: Path,
    factory: FakeFactory,
    scenario: Callable[[httpx.AsyncClient], Awaitable[T]],
    **overrides: Any,
) -> T:
    """Run ``scenario(client)`` against a fresh app on one event loop, so that requests can
    really overlap (a load that is still running, a generation that is still in flight).

    Litestar's AsyncTestClient runs the app on a portal thread and blocks the caller's loop
    per request, so this drives the app with httpx's ASGI transport on the test's own loop.
    """

    async def main() -> T:
        app = create_app(
            make_settings(models_file, **overrides),
            registry=Registry.from_file(models_file),
            engine_factory=factory,
        )
        transport = httpx.ASGITransport(app=app)
        async with (
            app.lifespan(),
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        ):
            return await asyncio.wait_for(scenario(client), timeout=10)

    return asyncio.run(main())


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` on the event loop until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


REMOTE_HOST = "203.0.113.7"
"""A client address off the loopback interface (TEST-NET-3): the rate limit applies to it."""


class ClientAddress:
    """ASGI wrapper that makes every request come from ``host``: Litestar's TestClient always
    reports the client as "testclient", and the rate limit treats loopback clients apart."""

    def __init__(self, app: ASGIApp, host: str) -> None:
        self.app = app
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = cast("Scope", {**scope, "client": (self.host, 50000)})
        await self.app(scope, receive, send)


def from_address(client: TestClient[Any], host: str = REMOTE_HOST) -> TestClient[Any]:
    """``client``, whose requests now come from ``host`` (wraps the app's whole ASGI stack,
    so call it after any change to ``client.app.asgi_handler``)."""
    client.app.asgi_handler = ClientAddress(client.app.asgi_handler, host)
    return client
