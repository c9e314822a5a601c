"""Ollama's /api/chat and /api/generate over the fake engine, in-process: every shape of the
stream and of the whole answer, options, format, tools, think, the refusals, keep_alive and
load/unload, and the error bodies."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeFactory
from helpers import make_client
from litestar.testing import TestClient

from locallab_cpp.api.ollama import chat_options
from locallab_cpp.api.ollama.keepalive import parse_keep_alive
from locallab_cpp.engine.schema import JSON_OBJECT_SCHEMA
from locallab_cpp.errors import InvalidRequest

ASK = [{"role": "user", "content": "hello there"}]
FINAL_FIELDS = {
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = ['<tool_call>\n{"name": "get_weather", ', '"arguments": {"city": "Paris"}}\n</tool_call>']


@contextmanager
def client(models_file: Path, **engine: Any) -> Iterator[tuple[TestClient[Any], FakeFactory]]:
    factory = FakeFactory(**engine)
    with make_client(models_file, factory) as http:
        yield http, factory


def lines(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def error_of(response: Any, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], body
    for needle in needles:
        assert needle in body["error"], (needle, body["error"])
    return str(body["error"])


def check_final(chunk: dict[str, Any]) -> None:
    assert chunk["done"] is True
    assert chunk["done_reason"] in ("stop", "length")
    assert set(chunk) >= FINAL_FIELDS
    assert all(isinstance(chunk[k], int) and chunk[k] >= 0 for k in FINAL_FIELDS)
    assert chunk["total_duration"] > 0
    assert chunk["created_at"].endswith("Z")


# ----- shapes --------------------------------------------------------------------------------


def test_chat_streams_ndjson_chunks_ending_with_the_counts(models_file: Path) -> None:
    with client(models_file) as (http, _):
        chunks = lines(http.post("/api/chat", json={"model": "alpha:latest", "messages": ASK}))
    *parts, last = chunks
    assert parts and all(c["done"] is False for c in parts)
    assert all(c["model"] == "alpha:latest" for c in chunks)
    assert all(c["message"]["role"] == "assistant" for c in chunks)
    text = "".join(c["message"]["content"] for c in chunks)
    assert text == "Echo: hello there\nline two end"
    check_final(last)
    assert last["eval_count"] == 4 and last["prompt_eval_count"] > 0
    assert "done_reason" not in parts[0] and "total_duration" not in parts[0]


def test_chat_whole_answer(models_file: Path) -> None:
    with client(models_file) as (http, _):
        r = http.post("/api/chat", json={"model": "alpha", "messages": ASK, "stream": False})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["model"] == "alpha"
    assert body["message"] == {"role": "assistant", "content": "Echo: hello there\nline two end"}
    check_final(body)


def test_generate_streamed_and_whole(models_file: Path) -> None:
    with client(models_file) as (http, factory):
        chunks = lines(http.post("/api/generate", json={"model": "alpha", "prompt": "say hi"}))
        body = http.post(
            "/api/generate", json={"model": "alpha", "prompt": "say hi", "stream": False}
        ).json()
        # Not raw: one user turn through the chat template.
        assert factory.last.chat_calls[-1] == [{"role": "user", "content": "say hi"}]
    assert "".join(c["response"] for c in chunks) == body["response"]
    assert body["response"].startswith("Echo:")
    check_final(chunks[-1])
    check_final(body)


def test_generate_system_is_a_system_turn_and_context_is_ignored(models_file: Path) -> None:
    with client(models_file) as (http, factory):
        r = http.post(
            "/api/generate",
            json={
                "model": "alpha",
                "prompt": "hi",
                "system": "be brief",
                "context": [1, 2, 3],
                "stream": False,
            },
        )
        assert r.status_code == 200, r.text
        assert factory.last.chat_calls[-1] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ]


def test_generate_raw_sends_the_prompt_as_it_is(models_file: Path) -> None:
    with client(models_file) as (http, factory):
        r = http.post(
            "/api/generate",
            json={"model": "alpha", "prompt": "plain words", "raw": True, "stream": False},
        )
        assert r.status_code == 200, r.text
        assert factory.last.chat_calls == []
        assert factory.last.detokenize(factory.last.seen[-1].prompt_tokens) == "plain words"


def test_generate_suffix_is_fill_in_the_middle(models_file: Path) -> None:
    with client(models_file) as (http, factory):
        r = http.post(
            "/api/generate",
            json={"model": "alpha", "prompt": "def f(", "suffix": "return x", "stream": False},
        )
        assert r.status_code == 200, r.text
        prompt = factory.last.detokenize(factory.last.seen[-1].prompt_tokens)
        assert prompt == "<pre> def f( <suf> return x <mid>"


def test_suffix_on_a_model_without_fim_tokens_is_400(models_file: Path) -> None:
    with client(models_file, fim=False) as (http, _):
        r = http.post("/api/generate", json={"model": "alpha", "prompt": "a", "suffix": "b"})
    error_of(r, 400, "suffix", "fill-in-the-middle", "insert")


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"prompt": "x", "template": "{{ .Prompt }}"}, ("template", "raw")),
        ({"prompt": "x", "images": ["aGk="]}, ("vision is not supported yet",)),
        ({"prompt": "x", "raw": True, "system": "s"}, ("system", "raw")),
    ],
)
def test_generate_refusals(models_file: Path, body: dict[str, Any], needles: tuple[str]) -> None:
    with client(models_file) as (http, _):
        error_of(http.post("/api/generate", json={"model": "alpha", **body}), 400, *needles)


def test_images_on_a_chat_message_are_400(models_file: Path) -> None:
    messages = [{"role": "user", "content": "what is this", "images": ["aGk="]}]
    with client(models_file) as (http, factory):
        r = http.post("/api/chat", json={"model": "alpha", "messages": messages})
        error_of(r, 400, "messages[0].images", "vision is not supported yet")
        assert factory.engines == [] or factory.last.seen == []


# ----- options -------------------------------------------------------------------------------


def test_options_map_onto_sampling(models_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = {
        "temperature": 0.3,
        "top_p": 0.5,
        "top_k": 7.0,
        "min_p": 0.1,
        "repeat_penalty": 1.3,
        "presence_penalty": 0.2,
        "frequency_penalty": 0.4,
        "seed": 42,
        "stop": ["two"],
        "num_predict": 2,
        "num_ctx": 1_000_000,
        "repeat_last_n": 32,
        "num_thread": 4,
        "mirostat": 2,
    }
    chat_options._logged.clear()
    with client(models_file) as (http, factory):
        # The app's logging setup stops propagation: listen on its logger itself.
        logger = logging.getLogger("locallab_cpp")
        logger.addHandler(caplog.handler)
        try:
            r = http.post(
                "/api/chat",
                json={"model": "alpha", "messages": ASK, "options": options, "stream": False},
            )
        finally:
            logger.removeHandler(caplog.handler)
        assert r.status_code == 200, r.text
        inp = factory.last.seen[-1]
    s = inp.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p) == (0.3, 0.5, 7, 0.1)
    assert (s.repetition_penalty, s.presence_penalty, s.frequency_penalty) == (1.3, 0.2, 0.4)
    assert s.seed == 42
    assert inp.max_tokens == 2 and "two" in inp.stop
    assert r.json()["done_reason"] == "length"
    logged = caplog.text
    assert "num_thread" in logged and "mirostat" in logged and "repeat_last_n" in logged
    assert "num_ctx 1000000" in logged


def test_ollama_defaults_when_no_options(models_file: Path) -> None:
    with client(models_file) as (http, factory):
        http.post("/api/chat", json={"model": "alpha", "messages": ASK, "stream": False})
        inp = factory.last.seen[-1]
    s = inp.sampling
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repetition_penalty) == (
        0.8,
        40,
        0.9,
        0.0,
        1.1,
    )
    assert s.seed is None
    assert inp.max_tokens == factory.last.info.n_ctx


@pytest.mark.parametrize("num_predict", [-1, -2])
def test_num_predict_unlimited(models_file: Path, num_predict: int) -> None:
    with client(models_file) as (http, factory):
        body = {"model": "alpha", "messages": ASK, "stream": False}
        http.post("/api/chat", json={**body, "options": {"num_predict": num_predict}})
        assert factory.last.seen[-1].max_tokens == factory.last.info.n_ctx


def test_a_bad_option_value_is_400(models_file: Path) -> None:
    with client(models_file) as (http, _):
        r = http.post(
            "/api/chat", json={"model": "alpha", "messages": ASK, "options": {"top_p": 7}}
        )
    error_of(r, 400, "options", "top_p")


# ----- format, tools, think ----------------------------------------------------------------


def test_format_json_and_schema_become_the_grammar(
    models_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def fake_grammar(schema: Any) -> str:
        seen.append(schema)
        return 'root ::= "{}"'

    monkeypatch.setattr("locallab_cpp.serving.chat.grammar_for_json_schema", fake_grammar)
    monkeypatch.setattr("locallab_cpp.serving.chat.checked_grammar", lambda g: g)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    with client(models_file) as (http, factory):
        for fmt in ("json", schema):
            r = http.post(
                "/api/chat",
                json={"model": "alpha", "messages": ASK, "format": fmt, "stream": False},
            )
            assert r.status_code == 200, r.text
            assert factory.last.seen[-1].grammar == 'root ::= "{}"'
    assert seen == [JSON_OBJECT_SCHEMA, schema]


def test_a_schema_the_converter_refuses_is_400(models_file: Path) -> None:
    with client(models_file) as (http, _):
        r = http.post(
            "/api/chat",
            json={"model": "alpha", "messages": ASK, "format": {"type": "object", "$ref": 5}},
        )
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"]


def test_tool_calls_come_back_with_object_arguments(models_file: Path) -> None:
    with client(models_file, output=CALL) as (http, factory):
        body = {"model": "alpha", "messages": ASK, "tools": [WEATHER]}
        whole = http.post("/api/chat", json={**body, "stream": False}).json()
        chunks = lines(http.post("/api/chat", json=body))
        assert factory.last.chat_tools[-1][0]["function"]["name"] == "get_weather"
    [call] = whole["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"] == {"city": "Paris"}
    assert whole["done_reason"] == "stop"
    streamed = [c for c in chunks if c["message"].get("tool_calls")]
    assert len(streamed) == 1
    assert streamed[0]["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    check_final(chunks[-1])


def test_tool_turns_and_assistant_calls_in_history(models_file: Path) -> None:
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": "cold"},
        {"role": "user", "content": "and so?"},
    ]
    with client(models_file) as (http, factory):
        r = http.post(
            "/api/chat",
            json={"model": "alpha", "messages": messages, "tools": [WEATHER], "stream": False},
        )
        assert r.status_code == 200, r.text
        sent = factory.last.chat_calls[-1]
    call = sent[1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert sent[2]["role"] == "tool" and sent[2]["content"] == "cold"
    assert sent[2]["name"] == "get_weather" and sent[2]["tool_call_id"] == call["id"]


THINK = ["<think>let me see", "</think>", "The answer."]


@pytest.mark.parametrize("think", [None, True, "high"])
def test_reasoning_goes_to_thinking(models_file: Path, think: Any) -> None:
    body: dict[str, Any] = {"model": "alpha", "messages": ASK, "stream": False}
    if think is not None:
        body["think"] = think
    with client(models_file, output=THINK) as (http, _):
        whole = http.post("/api/chat", json=body).json()
        chunks = lines(http.post("/api/chat", json={**body, "stream": True}))
        gen = http.post(
            "/api/generate", json={"model": "alpha", "prompt": "q", "stream": False, "think": think}
        ).json()
    assert whole["message"]["thinking"] == "let me see"
    assert whole["message"]["content"] == "The answer."
    assert "".join(c["message"].get("thinking", "") for c in chunks) == "let me see"
    assert (gen["thinking"], gen["response"]) == ("let me see", "The answer.")


def test_think_false_drops_the_reasoning(models_file: Path) -> None:
    with client(models_file, output=THINK) as (http, _):
        whole = http.post(
            "/api/chat", json={"model": "alpha", "messages": ASK, "stream": False, "think": False}
        ).json()
    assert whole["message"] == {"role": "assistant", "content": "The answer."}


# ----- models, keep_alive, errors ------------------------------------------------------------


def test_unknown_model_is_ollamas_404(models_file: Path) -> None:
    with client(models_file) as (http, _):
        for path, body in (("/api/chat", {"messages": ASK}), ("/api/generate", {"prompt": "x"})):
            r = http.post(path, json={"model": "nope:latest", **body})
            error_of(r, 404, 'model "nope:latest" not found, try pulling it first')
        error_of(http.post("/api/chat", json={"model": "gone", "messages": []}), 404, "gone")


def test_empty_messages_load_and_keep_alive_0_unloads(models_file: Path) -> None:
    with client(models_file) as (http, _):
        http.post("/models/unload")
        r = http.post("/api/chat", json={"model": "beta", "messages": []})
        [chunk] = lines(r)
        assert (chunk["done"], chunk["done_reason"]) == (True, "load")
        assert http.get("/models/current").json()["model_id"] == "beta"
        r = http.post(
            "/api/generate", json={"model": "beta", "prompt": "", "keep_alive": 0, "stream": False}
        )
        assert r.json()["done_reason"] == "unload" and r.json()["response"] == ""
        assert http.get("/models/current").status_code == 404


def test_a_load_the_request_caused_is_load_duration(models_file: Path) -> None:
    with client(models_file) as (http, _):
        first = http.post(
            "/api/chat", json={"model": "beta", "messages": ASK, "stream": False}
        ).json()
        again = http.post(
            "/api/chat", json={"model": "beta", "messages": ASK, "stream": False}
        ).json()
    assert first["load_duration"] > 0 and again["load_duration"] == 0


def test_keep_alive_reaches_the_manager(models_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, float | None]] = []
    with client(models_file) as (http, _):
        manager = http.app.state.models
        monkeypatch.setattr(manager, "keep_alive", lambda m, s: calls.append((m, s)))
        for value in ("5m", -1, 30):
            body = {"model": "alpha", "messages": ASK, "stream": False, "keep_alive": value}
            assert http.post("/api/chat", json=body).status_code == 200
        r = http.post("/api/chat", json={"model": "alpha", "messages": ASK, "keep_alive": "soon"})
        error_of(r, 400, "keep_alive")
    assert calls == [("alpha", 300.0), ("alpha", None), ("alpha", 30.0)]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        (300, 300.0),
        ("300", 300.0),
        (-1, None),
        ("-1m", None),
        (0, 0.0),
        ("0", 0.0),
        (None, None),
    ],
)
def test_parse_keep_alive(value: Any, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5x", "", "1h30", True, "nan", "5m3"])
def test_parse_keep_alive_refuses(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="keep_alive"):
        parse_keep_alive(value)


def test_a_prompt_longer_than_the_context_is_400_before_the_stream(models_file: Path) -> None:
    long = [{"role": "user", "content": " ".join(f"w{i}" for i in range(200))}]
    with client(models_file) as (http, _):
        r = http.post("/api/chat", json={"model": "alpha", "messages": long})
    error_of(r, 400)


def test_a_failure_mid_stream_ends_with_an_error_line(models_file: Path) -> None:
    with client(models_file, fail_after=2) as (http, _):
        chunks = lines(http.post("/api/chat", json={"model": "alpha", "messages": ASK}))
    assert list(chunks[-1]) == ["error"] and chunks[-1]["error"]
    assert "/home/alice" not in chunks[-1]["error"]
    assert all(c.get("done") is False for c in chunks[:-1])


def test_a_malformed_body_is_400_in_ollamas_body(models_file: Path) -> None:
    with client(models_file) as (http, _):
        r = http.post("/api/chat", json={"model": "alpha", "messages": "hi"})
        error_of(r, 400)
        r = http.post("/api/chat", json={"model": "alpha", "messages": ASK, "think": "max"})
        error_of(r, 400)


def test_keep_alive_0_unloads_once_the_answer_is_done(models_file: Path) -> None:
    with client(models_file) as (http, _):
        body = {"model": "alpha", "messages": ASK, "stream": False, "keep_alive": 0}
        r = http.post("/api/chat", json=body)
        assert r.json()["message"]["content"].startswith("Echo:")  # answered, then unloaded
        deadline = time.monotonic() + 5
        while http.get("/models/current").status_code != 404:
            assert time.monotonic() < deadline, "the model stayed loaded"
            time.sleep(0.05)
        assert http.app.state.models.expires_at() is None


def test_expires_at_follows_keep_alive(models_file: Path) -> None:
    with client(models_file) as (http, _):
        body = {"model": "alpha", "messages": ASK, "stream": False, "keep_alive": "1h"}
        http.post("/api/chat", json=body)
        expires = http.app.state.models.expires_at()
        assert expires is not None and 3500 < expires - time.time() <= 3600
