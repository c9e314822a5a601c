"""Every error code of decisions.md ("Errors"): 400, 404, 405, 413, 429, 503.

(409 and the no-model 503 are in test_e2e_lifecycle.py.) Every error seen by any test goes through
it_support.check_error_response: never a 500, always exactly {"detail": str}, never a
traceback or a file-system path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from it_support import (
    ENDLESS_PARAMS,
    ENDLESS_PROMPT,
    REPO_ROOT,
    ServerProcess,
    check_generate_body,
    check_sse_response,
    error_detail,
    read_events_until,
)

pytestmark = pytest.mark.integration

MSG = [{"role": "user", "content": "Hello"}]
GEN_ENDPOINTS: list[tuple[str, dict[str, Any]]] = [
    ("/generate", {"prompt": "Hello", "max_length": 2}),
    ("/chat", {"messages": MSG, "max_length": 2}),
    ("/generate/batch", {"prompts": ["Hello"], "max_length": 2}),
]


def post_raw(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


# ----------------------------------------------------------------------------- 400


@pytest.mark.parametrize("path", ["/generate", "/chat", "/generate/batch", "/models/load"])
@pytest.mark.parametrize(
    "content",
    [
        b'{"prompt": "x"',
        b"not json",
        b"",
        b"{'prompt': 'x'}",
        b'{"prompt": "x",}',
        b"\xff",
        b'{"prompt": "\\ud800"}',
    ],
    ids=[
        "truncated",
        "text",
        "empty",
        "single-quotes",
        "trailing-comma",
        "binary",
        "lone-surrogate",
    ],
)
def test_malformed_json_is_400(client: httpx.Client, path: str, content: bytes) -> None:
    error_detail(post_raw(client, path, content), 400)


@pytest.mark.parametrize("path", ["/generate", "/chat", "/models/load"])
def test_invalid_utf8_in_a_string_is_400(client: httpx.Client, path: str) -> None:
    body = {
        "/generate": b'{"prompt": "caf\xc3", "max_length": 2}',
        "/chat": b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
        "/models/load": b'{"model_id": "\xff"}',
    }[path]
    error_detail(post_raw(client, path, body), 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": 5}, "prompt"),
        ({"prompt": ["x"]}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": "x", "temperature": "hot"}, "temperature"),
        ({"prompt": "x", "temperature": True}, "temperature"),
        ({"prompt": "x", "max_length": 2.5}, "max_length"),
        ({"prompt": "x", "max_length": True}, "max_length"),
        ({"prompt": "x", "top_k": 1.5}, "top_k"),
        ({"prompt": "x", "do_sample": "yes"}, "do_sample"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x", "seed": "abc"}, "seed"),
        ({"prompt": "x", "stop": 5}, "stop"),
        ({"prompt": "x", "stop": [1]}, "stop"),
        ({"prompt": "x", "model_id": 7}, "model_id"),
    ],
)
def test_wrong_types_are_400_naming_the_field(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    detail = error_detail(client.post("/generate", json=body), 400)
    assert field in detail, detail


@pytest.mark.parametrize(
    "body",
    [
        {"max_length": "2"},
        {"temperature": "0.5"},
        {"top_k": "5"},
        {"seed": "7"},
        {"do_sample": 1},
        {"stream": 0},
        {"do_sample": "true"},
    ],
)
def test_lenient_coercions_are_wrong_types(client: httpx.Client, body: dict[str, Any]) -> None:
    """decisions.md: wrong types are 400; "2" is not an integer, 1 is not a boolean."""
    r = client.post("/generate", json={"prompt": "x", "max_length": 2, **body})
    detail = error_detail(r, 400)
    assert next(iter(body)) in detail


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"temperature": 3}, "temperature"),
        ({"temperature": 2.0001}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_p": -1}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 1001}, "top_k"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": 16385}, "max_length"),
        ({"max_length": -5}, "max_length"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": 2.5}, "repetition_penalty"),
        ({"seed": -1}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}, "stop"),
        ({"stop": ""}, "stop"),
        ({"stop": ["ok", ""]}, "stop"),
        ({"model_id": ""}, "model_id"),
    ],
)
@pytest.mark.parametrize("path", ["/generate", "/chat", "/generate/batch"])
def test_out_of_range_is_400_naming_the_field(
    client: httpx.Client, path: str, params: dict[str, Any], field: str
) -> None:
    base = {
        "/generate": {"prompt": "x"},
        "/chat": {"messages": MSG},
        "/generate/batch": {"prompts": ["x"]},
    }[path]
    detail = error_detail(client.post(path, json={**base, **params}), 400)
    assert field in detail, detail


def test_bounds_are_inclusive_where_documented(client: httpx.Client) -> None:
    """The edges of decisions.md's ranges are accepted."""
    for params in (
        {"temperature": 0},
        {"temperature": 2},
        {"top_p": 1},
        {"top_k": 0},
        {"top_k": 1000},
        {"repetition_penalty": 2},
        {"max_length": 1},
        {"seed": 0},
        {"stop": ["a", "b", "c", "d", "e", "f", "g", "h"]},
    ):
        r = client.post("/generate", json={"prompt": "Hello", "max_length": 2, **params})
        assert r.status_code == 200, (params, r.text)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_400(client: httpx.Client, literal: str) -> None:
    body = b'{"prompt": "x", "max_length": 2, "temperature": ' + literal.encode() + b"}"
    error_detail(post_raw(client, "/generate", body), 400)


