"""Every endpoint with the reference's own curl bodies, and the response shapes of decisions.md.

The reference's bodies are used as written except max_length, which is kept small so the
suite stays quick (the "all parameters" variants keep every other field, null included).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from it_support import (
    ServerProcess,
    assert_no_leak,
    check_chat_body,
    check_generate_body,
    check_sse_response,
    check_usage,
    parse_sse,
    streamed_text,
)

from locallab_cpp.engine.llama.repack import cpu_flags, has_amx

pytestmark = pytest.mark.integration

QUANTUM = "Explain quantum computing in simple terms"
CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, how are you?"},
]
BATCH_PROMPTS = ["Write a haiku about nature", "Tell a short joke", "Give a fun fact about space"]
ALL_PARAMS = {
    "model_id": None,
    "stream": False,
    "max_length": 16,
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 80,
    "repetition_penalty": 1.15,
    "do_sample": True,
}


# ----------------------------------------------------------------------------- /generate


def test_generate_all_parameters(client: httpx.Client) -> None:
    r = client.post("/generate", json={"prompt": QUANTUM, **ALL_PARAMS})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    check_generate_body(body, max_length=16)


def test_generate_minimal_body_uses_defaults(client: httpx.Client) -> None:
    """The reference's minimal body; max_length is the only field added (default 8192 would
    take minutes here) so everything else comes from the defaults."""
    r = client.post("/generate", json={"prompt": QUANTUM, "max_length": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    check_generate_body(body, max_length=12)
    # Token counts are real: this prompt is a handful of tokens, not characters or words.
    assert 3 <= body["usage"]["prompt_tokens"] <= len(QUANTUM)


def test_generate_counts_prompt_tokens_really(client: httpx.Client) -> None:
    short = client.post("/generate", json={"prompt": "Hi", "max_length": 1}).json()
    long = client.post("/generate", json={"prompt": "Hi " * 50, "max_length": 1}).json()
    assert long["usage"]["prompt_tokens"] >= short["usage"]["prompt_tokens"] + 40
    assert short["usage"]["completion_tokens"] <= 1


def test_generate_max_length_bounds_completion(client: httpx.Client) -> None:
    body = client.post(
        "/generate",
        json={"prompt": "1, 2, 3, 4, 5,", "max_length": 5, "do_sample": False},
    ).json()
    check_generate_body(body, max_length=5)
    assert body["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


def test_generate_ignores_unknown_fields_and_nulls_mean_defaults(client: httpx.Client) -> None:
    r = client.post(
        "/generate",
        json={
            "prompt": QUANTUM,
            "max_length": 8,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "repetition_penalty": None,
            "do_sample": None,
            "seed": None,
            "stop": None,
            "stream": None,
            "some_future_field": {"nested": [1, 2]},
        },
    )
    assert r.status_code == 200, r.text
    check_generate_body(r.json(), max_length=8)


def test_generate_stop_string_cuts_output(client: httpx.Client) -> None:
    base = {
        "prompt": "1, 2, 3, 4, 5,",
        "max_length": 24,
        "do_sample": False,
        "repetition_penalty": 1.0,
    }
    full = client.post("/generate", json=base).json()["response"]
    assert " 9," in full, full  # greedy counting goes on
    cut = client.post("/generate", json={**base, "stop": [" 9,", "never-there"]}).json()
    assert cut["finish_reason"] == "stop"
    assert cut["response"] == full[: full.index(" 9,")]
    single = client.post("/generate", json={**base, "stop": " 9,"}).json()
    assert single["response"] == cut["response"]


def test_generate_explicit_loaded_model_id(client: httpx.Client) -> None:
    r = client.post(
        "/generate", json={"prompt": QUANTUM, "model_id": "gemma-3-270m", "max_length": 4}
    )
    assert r.status_code == 200, r.text
    check_generate_body(r.json(), max_length=4)


# ----------------------------------------------------------------------------- /chat


def test_chat_minimal(client: httpx.Client) -> None:
    r = client.post("/chat", json={"messages": CHAT_MESSAGES, "max_length": 12})
    assert r.status_code == 200, r.text
    check_chat_body(r.json(), max_length=12)


def test_chat_all_parameters(client: httpx.Client) -> None:
    r = client.post("/chat", json={"messages": CHAT_MESSAGES, **ALL_PARAMS})
    assert r.status_code == 200, r.text
    body = r.json()
    check_chat_body(body, max_length=16)
    # The system message is part of the prompt: more prompt tokens than the user turn alone.
    alone = client.post("/chat", json={"messages": CHAT_MESSAGES[1:], "max_length": 1}).json()
    assert body["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"]


def test_chat_ids_are_unique(client: httpx.Client) -> None:
    ids = {
        client.post("/chat", json={"messages": CHAT_MESSAGES, "max_length": 1}).json()["id"]
        for _ in range(3)
    }
    assert len(ids) == 3


def test_chat_multi_turn_with_assistant(client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ]
    r = client.post("/chat", json={"messages": messages, "max_length": 8})
    assert r.status_code == 200, r.text
    check_chat_body(r.json(), max_length=8)


# ----------------------------------------------------------------------------- /generate/batch


def test_batch_minimal(client: httpx.Client) -> None:
    r = client.post("/generate/batch", json={"prompts": BATCH_PROMPTS, "max_length": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["responses"]) == len(BATCH_PROMPTS)
    assert all(isinstance(t, str) for t in body["responses"])
    check_usage(body["usage"], max_completion=8 * len(BATCH_PROMPTS))


def test_batch_all_parameters(client: httpx.Client) -> None:
    params = {k: v for k, v in ALL_PARAMS.items() if k != "stream"}
    r = client.post("/generate/batch", json={"prompts": BATCH_PROMPTS, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["responses"]) == 3
    check_usage(body["usage"], max_completion=16 * 3)


def test_batch_keeps_order_and_sums_usage(client: httpx.Client) -> None:
    """Greedy outputs of the batch are in prompt order: each equals (or, where batched
    arithmetic diverges, starts like) the same prompt's answer alone, and usage is the sum."""
    prompts = [
        "1, 2, 3, 4, 5,",
        "Monday, Tuesday, Wednesday,",
        "a b c d e f",
        "January, February, March,",
    ]
    params = {"max_length": 6, "do_sample": False, "repetition_penalty": 1.0}
    singles = [client.post("/generate", json={"prompt": p, **params}).json() for p in prompts]
    batch = client.post("/generate/batch", json={"prompts": prompts, **params}).json()
    assert len(batch["responses"]) == len(prompts)
    for single, text in zip(singles, batch["responses"], strict=True):
        assert text[:2] == single["response"][:2], (text, single["response"])
    usage = batch["usage"]
    assert usage["prompt_tokens"] == sum(s["usage"]["prompt_tokens"] for s in singles)
    assert usage["completion_tokens"] <= 6 * len(prompts)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if "finish_reasons" in batch:
        assert len(batch["finish_reasons"]) == len(prompts)


