"""What the client writes in a chat cannot change how the answer is read: a ``<think>`` in a
message, the EOS token's text in the answer, a conversation of megabytes (rendered off the
event loop), a request larger than the server can ever queue. Real server, embedded model.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from it_support import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"


def test_a_think_tag_in_a_message_leaves_the_answer_in_content(client: httpx.Client) -> None:
    """The embedded model does not think: a ``<think>`` the user wrote (or a tool result, or
    a system prompt) must not send the whole answer to reasoning_content."""
    for messages in (
        [{"role": "user", "content": "What does a <think> tag do?"}],
        [
            {"role": "system", "content": "Transcript: <think>plan"},
            {"role": "user", "content": "Go on: <think>"},
        ],
    ):
        body = {"model": MODEL, "messages": messages, "max_tokens": 12, "temperature": 0}
        reply = client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        message = reply.json()["choices"][0]["message"]
        assert message["content"], message
        assert not message.get("reasoning_content"), message
        chat = client.post("/chat", json={"messages": messages, "max_length": 12})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"], chat.json()


def test_the_eos_text_written_as_text_does_not_stop_the_answer(client: httpx.Client) -> None:
    """Gemma's EOS token is ``<eos>``; written as plain text (forced here by a grammar) it is
    part of the answer. Before, the template's stop list held it and cut the answer there."""
    schema = {"type": "string", "enum": ["x <eos> y"]}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say it."}],
        "max_tokens": 32,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert json.loads(choice["message"]["content"]) == "x <eos> y"
    assert choice["finish_reason"] == "stop"


def test_health_answers_while_a_4_mb_chat_is_prepared(client: httpx.Client, server: str) -> None:
    """Rendering a 4 MB conversation full of ``<`` (the scan for control-token text) takes
    seconds; it runs in a worker thread, so /health answers meanwhile."""
    big = "<" * 4_000_000
    body = {"model": MODEL, "messages": [{"role": "user", "content": big}], "max_tokens": 1}
    result: dict[str, Any] = {}

    def post() -> None:
        with httpx.Client(base_url=server, timeout=300) as other:
            result["reply"] = other.post("/v1/chat/completions", json=body)

    worker = threading.Thread(target=post)
    worker.start()
    slowest = 0.0
    answered = 0
    try:
        time.sleep(0.3)  # the body is on its way and being prepared
        while worker.is_alive() and answered < 40:
            t0 = time.monotonic()
            assert client.get("/health").status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
            answered += 1
            time.sleep(0.05)
    finally:
        worker.join(300)
    assert answered >= 3, "the request ended before /health was asked; nothing was measured"
    assert slowest < 0.1, f"/health took {slowest:.3f} s while a 4 MB chat was prepared"
    # 4 MB of '<' is far past the context: a clear 4xx, never a 500.
    assert 400 <= result["reply"].status_code < 500, result["reply"].text


def test_a_request_that_can_never_be_queued_is_400(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """--parallel 1 --queue-size 2 takes three sequences at most: four prompts are a 400
    that says the limit (503 would tell the client to retry, which never helps)."""
    srv = server_factory("--parallel", "1", "--queue-size", "2")
    with httpx.Client(base_url=srv.base_url, timeout=120) as c:
        body = {"model": MODEL, "prompt": ["a", "b", "c", "d"], "max_tokens": 1}
        refused = c.post("/v1/completions", json=body)
        assert refused.status_code == 400, refused.text
        message = refused.json()["error"]["message"]
        assert "4 sequences" in message and "at most 3" in message, message
        assert "Retry-After" not in refused.headers
        body = {"model": MODEL, "prompt": ["a", "b"], "n": 2, "max_tokens": 1}
        assert c.post("/v1/completions", json=body).status_code == 400
        body = {"model": MODEL, "prompt": ["a", "b", "c"], "max_tokens": 1}
        served = c.post("/v1/completions", json=body)
        assert served.status_code == 200, served.text
        assert len(served.json()["choices"]) == 3
