"""The libraries tools use to speak Ollama, against the real server (issue 19, item 9).

* LiteLLM's ``ollama_chat/`` provider (what aider uses): ``litellm.get_model_info`` reads
  POST /api/show ``{"name": "id:tag"}`` (the context length from ``model_info``'s
  ``<arch>.context_length``, tool support from ``template``); ``litellm.completion`` posts
  /api/chat with ``options`` (``num_predict`` from max_tokens, ``temperature``), ``stream``
  true or false, ``tools``, tool turns with ``tool_call_id`` and no ``tool_name``, every
  message with ``images: []``, and no Content-Type header; it also calls /api/show while
  it completes (cost accounting), at OLLAMA_API_BASE.
* LangChain's ``ChatOllama`` (langchain-ollama over the ``ollama`` client): /api/chat
  always streamed, even for ``invoke``, with ``options`` (num_ctx, num_predict,
  temperature), ``keep_alive``, ``tools`` ([] when none are bound); GET /api/tags for
  ``validate_model_on_init``.

The model is a 270M base model: the tests check shapes and the protocol (content or tool
calls of the right types, token counts, the same greedy text streamed or not), never what
it says. No test may reach past this machine: LiteLLM reads its bundled cost map
(LITELLM_LOCAL_MODEL_COST_MAP, set before it is imported), and every socket connection
to an address that is not loopback fails the test.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from functools import reduce
from operator import add
from typing import Any

import pytest

# Before litellm is imported: it fetches its model cost map from GitHub at import otherwise.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
litellm = pytest.importorskip("litellm")
langchain_ollama = pytest.importorskip("langchain_ollama")
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

NAME = "gemma-3-270m:latest"
LITELLM_MODEL = "ollama_chat/" + NAME
MAX_TOKENS = 8
TIMEOUT_S = 120.0
PROMPT = [{"role": "user", "content": "Count from one to ten."}]
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
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@pytest.fixture(autouse=True)
def local_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything connects anywhere but loopback (telemetry, cost maps)."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            attempts.append(address)
            raise OSError(f"this test allows no connection off this machine ({address})")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert not attempts, f"connections off this machine were tried: {attempts}"


@pytest.fixture
def base_url(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # LiteLLM's /api/show lookups outside completion() use OLLAMA_API_BASE, not api_base.
    monkeypatch.setenv("OLLAMA_API_BASE", server)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    return server


def context_length(client_url: str) -> int:
    """What one request may use at the server's settings, as /v1/models says."""
    import httpx

    models = httpx.get(client_url + "/v1/models", timeout=30).json()["data"]
    [entry] = [m for m in models if m["id"] == "gemma-3-270m"]
    return int(entry["context_length"])


def check_counts(prompt: int, completion: int, total: int | None = None) -> None:
    assert isinstance(prompt, int) and prompt > 0
    assert isinstance(completion, int) and 0 <= completion <= MAX_TOKENS
    if total is not None:
        assert total == prompt + completion


# ----------------------------------------------------------------------- LiteLLM


def completion(base_url: str, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "model": LITELLM_MODEL,
        "api_base": base_url,
        "messages": PROMPT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "timeout": TIMEOUT_S,
        "num_retries": 0,
    }
    return litellm.completion(**(args | kwargs))


def test_litellm_reads_the_model_from_api_show(base_url: str) -> None:
    info = litellm.get_model_info(LITELLM_MODEL)
    # LiteLLM swallows a failed /api/show and reports None: a number proves it was read.
    assert info["max_input_tokens"] == context_length(base_url), info
    assert isinstance(info["supports_function_calling"], bool)


