"""/generate, /chat and /generate/batch over the fake engine."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from fakes import CHAT_STOP, FakeFactory
from helpers import assert_error, make_client, parse_sse, run_async, wait_until

from locallab_cpp.engine.types import SamplingParams
from locallab_cpp.errors import GenerationAborted

HELLO_TEXT = "Echo: hello world\nline two end"


def test_generate_shape(client: Any, factory: FakeFactory) -> None:
    response = client.post("/generate", json={"prompt": "hello world"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"] == HELLO_TEXT
    assert body["text"] == body["response"]
    assert body["model"] == "alpha"
    assert body["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 3  # BOS + two words
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    [seen] = factory.last.seen
    assert seen.prompt_tokens[0] == 1  # BOS added for a raw prompt
    assert factory.last.detokenize(seen.prompt_tokens) == "hello world"


def test_defaults_reach_the_engine(client: Any, factory: FakeFactory) -> None:
    assert client.post("/generate", json={"prompt": "a"}).status_code == 200
    assert (
        client.post("/chat", json={"messages": [{"role": "user", "content": "a"}]}).status_code
        == 200
    )
    assert client.post("/generate/batch", json={"prompts": ["a", "b"]}).status_code == 200
    assert len(factory.last.seen) == 4
    for seen in factory.last.seen:
        assert seen.sampling == SamplingParams(
            temperature=0.7,
            top_p=0.9,
            top_k=80,
            repetition_penalty=1.15,
            do_sample=True,
            seed=None,
        )
        assert seen.sampling.greedy is False
        assert seen.max_tokens == 8192


def test_explicit_parameters_reach_the_engine(client: Any, factory: FakeFactory) -> None:
    body = {
        "prompt": "a b",
        "temperature": 0.2,
        "top_p": 0.5,
        "top_k": 5,
        "repetition_penalty": 1.3,
        "do_sample": False,
        "seed": 42,
        "max_length": 100,
    }
    assert client.post("/generate", json=body).status_code == 200
    [seen] = factory.last.seen
    assert seen.sampling == SamplingParams(
        temperature=0.2, top_p=0.5, top_k=5, repetition_penalty=1.3, do_sample=False, seed=42
    )
    assert seen.sampling.greedy is True
    assert seen.max_tokens == 100


def test_max_length_reached_is_finish_reason_length(client: Any) -> None:
    body = client.post("/generate", json={"prompt": "hello world", "max_length": 2}).json()
    assert body["finish_reason"] == "length"
    assert body["response"] == "Echo: hello world"
    assert body["usage"]["completion_tokens"] == 2


def test_stop_strings_are_passed(client: Any, factory: FakeFactory) -> None:
    client.post("/generate", json={"prompt": "x", "stop": "END"})
    client.post("/generate", json={"prompt": "x", "stop": ["###", "\n\n"]})
    client.post("/generate/batch", json={"prompts": ["x"], "stop": ["B"]})
    client.post("/chat", json={"messages": [{"role": "user", "content": "x"}], "stop": "Q:"})
    stops = [seen.stop for seen in factory.last.seen]
    assert stops == [("END",), ("###", "\n\n"), ("B",), ("Q:", CHAT_STOP)]


def test_chat_shape(client: Any, factory: FakeFactory) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello world"},
    ]
    before = int(time.time())
    response = client.post("/chat", json={"messages": messages})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert before <= body["created"] <= int(time.time())
    assert body["model"] == "alpha"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Echo: You are terse. hello world\nline two end"
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == 4
    # The prompt is the template's rendering of every message, tokenized.
    assert factory.last.chat_calls == [messages]
    [seen] = factory.last.seen
    rendered = factory.last.detokenize(seen.prompt_tokens)
    assert rendered == "<system> You are terse. <user> hello world <assistant>"
    assert usage["prompt_tokens"] == len(seen.prompt_tokens)
    assert seen.stop == (CHAT_STOP,)


def test_chat_ids_differ(client: Any) -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    assert (
        client.post("/chat", json=body).json()["id"] != client.post("/chat", json=body).json()["id"]
    )


def test_batch_keeps_order_and_sums_usage(models_file: Path) -> None:
    # Later prompts finish first, so the order must come from the request, not completion.
    factory = FakeFactory(stagger=0.01)
    prompts = ["one", "two two", "three three three"]
    with make_client(models_file, factory) as client:
        response = client.post("/generate/batch", json={"prompts": prompts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["responses"] == [f"Echo: {p}\nline two end" for p in prompts]
    assert body["model"] == "alpha"
    assert body["finish_reasons"] == ["stop", "stop", "stop"]
    finished = [factory.last.detokenize(s.prompt_tokens) for s in factory.last.finished_order]
    assert finished == list(reversed(prompts))
    usage = body["usage"]
    assert usage["prompt_tokens"] == 2 + 3 + 4
    assert usage["completion_tokens"] == 3 * 4
    assert usage["total_tokens"] == 9 + 12


def test_batch_is_submitted_at_once(client: Any, factory: FakeFactory) -> None:
    client.post("/generate/batch", json={"prompts": ["a", "b", "c"]})
    assert [factory.last.detokenize(s.prompt_tokens) for s in factory.last.seen] == ["a", "b", "c"]


# ----- streaming --------------------------------------------------------------------------


def test_generate_stream_framing(client: Any) -> None:
    response = client.post("/generate", json={"prompt": "hello world", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    raw = response.text
    # The chunk "\nline two" is one event of two data lines.
    assert "data: \ndata: line two\n\n" in raw
    assert raw.endswith("data: [DONE]\n\n")
    events = parse_sse(raw)
    assert events == [
        ("message", "Echo:"),
        ("message", " hello world"),
        ("message", "\nline two"),
        ("message", " end"),
        ("message", "[DONE]"),
    ]
    assert "".join(data for _, data in events[:-1]) == HELLO_TEXT


def test_chat_stream_rebuilds_the_text(client: Any) -> None:
    messages = [{"role": "user", "content": "hi there"}]
    plain = client.post("/chat", json={"messages": messages}).json()
    response = client.post("/chat", json={"messages": messages, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert events[-1] == ("message", "[DONE]")
    assert all(kind == "message" for kind, _ in events)
    assert "".join(d for _, d in events[:-1]) == plain["choices"][0]["message"]["content"]


def test_stream_false_is_json(client: Any) -> None:
    response = client.post("/generate", json={"prompt": "x", "stream": False})
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["response"]


def test_engine_error_mid_stream(models_file: Path) -> None:
    with make_client(models_file, FakeFactory(fail_after=2)) as client:
        response = client.post("/generate", json={"prompt": "hello world", "stream": True})
    assert response.status_code == 200
    raw = response.text
    assert "event: error\ndata: {" in raw
    assert raw.endswith("data: [DONE]\n\n")
    events = parse_sse(raw)
    assert events[:2] == [("message", "Echo:"), ("message", " hello world")]
    kind, data = events[2]
    assert kind == "error"
    payload = json.loads(data)
    assert list(payload) == ["detail"]
    assert "llama_decode failed" in payload["detail"]
    assert "alice" not in payload["detail"]  # the path in the engine's message is scrubbed
    assert events[3:] == [("message", "[DONE]")]


def test_engine_error_without_stream_is_json(models_file: Path) -> None:
    with make_client(models_file, FakeFactory(fail_after=1)) as client:
        response = client.post("/generate", json={"prompt": "hello"})
        detail = assert_error(response, 500, "llama_decode failed")
        assert "alice" not in detail
        batch = client.post("/generate/batch", json={"prompts": ["a", "b"]})
        assert_error(batch, 500)


def test_error_before_the_stream_starts_is_plain_json(models_file: Path) -> None:
    with make_client(models_file, FakeFactory(n_ctx=4)) as client:
        response = client.post("/generate", json={"prompt": "one two three four", "stream": True})
    assert_error(response, 413)


# ----- engine limits ----------------------------------------------------------------------


def test_prompt_longer_than_the_context_is_413(models_file: Path) -> None:
    factory = FakeFactory(n_ctx=8)
    with make_client(models_file, factory) as client:
        long = " ".join(["w"] * 10)
        assert_error(client.post("/generate", json={"prompt": long}), 413, "tokens")
        chat = {"messages": [{"role": "user", "content": long}]}
        assert_error(client.post("/chat", json=chat), 413)
        assert_error(client.post("/generate/batch", json={"prompts": ["ok", long]}), 413)
        assert factory.last.seen == []  # all or none
        assert client.post("/generate", json={"prompt": "short"}).status_code == 200


def test_server_busy_is_503_with_retry_after(models_file: Path) -> None:
    factory = FakeFactory(queue_capacity=2, retry_after=5)
    with make_client(models_file, factory) as client:
        response = client.post("/generate/batch", json={"prompts": ["a", "b", "c"]})
        assert_error(response, 503, "busy")
        assert response.headers["retry-after"] == "5"
        assert factory.last.seen == []
        ok = client.post("/generate/batch", json={"prompts": ["a", "b"]})
        assert ok.status_code == 200


def test_server_busy_on_stream_request(models_file: Path) -> None:
    with make_client(models_file, FakeFactory(queue_capacity=0)) as client:
        response = client.post("/generate", json={"prompt": "a", "stream": True})
    assert_error(response, 503)
    assert int(response.headers["retry-after"]) >= 1


# ----- which model --------------------------------------------------------------------------


def test_no_model_loaded_is_503(empty_client: Any, factory: FakeFactory) -> None:
    for route, body in [
        ("/generate", {"prompt": "x"}),
        ("/generate", {"prompt": "x", "stream": True}),
        ("/chat", {"messages": [{"role": "user", "content": "x"}]}),
        ("/generate/batch", {"prompts": ["x"]}),
    ]:
        assert_error(empty_client.post(route, json=body), 503, "POST /models/load")
    assert factory.engines == []


def test_model_id_loads_when_none_is_loaded(empty_client: Any, factory: FakeFactory) -> None:
    response = empty_client.post("/generate", json={"prompt": "x", "model_id": "beta"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "beta"
    assert [model_id for model_id, _ in factory.opened] == ["beta"]


def test_model_id_of_the_loaded_model_does_not_reload(client: Any, factory: FakeFactory) -> None:
    response = client.post("/generate", json={"prompt": "x", "model_id": "alpha"})
    assert response.json()["model"] == "alpha"
    assert len(factory.engines) == 1


def test_model_id_switches_the_model(client: Any, factory: FakeFactory, models_file: Path) -> None:
    response = client.post(
        "/chat", json={"messages": [{"role": "user", "content": "x"}], "model_id": "beta"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "beta"
    assert factory.opened == [
        ("alpha", models_file.parent / "alpha.gguf"),
        ("beta", models_file.parent / "models" / "beta.gguf"),
    ]
    alpha, beta = factory.engines
    # Loaded beside alpha (it fits), and alpha stays the default model: a request
    # without model_id means the model loaded last through /models/load.
    assert not alpha.closed and not beta.closed
    assert client.get("/models/current").json()["model_id"] == "alpha"
    assert client.post("/generate", json={"prompt": "x"}).json()["model"] == "alpha"
    again = client.post("/generate", json={"prompt": "x", "model_id": "beta"})
    assert again.json()["model"] == "beta" and len(factory.engines) == 2


def test_model_id_switches_the_model_when_only_one_fits(models_file: Path) -> None:
    factory = FakeFactory()
    with make_client(models_file, factory, max_models=1) as client:
        response = client.post("/generate", json={"prompt": "x", "model_id": "beta"})
        assert response.status_code == 200, response.text
        alpha, beta = factory.engines
        assert alpha.closed and isinstance(alpha.closed_with, GenerationAborted)
        assert not beta.closed
        resident = client.get("/system/info").json()["resident_models"]
        assert [m["model_id"] for m in resident] == ["beta"]


def test_unknown_model_id_is_404(client: Any, factory: FakeFactory) -> None:
    for model_id in ["nope", "../alpha.gguf", "alpha.gguf"]:
        response = client.post("/generate", json={"prompt": "x", "model_id": model_id})
        assert_error(response, 404, "/models/available")
    assert len(factory.engines) == 1
    assert client.get("/models/current").json()["model_id"] == "alpha"


def test_switch_waits_for_in_flight_generations(models_file: Path) -> None:
    """With room for one model, a request for another waits for the generation."""
    import threading

    gate = threading.Event()
    factory = FakeFactory(gate=gate)

    async def scenario(client: Any) -> None:
        first = asyncio.create_task(client.post("/generate", json={"prompt": "first"}))
        await wait_until(lambda: factory.engines[0].stats().active == 1)
        second = asyncio.create_task(
            client.post("/generate", json={"prompt": "second", "model_id": "beta"})
        )
        await asyncio.sleep(0.1)
        assert not second.done()  # it waits for alpha's generation
        assert len(factory.engines) == 1
        gate.set()
        r1, r2 = await first, await second
        assert r1.status_code == 200 and r1.json()["model"] == "alpha"
        assert r1.json()["response"].startswith("Echo: first")
        assert r2.status_code == 200 and r2.json()["model"] == "beta"

    run_async(models_file, factory, scenario, max_models=1)


def test_unload_ends_in_flight_generation_with_503(models_file: Path) -> None:
    import threading

    gate = threading.Event()
    factory = FakeFactory(gate=gate)

    async def scenario(client: Any) -> None:
        pending = asyncio.create_task(client.post("/generate", json={"prompt": "x"}))
        await wait_until(lambda: factory.engines[0].stats().active == 1)
        unload = await client.post("/models/unload")
        assert unload.status_code == 200
        response = await pending
        assert_error(response, 503, "unloaded")

    run_async(models_file, factory, scenario)
    gate.set()


def test_unload_ends_in_flight_stream_with_error_event(models_file: Path) -> None:
    import threading

    gate = threading.Event()
    factory = FakeFactory(gate=gate)

    async def scenario(client: Any) -> None:
        pending = asyncio.create_task(
            client.post("/generate", json={"prompt": "x", "stream": True})
        )
        await wait_until(lambda: factory.engines[0].stats().active == 1)
        await client.post("/models/unload")
        response = await pending
        events = parse_sse(response.text)
        assert events[-2][0] == "error"
        assert "unloaded" in json.loads(events[-2][1])["detail"]
        assert events[-1] == ("message", "[DONE]")

    run_async(models_file, factory, scenario)
    gate.set()
