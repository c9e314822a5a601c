"""Concurrent requests: each gets its own answer, and /health stays instant meanwhile."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import pytest
from it_support import (
    check_chat_body,
    check_generate_body,
    check_sse_response,
    checked_async_client,
    parse_sse,
    streamed_text,
)

pytestmark = pytest.mark.integration

GREEDY = {"do_sample": False, "repetition_penalty": 1.0}
# Prompts whose greedy continuation is obvious, so each answer shows which prompt it is for.
CONTINUATIONS = {
    "1, 2, 3, 4, 5,": " 6",
    "Monday, Tuesday, Wednesday,": " Thursday",
    "January, February, March,": " April",
    "one, two, three, four,": " five",
    "red, orange, yellow,": " green",
}
CHATS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name three rivers in Europe, please."},
    ],
    [{"role": "user", "content": "What is two plus two? Explain step by step, in detail."}],
]
HEALTH_LIMIT_S = 0.5


def test_eight_concurrent_requests_and_health_stays_fast(server: str) -> None:
    # Each chat's real prompt length, asked alone first: a mixed-up answer would show.
    with httpx.Client(base_url=server, timeout=120) as c:
        chat_prompt_tokens = [
            c.post("/chat", json={"messages": m, "max_length": 1}).json()["usage"]["prompt_tokens"]
            for m in CHATS
        ]
    assert len(set(chat_prompt_tokens)) == len(CHATS), chat_prompt_tokens

    async def generate(ac: httpx.AsyncClient, prompt: str, stream: bool) -> str:
        body = {"prompt": prompt, "max_length": 24, **GREEDY}
        if stream:
            async with ac.stream("POST", "/generate", json={**body, "stream": True}) as r:
                check_sse_response(r)
                raw = await r.aread()
            return streamed_text(parse_sse(raw.decode("utf-8")))
        r = await ac.post("/generate", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        check_generate_body(data, max_length=24)
        assert data["usage"]["completion_tokens"] >= 1
        return str(data["response"])

    async def chat(ac: httpx.AsyncClient, index: int, stream: bool) -> dict[str, Any]:
        body = {"messages": CHATS[index], "max_length": 24}
        if stream:
            async with ac.stream("POST", "/chat", json={**body, "stream": True}) as r:
                check_sse_response(r)
                raw = await r.aread()
            return {"streamed": streamed_text(parse_sse(raw.decode("utf-8")))}
        r = await ac.post("/chat", json=body)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        check_chat_body(data, max_length=24)
        return data

    async def probe_health(done: asyncio.Event) -> list[float]:
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=server, timeout=10) as hc:
            while not done.is_set():
                t0 = time.perf_counter()
                r = await hc.get("/health")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.json()["model_loaded"] is True
                await asyncio.sleep(0.05)
        return latencies

    async def run() -> tuple[list[Any], list[float], float]:
        done = asyncio.Event()
        prober = asyncio.create_task(probe_health(done))
        limits = httpx.Limits(max_connections=16)
        t0 = time.perf_counter()
        async with checked_async_client(server, limits=limits) as ac:
            prompts = list(CONTINUATIONS)
            jobs = [
                generate(ac, prompts[0], stream=False),
                generate(ac, prompts[1], stream=True),
                generate(ac, prompts[2], stream=False),
                generate(ac, prompts[3], stream=True),
                generate(ac, prompts[4], stream=False),
                chat(ac, 0, stream=False),
                chat(ac, 1, stream=True),
                chat(ac, 2, stream=False),
            ]
            try:
                results = await asyncio.gather(*jobs)
            finally:
                done.set()
        elapsed = time.perf_counter() - t0
        return results, await prober, elapsed

    results, latencies, elapsed = asyncio.run(asyncio.wait_for(run(), timeout=300))

    for (prompt, expected), text in zip(CONTINUATIONS.items(), results[:5], strict=True):
        assert text.startswith(expected), f"{prompt!r} got {text!r}"
    assert results[5]["usage"]["prompt_tokens"] == chat_prompt_tokens[0]
    assert isinstance(results[6]["streamed"], str)
    assert results[7]["usage"]["prompt_tokens"] == chat_prompt_tokens[2]
    assert results[5]["id"] != results[7]["id"]

    print(
        f"\n8 concurrent requests took {elapsed:.2f}s; /health answered {len(latencies)} times "
        f"meanwhile: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    assert len(latencies) >= 3, "the requests finished before /health could be probed"
    slow = [round(t, 3) for t in latencies if t >= HEALTH_LIMIT_S]
    assert not slow, f"/health took >= {HEALTH_LIMIT_S}s while generating: {slow}"