def test_litellm_chat_whole_and_streamed_agree(base_url: str) -> None:
    whole = completion(base_url)
    choice = whole.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    check_counts(whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens)
    if choice.finish_reason == "length":
        assert whole.usage.completion_tokens == MAX_TOKENS
        assert choice.message.content != ""

    chunks = list(completion(base_url, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content  # greedy: the same text either way
    # LiteLLM ends with a chunk of its own for the usage, without a finish reason.
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f] == [choice.finish_reason]
    usage = next(c.usage for c in reversed(chunks) if getattr(c, "usage", None))
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_litellm_chat_with_tools(base_url: str, stream: bool) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = completion(base_url, messages=messages, tools=[WEATHER], stream=stream)
    if stream:
        reply = litellm.stream_chunk_builder(list(reply), messages=messages)
    choice = reply.choices[0]
    calls = choice.message.tool_calls or []
    assert calls or isinstance(choice.message.content, str)
    for call in calls:
        assert call.type == "function" and call.id
        assert call.function.name == "get_weather"
        assert isinstance(json.loads(call.function.arguments), dict)
    assert choice.finish_reason in (("tool_calls",) if calls else ("stop", "length"))

    # The tool's answer goes back as LiteLLM writes it: tool_call_id, no tool_name.
    call_id = "call_1"
    messages += [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"sky": "clear", "c": 21}'},
    ]
    after = completion(base_url, messages=messages, tools=[WEATHER], stream=stream)
    if stream:
        after = litellm.stream_chunk_builder(list(after), messages=messages)
    assert after.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert after.usage.prompt_tokens > reply.usage.prompt_tokens  # the turns were read


def test_litellm_unknown_model_is_a_not_found_error(base_url: str) -> None:
    with pytest.raises(litellm.NotFoundError) as info:
        completion(base_url, model="ollama_chat/no-such-model:latest")
    assert info.value.status_code == 404, info.value
    assert "not found" in str(info.value)


# ----------------------------------------------------------------------- LangChain


def chat_ollama(base_url: str, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "base_url": base_url,
        "model": NAME,
        "num_ctx": 2048,
        "num_predict": MAX_TOKENS,
        "temperature": 0,
        "keep_alive": "5m",
        "client_kwargs": {"timeout": TIMEOUT_S},
    }
    return langchain_ollama.ChatOllama(**(args | kwargs))


def check_ai_message(message: Any) -> None:
    assert isinstance(message.content, str)
    usage = message.usage_metadata
    check_counts(usage["input_tokens"], usage["output_tokens"], usage["total_tokens"])
    meta = message.response_metadata
    assert meta["done"] is True
    assert meta["done_reason"] in ("stop", "length")
    assert str(meta["model"]).startswith("gemma-3-270m")
    for key in ("total_duration", "prompt_eval_count", "eval_count"):
        assert isinstance(meta[key], int) and meta[key] >= 0, (key, meta)
    if meta["done_reason"] == "length":
        assert usage["output_tokens"] == MAX_TOKENS and message.content != ""


def test_chat_ollama_invoke_and_stream_agree(base_url: str) -> None:
    # validate_model_on_init lists /api/tags and looks for "id" or "id:<tag>" in it.
    llm = chat_ollama(base_url, model="gemma-3-270m", validate_model_on_init=True)
    whole = llm.invoke("Count from one to ten.")
    assert isinstance(whole, AIMessage)
    check_ai_message(whole)

    chunks = list(chat_ollama(base_url).stream("Count from one to ten."))
    assert len(chunks) >= 2
    merged = reduce(add, chunks)
    assert merged.content == whole.content  # greedy: the same text either way
    check_ai_message(merged)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_ollama_with_tools(base_url: str, stream: bool) -> None:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "clear"

    llm = chat_ollama(base_url).bind_tools([get_weather])
    question = [HumanMessage("What is the weather in Paris?")]
    reply = reduce(add, llm.stream(question)) if stream else llm.invoke(question)
    assert isinstance(reply.content, str)
    for call in reply.tool_calls:
        assert call["name"] == "get_weather"
        assert isinstance(call["args"], dict)
        assert call["type"] == "tool_call"
    assert reply.usage_metadata["input_tokens"] > 0

    # A tool turn as LangChain sends it: role tool with tool_call_id.
    turns = [
        *question,
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]),
        ToolMessage("clear, 21 C", tool_call_id="c1"),
    ]
    after = llm.invoke(turns)
    assert isinstance(after.content, str)
    assert after.usage_metadata["input_tokens"] > reply.usage_metadata["input_tokens"]


def test_chat_ollama_unknown_model(base_url: str) -> None:
    import ollama

    with pytest.raises(ollama.ResponseError) as info:
        chat_ollama(base_url, model="no-such-model:latest").invoke("hi")
    assert info.value.status_code == 404
    assert "not found" in info.value.error