@pytest.mark.parametrize(
    "literal",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
    ],
)
def test_nan_and_infinity_name_the_field(client: httpx.Client, literal: str) -> None:
    body = b'{"prompt": "x", "max_length": 2, "temperature": ' + literal.encode() + b"}"
    assert "temperature" in error_detail(post_raw(client, "/generate", body), 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [{"role": "function", "content": "x"}]}, "role"),
        ({"messages": [{"role": "User", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user"}]}, "content"),
        ({"messages": [{"content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": 5}]}, "content"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [MSG[0], {"role": "tool", "content": "x"}]}, "messages[1]"),
        ({}, "messages"),
    ],
)
def test_chat_invalid_messages_are_400(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    detail = error_detail(client.post("/chat", json={**body, "max_length": 2}), 400)
    assert field in detail, detail


@pytest.mark.parametrize(
    ("prompts", "field"),
    [
        ([], "prompts"),
        (["a"] * 65, "prompts"),
        (["a", ""], "prompts[1]"),
        ([""], "prompts[0]"),
        ("a", "prompts"),
        (["a", 5], "prompts[1]"),
        (None, "prompts"),
    ],
    ids=["empty", "65", "empty-second", "empty-only", "string", "int", "null"],
)
def test_batch_invalid_prompts_are_400(client: httpx.Client, prompts: Any, field: str) -> None:
    detail = error_detail(
        client.post("/generate/batch", json={"prompts": prompts, "max_length": 2}), 400
    )
    assert field in detail, detail


def test_batch_of_64_is_accepted(client: httpx.Client) -> None:
    r = client.post("/generate/batch", json={"prompts": ["Hi"] * 64, "max_length": 1})
    assert r.status_code == 200, r.text
    assert len(r.json()["responses"]) == 64


def test_generate_empty_prompt_and_non_object_bodies(client: httpx.Client) -> None:
    assert "prompt" in error_detail(client.post("/generate", json={"prompt": ""}), 400)
    assert "prompt" in error_detail(client.post("/generate", json={"max_length": 2}), 400)
    for body in ([], "prompt", 5, None):
        error_detail(client.post("/generate", json=body), 400)
    assert "model_id" in error_detail(client.post("/models/load", json={}), 400)


# ----------------------------------------------------------------------------- 404 / 405

PATH_TRICKS = [
    "../../etc/passwd",
    "/etc/passwd",
    "gemma-3-270m/../../../etc/shadow",
    "..\\..\\windows\\system32\\config",
    "C:\\Windows\\system32",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "./models.toml",
    "../models.toml",
    "gemma-3-270m\x00.gguf",
]


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/generate/nope",
        "/models",
        "/models/nope",
        "/v2/chat/completions",  # /v1 belongs to the OpenAI API now
        "/health/x",
        "/../../etc/passwd",
    ],
)
def test_unknown_route_is_404(client: httpx.Client, path: str) -> None:
    error_detail(client.get(path), 404)
    error_detail(client.post(path, json={}), 404)


def test_wrong_method_is_405_with_detail(client: httpx.Client) -> None:
    for method, path in (
        ("GET", "/generate"),
        ("GET", "/chat"),
        ("DELETE", "/health"),
        ("GET", "/models/load"),
        ("PUT", "/models/unload"),
    ):
        error_detail(client.request(method, path), 405)