# ----------------------------------------------------------------------------- /models/*


def test_models_load_current_model(client: httpx.Client) -> None:
    r = client.post("/models/load", json={"model_id": "gemma-3-270m"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    assert body["model_id"] == "gemma-3-270m"
    assert isinstance(body["message"], str) and body["message"]
    health = client.get("/health").json()
    assert health.pop("slots_idle") >= 1 and health.pop("slots_processing") == 0
    assert health == {"status": "healthy", "model_loaded": True, "model_id": "gemma-3-270m"}


def test_models_current(client: httpx.Client) -> None:
    r = client.get("/models/current")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == "gemma-3-270m"
    assert isinstance(body["name"], str) and body["name"]
    assert body["is_loaded"] is True
    assert isinstance(body["n_ctx"], int) and body["n_ctx"] > 0
    assert isinstance(body["n_gpu_layers"], int) and body["n_gpu_layers"] >= 0
    assert isinstance(body["size_bytes"], int) and body["size_bytes"] > 100_000_000
    assert body["chat_format"] is None or isinstance(body["chat_format"], str)
    assert isinstance(body["loaded_at"], int | float)
    assert body["loaded_at"] <= time.time() + 1
    assert_no_leak(r.text)


def test_models_available(client: httpx.Client) -> None:
    r = client.get("/models/available")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["current_model"] == "gemma-3-270m"
    models = body["models"]
    assert len(models) >= 1
    required = {"id", "name", "description", "size_bytes", "is_downloaded", "is_loaded", "can_load"}
    for entry in models:
        assert required <= set(entry), entry
        assert isinstance(entry["id"], str) and entry["id"]
        assert isinstance(entry["size_bytes"], int)
        for flag in ("is_downloaded", "is_loaded", "can_load"):
            assert isinstance(entry[flag], bool), entry
    ids = [m["id"] for m in models]
    assert len(ids) == len(set(ids))
    gemma = next(m for m in models if m["id"] == "gemma-3-270m")
    assert gemma["is_loaded"] is True and gemma["is_downloaded"] is True
    assert gemma["can_load"] is True
    assert [m["id"] for m in models if m["is_loaded"]] == ["gemma-3-270m"]
    assert_no_leak(r.text)


# ----------------------------------------------------------------------------- system


def test_health(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    health = r.json()
    # llama-server's slot fields: nothing else runs while this test does.
    parallel = client.get("/system/info").json()["active_model"]["parallel"]
    assert (health.pop("slots_idle"), health.pop("slots_processing")) == (parallel, 0)
    assert health == {"status": "healthy", "model_loaded": True, "model_id": "gemma-3-270m"}


def test_system_info(client: httpx.Client) -> None:
    before = client.get("/system/info").json()
    client.get("/health")
    r = client.get("/system/info")
    assert r.status_code == 200, r.text
    info = r.json()
    for key in ("cpu_usage", "memory_usage", "gpu_info", "active_model", "uptime", "request_count"):
        assert key in info, f"missing {key}"
    assert isinstance(info["cpu_usage"], int | float) and 0 <= info["cpu_usage"] <= 100 * 1024
    assert isinstance(info["memory_usage"], int | float) and 0 < info["memory_usage"] <= 100
    assert info["uptime"] > 0 and info["uptime"] >= before["uptime"]
    assert info["request_count"] >= before["request_count"] + 2
    # The loaded model's details.
    active = info["active_model"]
    assert active["model_id"] == "gemma-3-270m"
    assert active["active_sequences"] == 0
    # --repack auto: the AMX buffer is avoided exactly where the CPU has AMX.
    expected = "no-amx" if has_amx(cpu_flags()) else "on"
    assert active["repack"] == expected, active
    assert active["repack_reason"]
    # CPU, memory, llama.cpp build, GPU offload.
    cpu = info["cpu"]
    assert cpu["physical_cores"] >= 1 and cpu["logical_cores"] >= cpu["physical_cores"]
    assert isinstance(cpu["flags"], list)
    memory = info["memory"]
    assert memory["total_bytes"] >= memory["available_bytes"] > 0
    assert memory["process_rss_bytes"] > 100_000_000  # the model is in memory
    llama = info["llama_cpp"]
    assert llama["llama_cpp_python_version"]
    assert isinstance(llama["gpu_offload_supported"], bool)
    assert isinstance(info["gpu_info"], dict)
    assert_no_leak(r.text)


def test_openapi_schema(client: httpx.Client) -> None:
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = set(doc["paths"])
    assert {
        "/generate",
        "/chat",
        "/generate/batch",
        "/models/load",
        "/models/current",
        "/models/available",
        "/models/unload",
        "/health",
        "/system/info",
    } <= paths
    props = doc["components"]["schemas"]["GenerateRequest"]["properties"]
    assert props["temperature"]["maximum"] == 2
    assert props["top_p"]["maximum"] == 1
    assert props["top_k"]["maximum"] == 1000
    assert props["max_length"]["minimum"] == 1
    assert props["max_length"]["maximum"] == 16384
    assert props["repetition_penalty"]["maximum"] == 2
    assert doc["components"]["schemas"]["GenerateRequest"]["required"] == ["prompt"]
    # The interactive docs answer too.
    assert client.get("/schema").status_code == 200


def test_openapi_schema_has_zero_lower_bounds(client: httpx.Client) -> None:
    props = client.get("/schema/openapi.json").json()["components"]["schemas"]["GenerateRequest"][
        "properties"
    ]
    assert props["temperature"].get("minimum") == 0
    assert props["top_p"].get("exclusiveMinimum") == 0
    assert props["top_k"].get("minimum") == 0


# ----------------------------------------------------------------------------- verbatim bodies
# The reference's curl bodies exactly as written (max_length absent, so 8192, or 8192 itself),
# sent to a server whose context is 256 tokens: decisions.md says generation then stops at the
# context's end with finish_reason "length", so these finish in seconds.

SMALL_CTX = 256
REFERENCE_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("/generate", {"prompt": QUANTUM}),
    (
        "/generate",
        {
            "prompt": QUANTUM,
            "model_id": None,
            "stream": False,
            "max_length": 8192,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 80,
            "repetition_penalty": 1.15,
            "do_sample": True,
        },
    ),
    ("/generate", {"prompt": QUANTUM, "stream": True}),
    ("/chat", {"messages": CHAT_MESSAGES}),
    (
        "/chat",
        {
            "messages": CHAT_MESSAGES,
            "model_id": None,
            "stream": False,
            "max_length": 8192,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 80,
            "repetition_penalty": 1.15,
            "do_sample": True,
        },
    ),
    ("/chat", {"messages": CHAT_MESSAGES, "stream": True}),
    ("/generate/batch", {"prompts": BATCH_PROMPTS}),
    (
        "/generate/batch",
        {
            "prompts": BATCH_PROMPTS,
            "model_id": None,
            "max_length": 8192,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 80,
            "repetition_penalty": 1.15,
            "do_sample": True,
        },
    ),
]


def _check_context_end(usage: dict[str, Any], finish_reason: str) -> None:
    check_usage(usage)
    assert usage["total_tokens"] <= SMALL_CTX, usage
    if finish_reason == "length":  # stopped by the context, not by max_length (8192)
        assert usage["total_tokens"] == SMALL_CTX, usage


@pytest.mark.parametrize(
    ("path", "body"),
    REFERENCE_BODIES,
    ids=[
        "generate-minimal",
        "generate-all",
        "generate-stream",
        "chat-minimal",
        "chat-all",
        "chat-stream",
        "batch-minimal",
        "batch-all",
    ],
)
def test_reference_curl_bodies_verbatim(
    small_server: ServerProcess, path: str, body: dict[str, Any]
) -> None:
    with small_server.client() as c:
        if body.get("stream"):
            with c.stream("POST", path, json=body) as r:
                check_sse_response(r)
                raw = r.read()
            text = streamed_text(parse_sse(raw.decode("utf-8")))
            assert text.strip()
            return
        r = c.post(path, json=body)
        assert r.status_code == 200, r.text
        data = r.json()
    if path == "/generate":
        check_generate_body(data, max_length=SMALL_CTX, exact=False)
        _check_context_end(data["usage"], data["finish_reason"])
    elif path == "/chat":
        check_chat_body(data, max_length=SMALL_CTX)
        _check_context_end(data["usage"], data["choices"][0]["finish_reason"])
    else:
        assert len(data["responses"]) == len(BATCH_PROMPTS)
        check_usage(data["usage"], max_completion=len(BATCH_PROMPTS) * SMALL_CTX)
        assert data["usage"]["total_tokens"] <= len(BATCH_PROMPTS) * SMALL_CTX
