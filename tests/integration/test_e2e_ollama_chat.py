"""/api/chat and /api/generate through the official ``ollama`` Python client, against the
real server and the real embedded model (a base model: answers are checked for shape, not
sense). One server for the module, with the FIM copy of the model in a registry overlay
(fim_model.py); the tests that switch or unload the model come last."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import ollama
import pytest
from fim_model import FIM_MODEL_ID, fim_model
from it_support import ServerProcess, start_server

MODEL = "gemma-3-270m:latest"
SHORT = {"num_predict": 8, "temperature": 0}
ASK = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    overlay = fim_model(tmp_path_factory.mktemp("fim"))
    server = start_server("--models-file", str(overlay))
    yield server
    server.assert_clean_shutdown()


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> ollama.Client:
    return ollama.Client(host=srv.base_url, timeout=120)


def check_final(resp: ollama.ChatResponse | ollama.GenerateResponse) -> None:
    assert resp.done is True and resp.done_reason in ("stop", "length")
    assert resp.eval_count and resp.prompt_eval_count
    assert resp.total_duration and resp.eval_duration and resp.prompt_eval_duration
    assert resp.total_duration >= resp.prompt_eval_duration + resp.eval_duration
    assert resp.load_duration is not None and resp.load_duration >= 0


def test_chat_whole_and_streamed(client: ollama.Client) -> None:
    whole = client.chat(model=MODEL, messages=ASK, options=SHORT, stream=False)
    assert whole.model == MODEL and whole.message.role == "assistant"
    assert isinstance(whole.message.content, str) and whole.message.content
    check_final(whole)
    parts = list(client.chat(model=MODEL, messages=ASK, options=SHORT, stream=True))
    assert all(not p.done for p in parts[:-1])
    check_final(parts[-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content


def test_generate_whole_and_streamed(client: ollama.Client) -> None:
    whole = client.generate(model=MODEL, prompt="The sky is", options=SHORT)
    assert whole.response and whole.model == MODEL
    check_final(whole)
    parts = list(client.generate(model=MODEL, prompt="The sky is", options=SHORT, stream=True))
    check_final(parts[-1])
    assert "".join(p.response or "" for p in parts) == whole.response
    raw = client.generate(model=MODEL, prompt="1, 2, 3,", raw=True, options=SHORT)
    assert raw.response and raw.done


def test_format_schema_answer_parses(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Give a person's name and age as JSON."}]
    resp = client.chat(
        model=MODEL,
        messages=messages,
        format=schema,
        options={"num_predict": 80, "temperature": 0},
    )
    data = json.loads(resp.message.content or "")
    assert set(data) == {"name", "age"}
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_tools_and_a_tool_turn_round_trip(client: ollama.Client) -> None:
    tool = {
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
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat(model=MODEL, messages=messages, tools=[tool], options=SHORT)
    for call in first.message.tool_calls or ():  # a base model may or may not call
        assert call.function.name == "get_weather"
        assert isinstance(call.function.arguments, dict)
    history = [
        *messages,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": "sunny, 21 C"},
    ]
    second = client.chat(model=MODEL, messages=history, tools=[tool], options=SHORT)
    assert second.done and isinstance(second.message.content, str)


def test_think_is_accepted(client: ollama.Client) -> None:
    for think in (True, False, "low"):
        resp = client.chat(model=MODEL, messages=ASK, think=think, options=SHORT)
        assert resp.done and resp.message.content is not None


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model:latest", messages=ASK)
    assert caught.value.status_code == 404
    assert "not found" in caught.value.error


def test_generate_with_suffix_on_the_fim_model(client: ollama.Client, srv: ServerProcess) -> None:
    with pytest.raises(ollama.ResponseError) as caught:  # the embedded model has no FIM
        client.generate(model=MODEL, prompt="def add(a, b):\n", suffix="\n", options=SHORT)
    assert caught.value.status_code == 400 and "fill-in-the-middle" in caught.value.error
    resp = client.generate(
        model=f"{FIM_MODEL_ID}:latest",
        prompt="def add(a, b):\n    return ",
        suffix="\n\nprint(add(1, 2))\n",
        raw=True,
        options=SHORT,
    )
    # Loaded beside the embedded model (by this request or an earlier test's): both stay.
    assert resp.done and resp.load_duration is not None
    ps = httpx.get(srv.base_url + "/api/ps").json()["models"]
    assert f"{FIM_MODEL_ID}:latest" in [m["model"] for m in ps]
    assert isinstance(resp.response, str)


def test_keep_alive_0_with_no_messages_unloads(client: ollama.Client, srv: ServerProcess) -> None:
    def resident() -> list[str]:
        ps = httpx.get(srv.base_url + "/api/ps").json()["models"]
        return [m["model"] for m in ps]

    loaded = client.chat(model=MODEL, messages=[])
    assert loaded.done_reason == "load"
    assert MODEL in resident()
    gone = client.chat(model=MODEL, messages=[], keep_alive=0)
    assert gone.done_reason == "unload"
    assert MODEL not in resident()