@pytest.mark.parametrize("path", ["/generate", "/chat", "/generate/batch"])
def test_unknown_model_id_is_404(client: httpx.Client, path: str) -> None:
    body = dict(dict(GEN_ENDPOINTS)[path])
    detail = error_detail(client.post(path, json={**body, "model_id": "no-such/model"}), 404)
    assert "no-such/model" in detail
    # The loaded model was not disturbed.
    assert client.get("/health").json()["model_id"] == "gemma-3-270m"


def test_load_unknown_model_is_404(client: httpx.Client) -> None:
    detail = error_detail(client.post("/models/load", json={"model_id": "no-such/model"}), 404)
    assert "no-such/model" in detail
    assert client.get("/health").json()["model_id"] == "gemma-3-270m"


@pytest.mark.parametrize("model_id", PATH_TRICKS)
def test_path_tricks_as_model_id_are_404_without_paths(client: httpx.Client, model_id: str) -> None:
    for path, body in [*GEN_ENDPOINTS, ("/models/load", {})]:
        r = client.post(path, json={**body, "model_id": model_id})
        detail = error_detail(r, 404)
        # No absolute path comes back (the client's is scrubbed), no path of the server's
        # own files (the id never reaches the file system), no control characters.
        for fragment in ("/etc/", "C:\\", "~/", "/.ssh", str(REPO_ROOT), "/.cache/", "\x00"):
            assert fragment not in detail, detail
    assert client.get("/health").json()["model_id"] == "gemma-3-270m"


# ----------------------------------------------------------------------------- 413


LONG_PROMPT = "hello " * 300  # about 300 tokens, under 2 KB


def test_prompt_longer_than_context_is_413(small_server: ServerProcess) -> None:
    with small_server.client() as c:
        assert c.get("/models/current").json()["n_ctx"] == 256
        detail = error_detail(c.post("/generate", json={"prompt": LONG_PROMPT}), 413)
        assert "256" in detail, detail  # says how big the context is
        error_detail(c.post("/generate", json={"prompt": LONG_PROMPT, "stream": True}), 413)
        error_detail(
            c.post("/chat", json={"messages": [{"role": "user", "content": LONG_PROMPT}]}), 413
        )
        # A batch is accepted all or none.
        error_detail(c.post("/generate/batch", json={"prompts": ["Hi", LONG_PROMPT]}), 413)
        info = c.get("/system/info").json()["active_model"]
        assert info["active_sequences"] == 0 and info["queued_sequences"] == 0


