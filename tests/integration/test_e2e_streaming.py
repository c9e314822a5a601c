"""Server-Sent Events on /generate and /chat (decisions.md, "Streaming")."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from it_support import (
    ENDLESS_PARAMS,
    ENDLESS_PROMPT,
    ServerProcess,
    SSEEvent,
    check_sse_response,
    parse_sse,
    read_events_until,
    streamed_text,
)

pytestmark = pytest.mark.integration

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, how are you?"},
]
GREEDY = {"do_sample": False, "seed": 1234, "repetition_penalty": 1.0}
# A prompt this model continues with code, several lines of it, when decoding greedily.
CODE_PROMPT = "def fibonacci(n):\n"

# An SSE event: one or more field lines, then a blank line.
_EVENT_BLOCK = re.compile(rb"(?:(?:data|event|id|retry)(?::[^\n]*)?\n)+\n")


def stream(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[bytes, list[SSEEvent]]:
    """POST with stream true; the raw body and its events."""
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        check_sse_response(r)
        raw = r.read()
    return raw, parse_sse(raw.decode("utf-8"))


def check_raw_framing(raw: bytes) -> None:
    """The body is nothing but well-formed events, and ends with `data: [DONE]`."""
    assert b"\r" not in raw
    assert raw.endswith(b"\n\ndata: [DONE]\n\n") or raw == b"data: [DONE]\n\n", raw[-80:]
    rest = _EVENT_BLOCK.sub(b"", raw)
    assert rest == b"", f"bytes outside well-formed events: {rest[:200]!r}"


def test_stream_content_type_is_event_stream(client: httpx.Client) -> None:
    for path, body in (
        ("/generate", {"prompt": "Hello", "max_length": 2}),
        ("/chat", {"messages": CHAT_MESSAGES, "max_length": 2}),
    ):
        with client.stream("POST", path, json={**body, "stream": True}) as r:
            r.read()
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream"), (
                f"{path} stream has Content-Type {r.headers['content-type']!r}"
            )


def test_generate_stream(client: httpx.Client) -> None:
    """The reference's streaming curl body (max_length added to keep it short)."""
    raw, events = stream(
        client,
        "/generate",
        {"prompt": "Explain quantum computing in simple terms", "max_length": 16},
    )
    check_raw_framing(raw)
    text = streamed_text(events)
    assert text.strip(), raw
    assert len(events) >= 2


