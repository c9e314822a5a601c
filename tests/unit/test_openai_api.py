"""The OpenAI-compatible API over the fake engine, driven by the official ``openai`` client.

The client gets Litestar's TestClient (an httpx.Client) as its transport, so every request
goes through the whole app in-process: shapes, defaults, streaming, errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fakes import FakeFactory
from helpers import make_client, parse_sse
from litestar.testing import TestClient

BASE_URL = "http://testserver.local/v1"


@pytest.fixture
def http(models_file: Path, factory: FakeFactory) -> Iterator[TestClient[Any]]:
    with make_client(models_file, factory) as client:
        yield client


@pytest.fixture
def oai(http: TestClient[Any]) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url=BASE_URL, http_client=http, max_retries=0)


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The response is ``status`` with OpenAI's envelope; returns the inner error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


# ----- chat ----------------------------------------------------------------------------------


def test_chat_completion_shape(oai: openai.OpenAI, factory: FakeFactory) -> None:
    reply = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
        ],
    )
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "alpha"  # an unknown name means the loaded model
    [choice] = reply.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: be brief hello there\nline two end"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.completion_tokens == 4
    # OpenAI's sampling defaults, not LocalLab's.
    [inp] = factory.last.seen
    assert inp.sampling.temperature == 1.0 and inp.sampling.top_p == 1.0
    assert inp.sampling.top_k == 0 and inp.sampling.repetition_penalty == 1.0
    assert inp.max_tokens == factory.last.n_ctx  # no limit given: the context's
    assert "<|end|>" in inp.stop


def test_chat_fields_reach_the_engine(oai: openai.OpenAI, factory: FakeFactory) -> None:
    oai.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=3,
        temperature=0.2,
        top_p=0.5,
        stop="STOP",
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"17": -100, "4": 5},
        user="me",
    )
    [inp] = factory.last.seen
    assert inp.max_tokens == 3
    s = inp.sampling
    assert (s.temperature, s.top_p, s.seed) == (0.2, 0.5, 42)
    assert (s.presence_penalty, s.frequency_penalty) == (0.5, -0.5)
    assert dict(s.logit_bias) == {17: -100.0, 4: 5.0}
    assert inp.stop[0] == "STOP"


def test_unknown_fields_and_nulls_are_accepted(http: TestClient[Any]) -> None:
    body = {
        "model": None,
        "messages": [{"role": "user", "content": "hi", "weird": 1}],
        "temperature": None,
        "top_p": None,
        "n": None,
        "stop": None,
        "max_tokens": None,
        "tools": None,
        "tool_choice": None,
        "response_format": None,
        "stream_options": None,
        "brand_new_field": {"x": [1, 2]},
        "store": True,
    }
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("Echo:")


def test_chat_n_choices_use_engine_copies(oai: openai.OpenAI, factory: FakeFactory) -> None:
    reply = oai.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hi"}], n=3, seed=5
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    # One prompt, counted once however many choices.
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(factory.last.seen[0].prompt_tokens)
    assert [inp.sampling.seed for inp in factory.last.seen] == [5, 6, 7]


def test_n_above_max_n_is_400(http: TestClient[Any]) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "n": 5}
    error = error_of(http.post("/v1/chat/completions", json=body), 400)
    assert "max_n" in error["message"] and error["param"] == "n"
    assert error["type"] == "invalid_request_error"


def test_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hi\nline two end"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 4


def test_stream_framing_ends_with_done(http: TestClient[Any]) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    r = http.post("/v1/chat/completions", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == ("message", "[DONE]")
    for _kind, payload in events[:-1]:
        assert json.loads(payload)["object"] == "chat.completion.chunk"


def test_stream_error_mid_way_is_an_error_event_then_done(
    models_file: Path,
) -> None:
    with make_client(models_file, FakeFactory(fail_after=2)) as http:
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        events = parse_sse(http.post("/v1/chat/completions", json=body).text)
    assert events[-1] == ("message", "[DONE]")
    error = json.loads(events[-2][1])["error"]
    assert error["type"] == "server_error" and error["code"] == "engine_failure"
    assert "/home" not in error["message"]


def test_chat_logprobs(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "hi"}],
        logprobs=True,
        top_logprobs=2,
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    tokens = logprobs.content
    assert "".join(t.token for t in tokens) == reply.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.bytes == list(t.token.encode()) for t in tokens)


def test_response_format_json_schema_sets_a_grammar(
    oai: openai.OpenAI, factory: FakeFactory
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    oai.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "hi"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": True},
        },
    )
    grammar = factory.last.seen[-1].grammar
    assert grammar is not None and "root" in grammar
    oai.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_object"},
    )
    assert factory.last.seen[-1].grammar


def test_reasoning_goes_apart_from_content(models_file: Path) -> None:
    output = ["<think>", "let me see", "</think>", "The answer", " is 4."]
    with make_client(models_file, FakeFactory(output=output)) as http:
        oai = openai.OpenAI(api_key="x", base_url=BASE_URL, http_client=http, max_retries=0)
        reply = oai.chat.completions.create(model="a", messages=[{"role": "user", "content": "q"}])
        message = reply.choices[0].message
        assert message.content is not None and message.content.strip() == "The answer is 4."
        assert getattr(message, "reasoning_content", "").strip() == "let me see"
        chunks = list(
            oai.chat.completions.create(
                model="a", messages=[{"role": "user", "content": "q"}], stream=True
            )
        )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    content = "".join(d.content or "" for d in deltas)
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert content.strip() == "The answer is 4." and reasoning.strip() == "let me see"


# ----- completions ---------------------------------------------------------------------------


def test_completion_shape_and_prompt_list(oai: openai.OpenAI, factory: FakeFactory) -> None:
    reply = oai.completions.create(model="alpha", prompt=["one two", "three"], n=2)
    assert reply.object == "text_completion"
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    texts = [c.text for c in reply.choices]
    assert texts[0] == texts[1] == "Echo: one two\nline two end"
    assert texts[2].startswith("Echo: three")
    assert factory.last.seen[0].max_tokens == 16  # OpenAI's default for completions


def test_completion_logprobs_echo_and_stream(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model="alpha", prompt="hey", logprobs=2, echo=True, max_tokens=2)
    choice = reply.choices[0]
    assert choice.text == "heyEcho: hey"
    assert choice.finish_reason == "length"
    lp = choice.logprobs
    assert lp is not None and lp.tokens == ["Echo:", " hey"]
    assert lp.text_offset == [3, 8]
    assert lp.top_logprobs is not None and len(lp.top_logprobs[0]) == 2
    stream = oai.completions.create(
        model="alpha", prompt="hey", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: hey\nline two end"
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_token_id_prompts_are_400(http: TestClient[Any]) -> None:
    error = error_of(http.post("/v1/completions", json={"prompt": [1, 2, 3]}), 400)
    assert "token-id" in error["message"] and error["param"] == "prompt"


def test_suffix_uses_fim_or_says_the_model_has_none(
    models_file: Path, factory: FakeFactory
) -> None:
    with make_client(models_file, factory) as http:
        r = http.post("/v1/completions", json={"prompt": "def f(", "suffix": "return x"})
        assert r.status_code == 200, r.text
        assert factory.last.detokenize(factory.last.seen[0].prompt_tokens).startswith("<pre>")
    with make_client(models_file, FakeFactory(fim=False)) as http:
        error = error_of(http.post("/v1/completions", json={"prompt": "a", "suffix": "b"}), 400)
    assert "fill-in-the-middle" in error["message"] and error["param"] == "suffix"


# ----- models and errors ---------------------------------------------------------------------


def test_models_list_and_get(oai: openai.OpenAI) -> None:
    listed = oai.models.list()
    ids = [m.id for m in listed.data]
    assert ids == ["alpha", "beta", "gone"]
    alpha = listed.data[0]
    assert alpha.object == "model" and alpha.owned_by
    extra = alpha.model_dump()
    assert extra["context_length"] == extra["max_model_len"] == 64  # the loaded slot's
    assert extra["loaded"] is True
    assert oai.models.retrieve("beta").id == "beta"
    with pytest.raises(openai.NotFoundError) as caught:
        oai.models.retrieve("nope")
    assert caught.value.code == "model_not_found"


def test_naming_a_registry_model_loads_it(oai: openai.OpenAI, factory: FakeFactory) -> None:
    reply = oai.chat.completions.create(model="beta", messages=[{"role": "user", "content": "x"}])
    assert reply.model == "beta" and factory.last.spec.id == "beta"


def test_error_envelope(http: TestClient[Any], oai: openai.OpenAI) -> None:
    error = error_of(http.post("/v1/nowhere", json={}), 404)
    assert error["type"] == "invalid_request_error"
    error = error_of(
        http.post("/v1/chat/completions", json={"messages": [], "temperature": 3}), 400
    )
    assert error["type"] == "invalid_request_error" and error["param"]
    error = error_of(
        http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        ),
        400,
    )
    assert error["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": "word " * 100}]
        )
    assert caught.value.code == "context_length_exceeded"
    # The LocalLab API keeps its own format beside it.
    assert http.post("/nowhere", json={}).json().keys() == {"detail"}


def test_non_text_content_parts_are_400(http: TestClient[Any]) -> None:
    part = {"type": "image_url", "image_url": {"url": "data:,"}}
    body = {"messages": [{"role": "user", "content": [part]}]}
    error = error_of(http.post("/v1/chat/completions", json=body), 400)
    assert "text" in error["message"]


def test_limits_show_at_schema(http: TestClient[Any]) -> None:
    schemas = http.get("/schema/openapi.json").json()["components"]["schemas"]
    [name] = [k for k in schemas if k.endswith("ChatCompletionRequest")]
    fields = schemas[name]["properties"]
    assert (fields["temperature"]["minimum"], fields["temperature"]["maximum"]) == (0, 2.0)
    assert (fields["n"]["minimum"], fields["n"]["maximum"]) == (1, 64)
    assert fields["top_logprobs"]["maximum"] == 20
    assert fields["presence_penalty"]["minimum"] == -2.0


def test_model_ids_with_slashes_resolve(models_file: Path, factory: FakeFactory) -> None:
    """Registry ids such as ``microsoft/phi-2`` hold slashes; GET /v1/models/{id} finds them."""
    with models_file.open("a", encoding="utf-8") as out:
        out.write(
            '\n[[models]]\nid = "org/deep/name-1.0"\nname = "Slashed"\n'
            'path = "models/beta.gguf"\nsize_bytes = 2000\n'
        )
    with make_client(models_file, factory) as http:
        oai = openai.OpenAI(api_key="unused", base_url=BASE_URL, http_client=http, max_retries=0)
        assert oai.models.retrieve("org/deep/name-1.0").id == "org/deep/name-1.0"
        assert http.get("/v1/models/org/deep/name-1.0").json()["id"] == "org/deep/name-1.0"
        with pytest.raises(openai.NotFoundError) as caught:
            oai.models.retrieve("org/deep/nope")
        assert caught.value.code == "model_not_found"
        assert http.get("/v1/models").json()["object"] == "list"
        assert http.get("/v1/models/").status_code == 200


def test_a_request_larger_than_slots_and_queue_is_400(http: TestClient[Any]) -> None:
    """64 prompts times n=4 is 256 sequences: more than 4 slots and 128 queue places ever
    hold, so no retry helps: 400 with the limit, not 503."""
    body = {"model": "alpha", "prompt": ["p"] * 64, "n": 4, "max_tokens": 1}
    error = error_of(http.post("/v1/completions", json=body), 400)
    assert "256 sequences" in error["message"] and "at most 132" in error["message"]
    body = {"model": "alpha", "prompt": ["p"] * 33, "n": 4, "max_tokens": 1}
    assert http.post("/v1/completions", json=body).status_code == 200


def test_model_aliases_map_names_to_registry_models(
    models_file: Path, factory: FakeFactory
) -> None:
    """--model-alias NAME=MODEL (NAME a glob): an agent's model names pick a registry model;
    other unknown names keep the loaded one; an alias to a model the registry lacks is 404."""
    aliases = ("claude-haiku-*=beta", "broken=nowhere")
    with make_client(models_file, factory, model_aliases=aliases) as http:
        oai = openai.OpenAI(api_key="x", base_url=BASE_URL, http_client=http, max_retries=0)
        ask = [{"role": "user", "content": "x"}]
        reply = oai.chat.completions.create(model="claude-haiku-4-5", messages=ask)
        assert reply.model == "beta" and factory.last.spec.id == "beta"
        reply = oai.chat.completions.create(model="claude-sonnet-4-6", messages=ask)
        # Unknown: the default model (alpha, loaded at start; beta is resident beside it).
        assert reply.model == "alpha"
        with pytest.raises(openai.NotFoundError):
            oai.chat.completions.create(model="broken", messages=ask)


def test_a_model_alias_needs_name_and_model() -> None:
    from locallab_cpp.config import Settings

    with pytest.raises(ValueError, match="NAME=MODEL"):
        Settings(model_aliases=("justaname",))
