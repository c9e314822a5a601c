"""Token buckets with explicit clocks, and the 429 middleware: limited for clients off the
loopback interface, for loopback ones only with rate_limit_loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import REMOTE_HOST, assert_error, from_address, make_client
from litestar.types import Message, Receive, Scope, Send

from locallab_cpp.api import error_formats
from locallab_cpp.app import BUILTIN_APIS
from locallab_cpp.cli import build_parser
from locallab_cpp.config import is_loopback_address as is_loopback
from locallab_cpp.config import load_settings
from locallab_cpp.http import ratelimit
from locallab_cpp.http.ratelimit import RateLimiter, RateLimitMiddleware, TokenBucket


def test_bucket_burst_then_refill() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(1.0)  # empty: one token is a second away
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0  # refilled one token
    assert bucket.take(1.0) == pytest.approx(1.0)


def test_bucket_never_holds_more_than_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == pytest.approx(0.5)


def test_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=0.5, burst=1, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(1.0) == pytest.approx(1.0)  # half a token in the bucket
    assert bucket.take(2.0) == 0.0


def test_limiter_per_minute_math() -> None:
    limiter = RateLimiter(per_minute=60, burst=10)
    assert limiter.rate == pytest.approx(1.0)
    assert all(limiter.check("a", now=0.0) == 0.0 for _ in range(10))
    assert limiter.check("a", now=0.0) == pytest.approx(1.0)
    assert limiter.check("a", now=1.0) == 0.0
    assert limiter.check("a", now=1.0) == pytest.approx(1.0)


def test_limiter_retry_after_seconds() -> None:
    limiter = RateLimiter(per_minute=6, burst=1)  # one token every 10 s
    assert limiter.check("c", now=100.0) == 0.0
    assert limiter.check("c", now=100.0) == pytest.approx(10.0)
    assert limiter.check("c", now=105.0) == pytest.approx(5.0)
    assert limiter.check("c", now=110.0) == 0.0


def test_limiter_keeps_clients_apart() -> None:
    limiter = RateLimiter(per_minute=60, burst=1)
    assert limiter.check("a", now=0.0) == 0.0
    assert limiter.check("a", now=0.0) > 0
    assert limiter.check("b", now=0.0) == 0.0


def test_limiter_forgets_the_least_recent_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_TRACKED_CLIENTS", 2)
    limiter = RateLimiter(per_minute=1, burst=1)
    assert limiter.check("a", now=0.0) == 0.0
    assert limiter.check("b", now=0.0) == 0.0
    assert limiter.check("a", now=0.0) > 0  # a is now the most recent
    assert limiter.check("c", now=0.0) == 0.0  # evicts b, not a
    assert limiter.check("a", now=0.0) > 0
    assert limiter.check("b", now=0.0) == 0.0  # b starts afresh


def test_middleware_answers_429(models_file: Path) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=2) as client:
        from_address(client)
        assert client.get("/models/available").status_code == 200
        assert client.post("/generate", json={"prompt": "x"}).status_code == 200
        response = client.get("/models/available")
        assert_error(response, 429, "Rate limit")
        retry = int(response.headers["retry-after"])
        assert 1 <= retry <= 60
        # Invalid requests are refused by the limiter before validation.
        assert client.post("/generate", json={"prompt": ""}).status_code == 429


def test_health_is_exempt(models_file: Path) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=1) as client:
        from_address(client)
        assert client.get("/system/info").status_code == 200
        assert client.get("/system/info").status_code == 429
        for _ in range(20):
            assert client.get("/health").status_code == 200


def test_rate_limit_zero_switches_it_off(models_file: Path) -> None:
    with make_client(models_file, rate_limit=0.0, rate_burst=1) as client:
        from_address(client)
        assert all(client.get("/models/available").status_code == 200 for _ in range(15))


def test_default_settings_limit_bursts_of_ten(models_file: Path) -> None:
    with make_client(models_file, rate_limit=60.0) as client:
        from_address(client)
        codes = [client.get("/models/current").status_code for _ in range(12)]
    assert codes[:10] == [200] * 10
    assert 429 in codes[10:]


# ------------------------------------------------------------- loopback clients are exempt


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.45.6.7", True),  # all of 127.0.0.0/8 is loopback
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client on a dual-stack socket
        (REMOTE_HOST, False),
        ("192.168.1.20", False),
        ("::ffff:192.168.1.20", False),
        ("2001:db8::1", False),
        ("localhost", False),  # a name, not an address: no proof it is local
        ("testclient", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_are_exempt_by_default(models_file: Path, host: str) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=2) as client:
        from_address(client, host)
        codes = [client.get("/models/available").status_code for _ in range(10)]
        codes.append(client.post("/generate", json={"prompt": "x"}).status_code)
    assert codes == [200] * 11


def test_a_remote_client_is_limited_while_loopback_is_not(models_file: Path) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=1) as client:
        handler = client.app.asgi_handler
        from_address(client, REMOTE_HOST)
        assert client.get("/models/available").status_code == 200
        assert_error(client.get("/models/available"), 429, "Rate limit")
        client.app.asgi_handler = handler
        from_address(client, "127.0.0.1")
        assert all(client.get("/models/available").status_code == 200 for _ in range(5))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_rate_limit_loopback_applies_it_to_loopback_clients(models_file: Path, host: str) -> None:
    with make_client(models_file, rate_limit=1.0, rate_burst=2, rate_limit_loopback=True) as client:
        from_address(client, host)
        codes = [client.get("/models/available").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        # /health stays exempt.
        assert client.get("/health").status_code == 200


async def _app_ok(scope: Scope, receive: Receive, send: Send) -> None:
    """The app beneath the middleware: answers 200 with no body."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _statuses(middleware: RateLimitMiddleware, client: tuple[str, int] | None, n: int) -> list[int]:
    """Statuses of ``n`` GET /models/available requests from ``client``, ASGI only."""

    async def one() -> int:
        sent: list[Any] = []

        async def send(message: Message) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        # Only the keys the middleware reads: a scope as uvicorn would hand it in.
        scope: dict[str, Any] = {
            "type": "http",
            "method": "GET",
            "path": "/models/available",
            "headers": [],
            "client": client,
        }
        await middleware(cast("Scope", scope), receive, send)
        return int(sent[0]["status"])

    async def run() -> list[int]:
        return [await one() for _ in range(n)]

    return asyncio.run(run())


