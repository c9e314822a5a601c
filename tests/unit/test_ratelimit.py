"""Token buckets with explicit clocks, and the 429 middleware."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_error, make_client

from locallab_cpp.http import ratelimit
from locallab_cpp.http.ratelimit import RateLimiter, TokenBucket


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
        assert client.get("/system/info").status_code == 200
        assert client.get("/system/info").status_code == 429
        for _ in range(20):
            assert client.get("/health").status_code == 200


def test_rate_limit_zero_switches_it_off(models_file: Path) -> None:
    with make_client(models_file, rate_limit=0.0, rate_burst=1) as client:
        assert all(client.get("/models/available").status_code == 200 for _ in range(15))


def test_default_settings_limit_bursts_of_ten(models_file: Path) -> None:
    with make_client(models_file, rate_limit=60.0) as client:
        codes = [client.get("/models/current").status_code for _ in range(12)]
    assert codes[:10] == [200] * 10
    assert 429 in codes[10:]
