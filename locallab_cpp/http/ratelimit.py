"""Per-client rate limiting: a token bucket per client address, as ASGI middleware.

It is the innermost layer of :mod:`locallab_cpp.http.middleware`'s stack, inside CORS, so
a 429 leaves with CORS headers; it renders the 429 in the error format of the path's API.

Clients on the loopback interface are exempt unless ``rate_limit_loopback`` is set
(decisions.md, "Rate limiting", ruling of 2026-11-30): every local editor and tool shares
127.0.0.1, so one bucket for all of them would refuse the bursts one editor alone sends.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from litestar.types import ASGIApp, Receive, Scope, Send

from locallab_cpp.config import is_loopback_address
from locallab_cpp.errors import RateLimited
from locallab_cpp.http.errors import ErrorFormats, Problem, send_problem

# Cheap read-only polls: a client following a download must not spend its budget on them.
EXEMPT_PATHS = frozenset({"/health", "/models/load/progress"})
MAX_TRACKED_CLIENTS = 10_000


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token; return 0 on success, else the seconds until one is free."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets keyed by client address, the least recently seen evicted first."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, client: str, now: float | None = None) -> float:
        """0 if ``client`` may go ahead, else the seconds it should wait."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        return bucket.take(now)


def is_preflight(scope: Scope) -> bool:
    """A CORS preflight: OPTIONS with Access-Control-Request-Method. A browser sends one
    before a cross-origin request; throttling it would fail the request it announces."""
    if scope.get("method") != "OPTIONS":
        return False
    return any(name == b"access-control-request-method" for name, _ in scope["headers"])


class RateLimitMiddleware:
    """Answers 429 with Retry-After once a client's bucket is empty.

    /health, the load-progress poll and CORS preflights are exempt, and so are loopback
    clients unless ``limit_loopback`` is true.
    """

    name = "rate_limit"

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        formats: ErrorFormats,
        *,
        limit_loopback: bool = False,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.formats = formats
        self.limit_loopback = limit_loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS or is_preflight(scope):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else "unknown"
        if not self.limit_loopback and is_loopback_address(host):
            await self.app(scope, receive, send)
            return
        wait = self.limiter.check(host)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        problem = Problem.from_error(RateLimited(retry_after=max(1, math.ceil(wait))))
        await send_problem(send, self.formats.for_path(scope["path"]), problem)
