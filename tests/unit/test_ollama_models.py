"""Ollama's model endpoints in-process: version, tags, show, ps, pull, delete, the 501s and
405s, and the keep-alive reaper of ModelManager (with the fake engine).

The registry here names small real GGUF files written with the ``gguf`` package: "coder"
has a tool-listing, reasoning chat template and FIM tokens; "plain" has neither; "broken"
is a damaged file; "gone" is missing; "hubby" is a hub entry that is not downloaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from fakes import FakeFactory
from helpers import make_client, make_settings
from litestar.testing import TestClient

from locallab_cpp.api.ollama.model_routes import OLLAMA_VERSION
from locallab_cpp.engine.types import GenerationInput, SamplingParams
from locallab_cpp.models import idle, sizing
from locallab_cpp.models.gguf_shape import with_file_shape
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.placement import held_bytes
from locallab_cpp.models.registry import Registry

CODER_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }}{% endfor %}</tools>{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
CODER_TOKENS = [
    "<unk>",
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "hello",
    "world",
]


def write_gguf(path: Path, *, template: str | None, tokens: list[str], ctx: int = 8192) -> None:
    """A small but real GGUF: llama architecture, two tensors (96 parameters)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Tiny")
    writer.add_basename("tiny")
    writer.add_context_length(ctx)
    writer.add_block_count(2)
    writer.add_embedding_length(4)
    writer.add_file_type(15)
    writer.add_string("general.license", "apache-2.0")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_eos_token_id(2)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((16, 4), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.zeros((32,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


REGISTRY = """\
[[models]]
id = "coder"
path = "coder.gguf"
stop = ["\\n\\n"]

[[models]]
id = "plain"
path = "plain.gguf"
quantization = "Q8_0"

[[models]]
id = "broken"
path = "broken.gguf"
parameters = "1M"
quantization = "Q4_0"

[[models]]
id = "gone"
path = "gone.gguf"

[[models]]
id = "hubby"
repo = "test-org/hubby-GGUF"
file = "hubby.gguf"
"""


@pytest.fixture
def registry_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_gguf(tmp_path / "coder.gguf", template=CODER_TEMPLATE, tokens=CODER_TOKENS)
    write_gguf(tmp_path / "plain.gguf", template=None, tokens=["<unk>", "<s>", "</s>", "a"])
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    path = tmp_path / "models.toml"
    path.write_text(REGISTRY, encoding="utf-8")
    return path


@pytest.fixture
def client(registry_file: Path) -> Iterator[TestClient[Any]]:
    with make_client(registry_file) as c:
        yield c


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_is_numeric_and_new_enough(client: TestClient[Any]) -> None:
    body = client.get("/api/version").json()
    assert body == {"version": OLLAMA_VERSION}
    assert tuple(int(p) for p in body["version"].split(".")) >= (0, 6, 4)


def test_tags_lists_models_on_disk(client: TestClient[Any], registry_file: Path) -> None:
    models = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    assert set(models) == {"coder:latest", "plain:latest", "broken:latest"}
    coder = models["coder:latest"]
    path = registry_file.parent / "coder.gguf"
    assert coder["model"] == "coder:latest"
    assert coder["size"] == path.stat().st_size
    assert coder["digest"] == _sha(path)
    assert coder["modified_at"].endswith("Z") and "T" in coder["modified_at"]
    assert coder["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "96",
        "quantization_level": "Q4_K_M",
    }
    # A damaged header does not break the listing: the registry's figures stand in.
    broken = models["broken:latest"]["details"]
    assert broken["parameter_size"] == "1M" and broken["quantization_level"] == "Q4_0"
    assert broken["family"] == ""


def test_show_describes_the_loaded_model(client: TestClient[Any]) -> None:
    body = client.post("/api/show", json={"model": "coder:latest", "verbose": True}).json()
    info = body["model_info"]
    assert info["general.architecture"] == "llama"
    assert info["general.basename"] == "tiny"
    assert info["general.parameter_count"] == 96
    # The fake engine's slot context, not the trained 8192.
    assert info["llama.context_length"] == 64
    assert info["llama.block_count"] == 2
    assert "tokenizer.chat_template" not in info
    assert info["tokenizer.ggml.tokens"] is None  # the vocabulary is never sent
    assert body["capabilities"] == ["completion", "tools", "insert", "thinking"]
    assert ".Suffix" in body["template"] and CODER_TEMPLATE in body["template"]
    assert body["template"].startswith(
        "{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
    )
    lines = body["parameters"].split("\n")
    assert lines[0] == "num_ctx".ljust(30) + " 64"
    assert lines[1:] == [
        "stop".ljust(30) + ' "<|im_end|>"',
        "stop".ljust(30) + ' "</s>"',
        "stop".ljust(30) + ' "\\n\\n"',
    ]
    assert body["details"]["family"] == "llama"
    assert body["license"] == "apache-2.0"
    assert body["modified_at"].endswith("Z")
    assert "PARAMETER num_ctx" in body["modelfile"]


def test_show_of_a_model_not_loaded_uses_the_planned_context(
    client: TestClient[Any], registry_file: Path
) -> None:
    body = client.post("/api/show", json={"name": "plain"}).json()
    registry = Registry.from_file(registry_file)
    spec = registry.get("plain")
    # Planned with the file's own figures (its header's context), as every listing is.
    shaped = with_file_shape(spec, registry.local_path(spec))
    planned = sizing.plan(shaped, make_settings(registry_file)).n_ctx_slot
    assert body["model_info"]["llama.context_length"] == planned
    assert body["capabilities"] == ["completion", "tools"]  # tools reach every model
    assert body["template"] == "{{ .Prompt }}"
    assert body["details"]["quantization_level"] == "Q4_K_M"  # the file's, over the entry's


def test_show_errors(client: TestClient[Any]) -> None:
    for name in ("nope", "gone:latest", "hubby", "coder:q2_k"):
        r = client.post("/api/show", json={"model": name})
        assert r.status_code == 404, r.text
        assert r.json()["error"].startswith(f'model "{name}" not found, try pulling it first')
    r = client.post("/api/show", json={"model": "broken"})
    assert r.status_code == 503
    assert "GGUF header of model 'broken' cannot be read" in r.json()["error"]
    r = client.post("/api/show", json={})
    assert r.status_code == 404 and list(r.json()) == ["error"]
    r = client.post("/api/show", json={"model": 7})
    assert r.status_code == 400 and list(r.json()) == ["error"]


def test_show_tolerates_unknown_fields_and_nulls(client: TestClient[Any]) -> None:
    r = client.post("/api/show", json={"model": "coder", "name": None, "verbose": None, "x": 1})
    assert r.status_code == 200
    assert r.json()["model_info"]["general.architecture"] == "llama"


def test_ps_reports_the_resident_model(client: TestClient[Any], registry_file: Path) -> None:
    [entry] = client.get("/api/ps").json()["models"]
    path = registry_file.parent / "coder.gguf"
    assert entry["name"] == entry["model"] == "coder:latest"
    assert entry["digest"] == _sha(path)
    manager: ModelManager = client.app.state.models
    engine = manager.resident("coder")
    assert engine is not None
    # What the model holds by the memory estimate: the file, the fake's KV cache, buffers.
    assert entry["size"] == held_bytes(engine) > path.stat().st_size + 4096
    assert entry["size_vram"] == 0
    assert entry["context_length"] == 64
    assert "2200" > entry["expires_at"] > "2020"  # the default keep-alive: 5 minutes
    assert entry["details"]["family"] == "llama"
    client.post("/models/unload")
    assert client.get("/api/ps").json() == {"models": []}


def test_ps_expiry_follows_keep_alive(client: TestClient[Any]) -> None:
    manager: ModelManager = client.app.state.models

    async def set_it() -> None:
        manager.keep_alive("coder", 600)

    client.blocking_portal.call(set_it)
    [entry] = client.get("/api/ps").json()["models"]
    assert "2200" > entry["expires_at"] > "2020"


def test_pull_streams_ollama_progress_for_a_model_on_disk(client: TestClient[Any]) -> None:
    r = client.post("/api/pull", json={"model": "plain:latest"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = r.text.splitlines()
    statuses = [json.loads(line)["status"] for line in lines]
    assert statuses == [
        "pulling manifest",
        "pulling plain",  # no sha256 in the registry: the pulling line names it
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    progress = json.loads(lines[1])
    assert progress["total"] == progress["completed"] > 0
    r = client.post("/api/pull", json={"name": "plain", "stream": False, "insecure": True})
    assert r.json() == {"status": "success"}


def test_pull_errors(client: TestClient[Any]) -> None:
    r = client.post("/api/pull", json={"model": "llama3.2:latest"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error.startswith("pull model manifest: file does not exist")
    assert "coder, plain" in error and "/models/available" in error
    # A download that cannot happen (HF_HUB_OFFLINE): the stream ends with an error line.
    r = client.post("/api/pull", json={"model": "hubby"})
    assert r.status_code == 200
    last = r.text.splitlines()[-1]
    assert '"error"' in last and "HF_HUB_OFFLINE" in last
    r = client.post("/api/pull", json={"model": "hubby", "stream": False})
    assert r.status_code == 503 and "HF_HUB_OFFLINE" in r.json()["error"]


def test_delete_refuses_what_it_cannot_delete(client: TestClient[Any]) -> None:
    r = client.request("DELETE", "/api/delete", json={"model": "coder:latest"})
    assert r.status_code == 409 and "unload it first" in r.json()["error"]
    r = client.request("DELETE", "/api/delete", json={"model": "plain"})
    assert r.status_code == 400 and "not a download" in r.json()["error"]
    r = client.request("DELETE", "/api/delete", json={"model": "hubby"})
    assert r.status_code == 404 and "not found" in r.json()["error"]
    r = client.request("DELETE", "/api/delete", json={"model": "nope"})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "needle"),
    [
        ("POST", "/api/create", "models.toml"),
        ("POST", "/api/push", "never uploads"),
        ("POST", "/api/copy", "--model-alias"),
        ("POST", "/api/blobs/sha256:abc", "models.toml"),
    ],
)
def test_unsupported_endpoints_answer_501(
    client: TestClient[Any], method: str, path: str, needle: str
) -> None:
    r = client.request(method, path, json={"model": "x", "source": "a", "destination": "b"})
    assert r.status_code == 501
    [error] = r.json().values()
    assert "not supported by this server" in error and needle in error
    assert client.head("/api/blobs/sha256:abc").status_code == 501


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/tags"), ("GET", "/api/show"), ("POST", "/api/version"), ("GET", "/api/pull")],
)
def test_wrong_method_is_405_in_ollama_body(
    client: TestClient[Any], method: str, path: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert list(r.json()) == ["error"]
    assert r.headers.get("allow")


# ----- keep-alive ----------------------------------------------------------------------


def _manager(registry_file: Path, factory: FakeFactory) -> ModelManager:
    registry = Registry.from_file(registry_file)
    manager = ModelManager(registry, make_settings(registry_file), factory)
    manager.keep_alive_poll_s = 0.01
    return manager


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idle, "REQUEST_GRACE_S", 0.05)


@pytest.mark.usefixtures("short_grace")
def test_keep_alive_unloads_an_idle_model(registry_file: Path) -> None:
    async def main() -> None:
        manager = _manager(registry_file, FakeFactory())
        await manager.load("coder")
        default = manager.expires_at()  # the default, --keep-alive: 5 minutes
        assert default is not None and 200 < default - time.time() <= 300
        manager.keep_alive("coder", 1.0)  # long enough for the check below on a loaded machine
        expires = manager.expires_at()
        assert expires is not None
        await asyncio.sleep(0.1)
        assert manager.current_id == "coder"
        await _until(lambda: manager.current_id is None)
        assert manager.expires_at() is None
        # Loaded again (by a request: it waits for the unload to finish), it starts with
        # the default (5 minutes): the request's keep-alive went with the unload.
        await manager.engine_for("coder")
        await asyncio.sleep(0.3)
        assert manager.current_id == "coder"
        await manager.close()

    asyncio.run(main())


@pytest.mark.usefixtures("short_grace")
def test_keep_alive_never_unloads_a_busy_model(registry_file: Path) -> None:
    async def main() -> None:
        gate = threading.Event()
        factory = FakeFactory(gate=gate)
        manager = _manager(registry_file, factory)
        engine = await manager.load("coder")
        [handle] = engine.submit([GenerationInput((1, 2, 3), SamplingParams(), 4)])
        manager.keep_alive("coder", 0)
        await asyncio.sleep(0.3)
        assert manager.current_id == "coder" and not factory.last.closed
        expires = manager.expires_at()
        assert expires is not None  # busy: the timer has not started
        gate.set()
        await _until(lambda: manager.current_id is None)
        # The engine is closed in a worker thread just after it stops being current.
        await _until(lambda: factory.last.closed_with is not None)
        assert "keep_alive" in factory.last.closed_with.detail
        await manager.close()
        del handle

    asyncio.run(main())


@pytest.mark.usefixtures("short_grace")
def test_keep_alive_none_cancels_and_unload_model(registry_file: Path) -> None:
    async def main() -> None:
        manager = _manager(registry_file, FakeFactory())
        await manager.load("coder")
        manager.keep_alive("coder", 0.05)
        manager.keep_alive("coder", None)
        await asyncio.sleep(0.3)
        assert manager.current_id == "coder"
        assert await manager.unload_model("plain") is False
        assert await manager.unload_model("coder") is True
        assert manager.current_id is None
        assert await manager.unload_model("coder") is False
        await manager.close()

    asyncio.run(main())


def test_keep_alive_zero_waits_for_the_request_grace(registry_file: Path) -> None:
    async def main() -> None:
        manager = _manager(registry_file, FakeFactory())
        await manager.load("coder")
        manager.keep_alive("coder", 0)
        # The request that set it has not reached the engine yet: not unloaded under it.
        await asyncio.sleep(idle.REQUEST_GRACE_S / 2)
        assert manager.current_id == "coder"
        await _until(lambda: manager.current_id is None)
        await manager.close()

    asyncio.run(main())
