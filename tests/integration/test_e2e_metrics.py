"""GET /metrics and /health's slot fields on a real server: the counters agree with the
usage the responses reported, whatever API asked, and the slot gauges with /health."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from it_support import (
    ENDLESS_PARAMS,
    ENDLESS_PROMPT,
    ServerProcess,
    error_detail,
    parse_sse,
    read_events_until,
    start_server,
)
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

PARALLEL = 2
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MESSAGES = [{"role": "user", "content": "Say hello in three words."}]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client, **headers: str) -> Samples:
    """Every sample of GET /metrics by (sample name, sorted labels)."""
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE
    found: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def of(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def metrics_server() -> Iterator[ServerProcess]:
    srv = start_server("--metrics", "--n-ctx", "512", "--parallel", str(PARALLEL))
    yield srv
    srv.assert_clean_shutdown()


def test_counters_match_the_reported_usage(metrics_server: ServerProcess) -> None:
    usages: list[tuple[int, int, int]] = []  # (prompt, cached, completion)
    with metrics_server.client() as c:
        r = c.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 8})
        assert r.status_code == 200, r.text
        u = r.json()["usage"]
        usages.append(
            (
                u["prompt_tokens"],
                u["prompt_tokens_details"]["cached_tokens"],
                u["completion_tokens"],
            )
        )

        body = {
            "messages": MESSAGES,
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            raw = r.read().decode()
        chunks = [json.loads(e.data) for e in parse_sse(raw) if e.data != "[DONE]"]
        [u] = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
        usages.append(
            (
                u["prompt_tokens"],
                u["prompt_tokens_details"]["cached_tokens"],
                u["completion_tokens"],
            )
        )

        r = c.post(
            "/v1/messages",
            json={"model": "claude-x", "max_tokens": 8, "messages": MESSAGES},
        )
        assert r.status_code == 200, r.text
        u = r.json()["usage"]
        cached = u["cache_read_input_tokens"]
        usages.append((u["input_tokens"] + cached, cached, u["output_tokens"]))

        # Plainly, not through the checked client: its error body is OpenAI's, not LocalLab's.
        bad = httpx.post(
            metrics_server.base_url + "/v1/chat/completions",
            json={"messages": "not a list"},
            timeout=30,
        )
        assert bad.status_code == 400 and "error" in bad.json(), bad.text

        # The outer layer counts a request once its app has returned, a moment after the
        # client has the response's last byte: give the last one that moment.
        deadline = time.monotonic() + 5
        while True:
            samples = scrape(c)
            if of(samples, "locallab_requests_total", api="openai", status="400") >= 1:
                break
            assert time.monotonic() < deadline, "the 400 was never counted"
            time.sleep(0.1)
        health = c.get("/health").json()

    model = health["model_id"]
    assert of(samples, "locallab_requests_total", api="openai", status="200") == 2
    assert of(samples, "locallab_requests_total", api="openai", status="400") == 1
    assert of(samples, "locallab_requests_total", api="anthropic", status="200") == 1
    assert of(samples, "locallab_requests_total", api="locallab", status="200") >= 1  # /health
    assert of(samples, "locallab_request_duration_seconds_count", api="openai") == 3

    assert of(samples, "locallab_prompt_tokens_total", model=model) == sum(p for p, _, _ in usages)
    assert of(samples, "locallab_cached_prompt_tokens_total", model=model) == sum(
        c for _, c, _ in usages
    )
    assert of(samples, "locallab_generated_tokens_total", model=model) == sum(
        n for _, _, n in usages
    )
    assert of(samples, "locallab_time_to_first_token_seconds_count", model=model) == 3
    assert of(samples, "locallab_inter_token_latency_seconds_count", model=model) == sum(
        max(0, n - 1) for _, _, n in usages
    )
    assert of(samples, "locallab_model_loads_total", model=model, result="ok") == 1
    assert of(samples, "locallab_model_load_seconds_count", model=model) == 1
    assert of(samples, "locallab_models_resident") == 1

    busy = of(samples, "locallab_slots_busy", model=model)
    idle = of(samples, "locallab_slots_idle", model=model)
    assert (idle, busy) == (health["slots_idle"], health["slots_processing"]) == (PARALLEL, 0)
    assert of(samples, "locallab_queue_depth", model=model) == 0
    pool = of(samples, "locallab_kv_pool_tokens", model=model)
    assert 0 < of(samples, "locallab_kv_pool_used_tokens", model=model) <= pool
    for tier in ("memory", "disk"):
        assert ("locallab_prompt_cache_hits_total", (("model", model), ("tier", tier))) in samples


def test_health_shows_a_running_stream(metrics_server: ServerProcess) -> None:
    body = {"prompt": ENDLESS_PROMPT, "max_length": 400, "stream": True, **ENDLESS_PARAMS}
    with metrics_server.client() as c:
        with c.stream("POST", "/generate", json=body) as r:
            assert r.status_code == 200
            chunks = r.iter_raw()
            read_events_until(chunks, 2)  # tokens are flowing: the sequence holds a slot
            health = c.get("/health").json()
            samples = scrape(c)
        assert health["slots_processing"] == 1
        assert health["slots_processing"] + health["slots_idle"] == PARALLEL
        assert of(samples, "locallab_slots_busy", model=health["model_id"]) == 1
        # Closing the stream cancels the sequence; its slot is given back.
        deadline = time.monotonic() + 30
        while c.get("/health").json()["slots_processing"] != 0:
            assert time.monotonic() < deadline, "the slot was never given back"
            time.sleep(0.1)


def test_metrics_are_off_by_default_and_keyed(
    server_factory: Callable[..., ServerProcess],
) -> None:
    off = server_factory("--no-model")
    with off.client() as c:
        assert "--metrics" in error_detail(c.get("/metrics"), 404)
        health = c.get("/health").json()
        assert (health["slots_idle"], health["slots_processing"]) == (0, 0)

    keyed = server_factory("--no-model", "--metrics", "--api-key", "k1")
    with keyed.client() as c:
        error_detail(c.get("/metrics"), 401)
        samples: dict[Any, float] = scrape(c, Authorization="Bearer k1")
        assert of(samples, "locallab_models_resident") == 0