def test_prompt_plus_max_length_past_context_stops_with_length(
    small_server: ServerProcess,
) -> None:
    """decisions.md: not an error; generation stops at the context's end."""
    with small_server.client() as c:
        body = {"prompt": ENDLESS_PROMPT + " 9," * 60, "max_length": 2000, **ENDLESS_PARAMS}
        r = c.post("/generate", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        usage = data["usage"]
        assert data["finish_reason"] == "length"
        assert usage["prompt_tokens"] > 100
        assert usage["total_tokens"] <= 256, usage
        assert usage["completion_tokens"] >= 256 - usage["prompt_tokens"] - 1, usage


def test_body_over_max_body_bytes_is_413(small_server: ServerProcess) -> None:
    with small_server.client() as c:
        big = {"prompt": "a" * 5000, "max_length": 2}
        detail = error_detail(c.post("/generate", json=big), 413)
        assert "large" in detail.lower()
        error_detail(
            c.post("/chat", json={"messages": [{"role": "user", "content": "a" * 5000}]}), 413
        )
        error_detail(c.post("/generate/batch", json={"prompts": ["a" * 1000] * 5}), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must still hold
            yield b'{"prompt": "'
            for _ in range(10):
                yield b"a" * 1000
            yield b'", "max_length": 2}'

        r = c.post("/generate", content=chunks(), headers={"Content-Type": "application/json"})
        error_detail(r, 413)
        # Just under the limit is fine, and the server still works.
        padded = {"prompt": "Hello", "max_length": 2, "padding": "x" * 3900}  # ignored field
        assert 3900 < len(httpx.Request("POST", "/", json=padded).content) < 4096
        ok = c.post("/generate", json=padded)
        assert ok.status_code == 200, ok.text


# ----------------------------------------------------------------------------- 429


def test_rate_limit_429_with_retry_after(server_factory: Callable[..., ServerProcess]) -> None:
    # The server and this test talk over 127.0.0.1, exempt unless --rate-limit-loopback.
    srv = server_factory(
        "--rate-limit", "60", "--rate-burst", "3", "--parallel", "1", "--rate-limit-loopback"
    )
    with srv.client() as c:
        codes = [c.get("/models/current").status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = c.post("/generate", json={"prompt": "Hello", "max_length": 2})
        detail = error_detail(r, 429)
        assert "rate" in detail.lower()
        retry_after = int(r.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        # /health is exempt, however often it is asked.
        for _ in range(20):
            assert c.get("/health").status_code == 200
        error_detail(c.get("/models/current"), 429)
        # The bucket refills at 60 a minute: after Retry-After a request goes through again.
        time.sleep(retry_after + 0.2)
        r = c.post("/generate", json={"prompt": "Hello", "max_length": 2})
        assert r.status_code == 200, r.text
        check_generate_body(r.json(), max_length=2)


def test_loopback_clients_are_not_rate_limited_by_default(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory("--rate-limit", "60", "--rate-burst", "3", "--no-model")
    with srv.client() as c:
        codes = [c.get("/models/available").status_code for _ in range(15)]
    assert codes == [200] * 15


# ----------------------------------------------------------------------------- 503 busy


def srv_active(c: httpx.Client) -> int:
    return int(c.get("/system/info").json()["active_model"]["active_sequences"])


def test_queue_full_is_503_with_retry_after(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory("--parallel", "1", "--queue-size", "0")
    long_body = {"prompt": ENDLESS_PROMPT, "max_length": 4000, "stream": True, **ENDLESS_PARAMS}
    with srv.client() as c, srv.client() as other:
        with c.stream("POST", "/generate", json=long_body) as r:
            check_sse_response(r)
            chunks = r.iter_raw()  # held: dropping it would close the connection
            read_events_until(chunks, 2)
            for path, body in GEN_ENDPOINTS:
                busy = other.post(path, json=body)
                detail = error_detail(busy, 503)
                assert "busy" in detail.lower(), detail
                assert int(busy.headers["Retry-After"]) >= 1
            error_detail(other.post("/generate", json={**GEN_ENDPOINTS[0][1], "stream": True}), 503)
            t0 = time.monotonic()
            assert other.get("/health").status_code == 200
            assert time.monotonic() - t0 < 1.0
            assert srv_active(other) == 1
        # The stream is closed: its slot frees and the next request is served.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r2 = other.post("/generate", json={"prompt": "Hello", "max_length": 2})
            if r2.status_code == 200:
                break
            time.sleep(0.2)
        assert r2.status_code == 200, r2.text


def test_queued_request_waits_for_a_slot(server_factory: Callable[..., ServerProcess]) -> None:
    """--parallel 1 --queue-size 1: one runs, one waits (and is served), a third gets 503."""
    srv = server_factory("--parallel", "1", "--queue-size", "1")
    long_body = {"prompt": ENDLESS_PROMPT, "max_length": 4000, "stream": True, **ENDLESS_PARAMS}

    async def run() -> tuple[httpx.Response, httpx.Response, dict[str, Any]]:
        async with srv.async_client() as ac:
            async with ac.stream("POST", "/generate", json=long_body) as r:
                check_sse_response(r)
                chunks = r.aiter_raw()
                await anext(chunks)
                queued = asyncio.create_task(
                    ac.post("/generate", json={"prompt": "Hello", "max_length": 3})
                )
                for _ in range(100):
                    stats = (await ac.get("/system/info")).json()["active_model"]
                    if stats["queued_sequences"] == 1:
                        break
                    await asyncio.sleep(0.05)
                rejected = await ac.post("/generate", json={"prompt": "Hi", "max_length": 3})
                assert not queued.done()
            # The stream is closed: the queued request gets the slot.
            return await asyncio.wait_for(queued, 60), rejected, stats

    served, rejected, stats = asyncio.run(run())
    assert stats["active_sequences"] == 1 and stats["queued_sequences"] == 1, stats
    error_detail(rejected, 503)
    assert int(rejected.headers["Retry-After"]) >= 1
    assert served.status_code == 200, served.text
    check_generate_body(served.json(), max_length=3)
