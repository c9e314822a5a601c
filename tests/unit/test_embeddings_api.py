"""The embedding APIs over a fake embedding engine: OpenAI's POST /v1/embeddings and
Ollama's POST /api/embed and /api/embeddings (request shapes, normalization, base64, the
model a request means, truncation and errors), and serving/embeddings.py's helpers."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_embedder import BOS, DIMENSIONS, N_CTX, SEP, KindFactory, fake_vector, word_id
from helpers import make_client
from litestar.testing import TestClient

from locallab_cpp.api.openai.embedding_protocol import MAX_INPUTS
from locallab_cpp.api.openai.embeddings import encode_base64
from locallab_cpp.serving.embeddings import normalized

REGISTRY = """\
[[models]]
id = "chatty"
name = "A chat model"
path = "chatty.gguf"
size_bytes = 16

[[models]]
id = "embedder"
name = "An embedding model"
path = "embedder.gguf"
kind = "embedding"
size_bytes = 16

[[models]]
id = "ranker"
name = "A rerank model"
path = "ranker.gguf"
kind = "rerank"
size_bytes = 16
"""


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    for name in ("chatty", "embedder", "ranker"):
        (tmp_path / f"{name}.gguf").write_bytes(b"GGUF" + b"\0" * 12)
    path = tmp_path / "models.toml"
    path.write_text(REGISTRY, encoding="utf-8")
    return path


@pytest.fixture
def kind_factory() -> KindFactory:
    return KindFactory()


@pytest.fixture
def api(registry_file: Path, kind_factory: KindFactory) -> Iterator[TestClient[Any]]:
    with make_client(registry_file, kind_factory, no_model=True) as c:
        yield c


def tokens_of(text: str) -> list[int]:
    return [BOS, *(word_id(w) for w in text.split()), SEP]


def unit(text_or_tokens: str | list[int]) -> list[float]:
    tokens = tokens_of(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
    return normalized(fake_vector(tokens))


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


def openai_error(r: Any, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    for needle in needles:
        assert needle in error["message"], (needle, error)
    return str(error["message"])


# ----- OpenAI --------------------------------------------------------------------------------


def test_a_string_gives_one_unit_vector_with_usage(api: TestClient[Any]) -> None:
    r = api.post("/v1/embeddings", json={"model": "embedder", "input": "hello there world"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "embedder"
    [item] = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert close(item["embedding"], unit("hello there world"))
    assert math.isclose(math.fsum(x * x for x in item["embedding"]), 1.0, rel_tol=1e-9)
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


def test_every_input_shape_in_order(api: TestClient[Any], kind_factory: KindFactory) -> None:
    texts = ["one", "two words", "three little words"]
    body = api.post("/v1/embeddings", json={"model": "embedder", "input": texts}).json()
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for d, text in zip(body["data"], texts, strict=True):
        assert close(d["embedding"], unit(text))
    # All inputs of a request reach the engine in one call (one shared batch).
    assert kind_factory.embedders[-1].calls[-1] == [tokens_of(t) for t in texts]
    ids = [5, 6, 7]
    body = api.post("/v1/embeddings", json={"model": "embedder", "input": ids}).json()
    assert len(body["data"]) == 1 and close(body["data"][0]["embedding"], unit(ids))
    assert body["usage"]["prompt_tokens"] == 3  # token ids are taken as they are
    lists = [[5, 6], [7, 8, 9]]
    body = api.post("/v1/embeddings", json={"model": "embedder", "input": lists}).json()
    assert [close(d["embedding"], unit(t)) for d, t in zip(body["data"], lists, strict=True)] == [
        True,
        True,
    ]


def test_base64_is_little_endian_float32_of_the_float_answer(api: TestClient[Any]) -> None:
    floats = api.post("/v1/embeddings", json={"model": "embedder", "input": "a b c"}).json()
    packed = api.post(
        "/v1/embeddings", json={"model": "embedder", "input": "a b c", "encoding_format": "base64"}
    ).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{DIMENSIONS}f", raw))
    assert close(
        decoded,
        [
            float(struct.unpack("<f", struct.pack("<f", x))[0])
            for x in floats["data"][0]["embedding"]
        ],
    )
    assert encode_base64([1.0, -2.0]) == base64.b64encode(struct.pack("<2f", 1.0, -2.0)).decode()


def test_dimensions_only_the_models_own(api: TestClient[Any]) -> None:
    ok = api.post(
        "/v1/embeddings", json={"model": "embedder", "input": "x", "dimensions": DIMENSIONS}
    )
    assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == DIMENSIONS
    r = api.post("/v1/embeddings", json={"model": "embedder", "input": "x", "dimensions": 4})
    openai_error(r, 400, "'dimensions'", f"{DIMENSIONS} dimensions")


def test_null_and_unknown_fields_are_accepted(api: TestClient[Any]) -> None:
    r = api.post(
        "/v1/embeddings",
        json={
            "model": "embedder",
            "input": "x",
            "encoding_format": None,
            "dimensions": None,
            "user": "someone",
            "something_new": 1,
        },
    )
    assert r.status_code == 200, r.text


def test_the_model_a_request_means(api: TestClient[Any], kind_factory: KindFactory) -> None:
    # OpenAI's own names, or none, mean the embedding model.
    for model in ("text-embedding-3-small", None):
        r = api.post("/v1/embeddings", json={"model": model, "input": "x"})
        assert r.status_code == 200 and r.json()["model"] == "embedder", r.text
    r = api.post("/v1/embeddings", json={"model": "chatty", "input": "x"})
    openai_error(r, 400, "'chatty' is a chat model", "'embedder'")
    r = api.post("/v1/embeddings", json={"model": "ranker", "input": "x"})
    openai_error(r, 400, "rerank model")
    assert [opened for opened, _ in kind_factory.opened] == ["embedder"]  # nothing else loaded


def test_openai_errors(api: TestClient[Any]) -> None:
    long_text = " ".join(["w"] * N_CTX)  # N_CTX words + BOS and SEP
    r = api.post("/v1/embeddings", json={"model": "embedder", "input": long_text})
    message = openai_error(r, 400, f"at most {N_CTX} tokens")
    assert r.json()["error"]["code"] == "context_length_exceeded" and "Input 0" in message
    r = api.post("/v1/embeddings", json={"model": "embedder", "input": ["ok", ""]})
    openai_error(r, 400, "input 1 is empty")
    r = api.post("/v1/embeddings", json={"model": "embedder", "input": [[1, 2], []]})
    openai_error(r, 400, "input 1 is empty")
    r = api.post("/v1/embeddings", json={"model": "embedder", "input": [list(range(N_CTX + 1))]})
    openai_error(r, 400, f"at most {N_CTX} tokens")
    for bad in (["text", 3], [1, "x"], [[1], "x"], [True, 2], [-1], [{"text": "x"}]):
        r = api.post("/v1/embeddings", json={"model": "embedder", "input": bad})
        openai_error(r, 400, "'input'")
    r = api.post("/v1/embeddings", json={"model": "embedder", "input": []})
    assert r.status_code == 400 and "error" in r.json()
    r = api.post("/v1/embeddings", json={"model": "embedder", "input": ["x"] * (MAX_INPUTS + 1)})
    assert r.status_code == 400 and "error" in r.json()
    r = api.post(
        "/v1/embeddings", json={"model": "embedder", "input": "x", "encoding_format": "hex"}
    )
    assert r.status_code == 400 and "encoding_format" in r.json()["error"]["message"]
    r = api.post("/v1/embeddings", json={"model": "embedder"})
    assert r.status_code == 400 and "input" in r.json()["error"]["message"]


def test_a_registry_without_embedding_models(tmp_path: Path) -> None:
    (tmp_path / "chatty.gguf").write_bytes(b"GGUF" + b"\0" * 12)
    path = tmp_path / "models.toml"
    path.write_text(REGISTRY.split("\n\n")[0] + "\n", encoding="utf-8")
    with make_client(path, KindFactory(), no_model=True) as c:
        r = c.post("/v1/embeddings", json={"input": "x"})
        openai_error(r, 400, "no embedding model", 'kind = "embedding"')


def test_the_chat_routes_still_chat_after_an_embedding(api: TestClient[Any]) -> None:
    assert api.post("/v1/embeddings", json={"input": "x"}).status_code == 200
    r = api.post(
        "/v1/chat/completions",
        json={"model": "chatty", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200 and r.json()["model"] == "chatty", r.text


# ----- Ollama --------------------------------------------------------------------------------


def test_ollama_embed_string_and_list(api: TestClient[Any]) -> None:
    r = api.post("/api/embed", json={"model": "embedder:latest", "input": "hi there"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "embedder:latest"
    assert len(body["embeddings"]) == 1 and close(body["embeddings"][0], unit("hi there"))
    assert body["prompt_eval_count"] == 4
    assert body["total_duration"] >= body["load_duration"] > 0  # this request loaded it
    r = api.post("/api/embed", json={"model": "embedder", "input": ["a", "b c"]})
    body = r.json()
    assert [close(v, unit(t)) for v, t in zip(body["embeddings"], ["a", "b c"], strict=True)] == [
        True,
        True,
    ]
    assert body["load_duration"] == 0  # resident now


def test_ollama_truncate(api: TestClient[Any], kind_factory: KindFactory) -> None:
    words = [f"w{i}" for i in range(N_CTX + 5)]
    r = api.post("/api/embed", json={"model": "embedder", "input": " ".join(words)})
    assert r.status_code == 200, r.text
    assert r.json()["prompt_eval_count"] == N_CTX
    [sent] = kind_factory.embedders[-1].calls[-1]
    # Cut to the context, the trailing SEP kept as the model was trained to see it.
    assert sent == [BOS, *(word_id(w) for w in words[: N_CTX - 2]), SEP]
    r = api.post(
        "/api/embed", json={"model": "embedder", "input": " ".join(words), "truncate": False}
    )
    assert r.status_code == 400 and f"at most {N_CTX} tokens" in r.json()["error"]


def test_ollama_dimensions_shorten_and_normalize_again(api: TestClient[Any]) -> None:
    r = api.post("/api/embed", json={"model": "embedder", "input": "x y", "dimensions": 3})
    [vector] = r.json()["embeddings"]
    assert close(vector, normalized(unit("x y")[:3]))
    r = api.post("/api/embed", json={"model": "embedder", "input": "x", "dimensions": 99})
    assert r.status_code == 400 and "dimensions" in r.json()["error"]


def test_ollama_errors_and_keep_alive(api: TestClient[Any]) -> None:
    r = api.post("/api/embed", json={"model": "nope", "input": "x"})
    assert r.status_code == 404 and list(r.json()) == ["error"]
    assert 'model "nope" not found' in r.json()["error"]
    r = api.post("/api/embed", json={"model": "chatty:latest", "input": "x"})
    assert r.status_code == 400 and "chat model" in r.json()["error"]
    r = api.post("/api/embed", json={"model": "embedder", "input": ["x", ""]})
    assert r.status_code == 400 and "input 1 is empty" in r.json()["error"]
    r = api.post("/api/embed", json={"model": "embedder", "input": "x", "keep_alive": "soon"})
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]
    r = api.post("/api/embed", json={"model": "embedder", "input": "x", "keep_alive": "10m"})
    assert r.status_code == 200
    expires = api.get("/api/ps").json()["models"][0]["expires_at"]
    assert expires and not expires.startswith("0001")
    r = api.post("/api/embed", json={"model": "embedder", "input": 5})
    assert r.status_code == 400 and list(r.json()) == ["error"]


def test_ollama_empty_input_only_loads(api: TestClient[Any], kind_factory: KindFactory) -> None:
    r = api.post("/api/embed", json={"model": "embedder"})
    assert r.status_code == 200 and r.json()["embeddings"] == []
    assert [m for m, _ in kind_factory.opened] == ["embedder"]


def test_ollama_legacy_embeddings_are_not_normalized(api: TestClient[Any]) -> None:
    r = api.post("/api/embeddings", json={"model": "embedder", "prompt": "hello you"})
    assert r.status_code == 200, r.text
    assert close(r.json()["embedding"], fake_vector(tokens_of("hello you")))
    assert math.fsum(x * x for x in r.json()["embedding"]) > 1.5
    r = api.post("/api/embeddings", json={"model": "embedder", "prompt": ""})
    assert r.status_code == 200 and r.json() == {"embedding": []}
    r = api.post("/api/embeddings", json={"model": "chatty", "prompt": "x"})
    assert r.status_code == 400 and "chat model" in r.json()["error"]


# ----- helpers -------------------------------------------------------------------------------


def test_normalized() -> None:
    v = normalized([3.0, 4.0])
    assert v == [0.6, 0.8]
    assert normalized([0.0, 0.0]) == [0.0, 0.0]
    assert math.isclose(math.fsum(x * x for x in normalized([1e-30, 2e-30])), 1.0)