def test_chat_stream(client: httpx.Client) -> None:
    raw, events = stream(client, "/chat", {"messages": CHAT_MESSAGES, "max_length": 16})
    check_raw_framing(raw)
    streamed_text(events)
    assert len(events) >= 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", {"prompt": "The history of the printing press", "max_length": 24}),
        ("/generate", {"prompt": CODE_PROMPT, "max_length": 40}),
        ("/generate", {"prompt": "I love 🍕 and 🍔 and", "max_length": 24}),
        ("/generate", {"prompt": "日本の首都は", "max_length": 24}),
        ("/chat", {"messages": CHAT_MESSAGES, "max_length": 24}),
    ],
    ids=["generate", "generate-code", "generate-emoji", "generate-japanese", "chat"],
)
def test_streamed_text_equals_non_streamed(
    client: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    """Greedy decoding, one request after the other: the stream rebuilds the exact text."""
    r = client.post(path, json={**body, **GREEDY})
    assert r.status_code == 200, r.text
    data = r.json()
    expected = data["response"] if path == "/generate" else data["choices"][0]["message"]["content"]
    assert expected, data
    raw, events = stream(client, path, {**body, **GREEDY})
    check_raw_framing(raw)
    assert streamed_text(events) == expected


def test_carriage_returns_become_line_feeds_in_streams(client: httpx.Client) -> None:
    """SSE cannot carry a CR inside data (CR, LF and CRLF all end a line there), so streams
    send every line end as LF, as docs/api.md says; the text is otherwise exact."""
    body = {"prompt": "line one\r\nline two\r\nline three\r\n", "max_length": 16, **GREEDY}
    expected = client.post("/generate", json=body).json()["response"]
    assert "\r" in expected, "precondition: the model continues with CRLF line ends"
    _raw, events = stream(client, "/generate", body)
    assert streamed_text(events) == expected.replace("\r\n", "\n").replace("\r", "\n")


def test_chunk_with_newlines_is_a_multiline_event(client: httpx.Client) -> None:
    body = {"prompt": CODE_PROMPT, "max_length": 40, **GREEDY}
    expected = client.post("/generate", json=body).json()["response"]
    assert "\n" in expected, f"greedy code continuation has no newline: {expected!r}"
    raw, events = stream(client, "/generate", body)
    check_raw_framing(raw)
    # At least one event carries a newline: several data: lines in one event.
    multiline = [block for block in raw.split(b"\n\n") if block.count(b"data:") >= 2]
    assert multiline, f"no multi-line event in {raw[:500]!r}"
    assert all(line.startswith(b"data:") for b in multiline for line in b.split(b"\n"))
    assert any("\n" in e.data for e in events[:-1])
    text = streamed_text(events)
    assert "\n" in text
    assert text == expected
    # A naive line-by-line client (the reference's bash loop) would lose the newlines:
    naive = "".join(
        line[len("data: ") :]
        for line in raw.decode("utf-8").split("\n")
        if line.startswith("data: ") and line != "data: [DONE]"
    )
    assert naive == expected.replace("\n", "")


def test_stream_leading_spaces_survive(client: httpx.Client) -> None:
    """Chunks that begin with spaces (" is", "    return") keep them: one space after
    "data:" is framing, the rest is text."""
    body = {"prompt": CODE_PROMPT, "max_length": 24, **GREEDY}
    expected = client.post("/generate", json=body).json()["response"]
    raw, events = stream(client, "/generate", body)
    assert streamed_text(events) == expected
    assert any(e.data.startswith(" ") for e in events), "no chunk starts with a space"
    assert b"data:  " in raw


def test_stream_error_before_start_is_plain_json(client: httpx.Client) -> None:
    """Validation fails before the stream starts: an ordinary 400 JSON error, not SSE."""
    with client.stream(
        "POST", "/generate", json={"prompt": "x", "stream": True, "temperature": 5}
    ) as r:
        r.read()
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/json")
        assert "temperature" in r.json()["detail"]


def test_client_disconnect_stops_generation(client: httpx.Client) -> None:
    """Closing the connection mid-stream stops that generation (decisions.md, Streaming)."""
    body = {"prompt": ENDLESS_PROMPT, "max_length": 4000, "stream": True, **ENDLESS_PARAMS}
    with client.stream("POST", "/generate", json=body) as r:
        check_sse_response(r)
        chunks = r.iter_raw()
        _raw, events = read_events_until(chunks, 3)
        assert all(e.event == "message" for e in events)
        running = client.get("/system/info").json()["active_model"]
        assert running["active_sequences"] == 1, running
    # Leaving the block closed the connection without reading the rest.
    closed_at = time.monotonic()
    active = None
    while time.monotonic() - closed_at < 10:
        active = client.get("/system/info").json()["active_model"]
        if active["active_sequences"] == 0:
            break
        time.sleep(0.1)
    stopped_after = time.monotonic() - closed_at
    print(f"\ngeneration stopped {stopped_after:.2f}s after the client disconnected")
    assert active is not None and active["active_sequences"] == 0, active
    assert stopped_after < 5, f"generation went on for {stopped_after:.1f}s"
    # It stays stopped: no tokens are generated any more.
    tokens = active["generated_tokens"]
    time.sleep(0.5)
    assert client.get("/system/info").json()["active_model"]["generated_tokens"] == tokens
    # And the server serves the next request.
    r = client.post("/generate", json={"prompt": "Hello", "max_length": 4})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


def test_stream_with_stop_string_equals_non_streamed(client: httpx.Client) -> None:
    """Text held back while it may begin a stop string is never streamed past the stop."""
    body = {"prompt": ENDLESS_PROMPT, "max_length": 24, "stop": [" 12,", "xyz"], **ENDLESS_PARAMS}
    plain = client.post("/generate", json=body).json()
    assert plain["finish_reason"] == "stop"
    assert plain["response"].endswith(" 11,"), plain["response"]
    raw, events = stream(client, "/generate", body)
    check_raw_framing(raw)
    assert streamed_text(events) == plain["response"]
    assert " 12" not in streamed_text(events)


def test_non_streaming_client_disconnect_stops_generation(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory("--parallel", "2")
    body = {"prompt": ENDLESS_PROMPT, "max_length": 4000, **ENDLESS_PARAMS}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(srv.base_url + "/generate", json=body, timeout=2.0)  # the client gives up
    gave_up = time.monotonic()
    with srv.client() as c:
        active = c.get("/system/info").json()["active_model"]["active_sequences"]
        while active and time.monotonic() - gave_up < 5:
            time.sleep(0.2)
            active = c.get("/system/info").json()["active_model"]["active_sequences"]
        assert active == 0, "the abandoned generation is still running 5 s later"