def test_middleware_scope_client_decides() -> None:
    formats = error_formats(BUILTIN_APIS)
    default = RateLimitMiddleware(_app_ok, RateLimiter(per_minute=1, burst=2), formats)
    assert _statuses(default, ("203.0.113.7", 5000), 3) == [200, 200, 429]
    assert _statuses(default, ("127.0.0.1", 5000), 5) == [200] * 5
    assert _statuses(default, ("::1", 5000), 5) == [200] * 5
    # No client address (not a TCP socket): limited like any unknown client.
    assert _statuses(default, None, 3) == [200, 200, 429]
    strict = RateLimitMiddleware(
        _app_ok,
        RateLimiter(per_minute=1, burst=2),
        formats,
        limit_loopback=True,
    )
    assert _statuses(strict, ("127.0.0.1", 5000), 3) == [200, 200, 429]


# ------------------------------------------------------------ the rate_limit_loopback setting


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("0", False)])
def test_rate_limit_loopback_from_the_environment(tmp_path: Path, raw: str, expected: bool) -> None:
    models_file = str(tmp_path / "x.toml")
    assert load_settings({"models_file": models_file}, env={}).rate_limit_loopback is False
    env = {"LOCALLAB_RATE_LIMIT_LOOPBACK": raw}
    assert load_settings({"models_file": models_file}, env=env).rate_limit_loopback is expected


def test_rate_limit_loopback_flag() -> None:
    args = build_parser().parse_args(["serve", "--rate-limit-loopback"])
    assert args.rate_limit_loopback is True
    # Absent means "not given", so env and models.toml values still count.
    assert build_parser().parse_args(["serve"]).rate_limit_loopback is None
