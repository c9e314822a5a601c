"""Ollama's model endpoints end to end: the official ``ollama`` Python client against a real
``python -m locallab_cpp serve`` with the embedded Gemma 3 270M loaded, plus a hub model
served by a local fake hub (fake_hub.py; ``HF_ENDPOINT`` points huggingface_hub at it) to
pull and delete.

Keep-alive expiry is covered in-process (tests/unit/test_ollama_models.py); /api/generate,
which sets it from a client, belongs to the chat routes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import numpy as np
import ollama
import pytest
from fake_hub import FakeHub, file_sha256
from it_support import ServerProcess, start_server

pytestmark = pytest.mark.integration

HUB_REPO = "test-org/tiny-GGUF"
HUB_FILE = "tiny.gguf"


def _tiny_gguf(path: Path) -> None:
    """A real GGUF of about 8 MB (one tensor of zeros), so a pull takes a few reports."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(2048)
    writer.add_block_count(1)
    writer.add_file_type(0)
    writer.add_tensor("token_embd.weight", np.zeros((2048, 1024), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeHub, Path, str]]:
    root = tmp_path_factory.mktemp("ollama-hub")
    tiny = root / HUB_FILE
    _tiny_gguf(tiny)
    sha = file_sha256(tiny)
    fake = FakeHub().start()
    fake.add(HUB_REPO, HUB_FILE, tiny, sha256=sha, rate=4e6)  # about two seconds
    registry = root / "models.toml"
    registry.write_text(
        f'[[models]]\nid = "gemma-3-270m"\n\n'
        f'[[models]]\nid = "hub-tiny"\nrepo = "{HUB_REPO}"\nfile = "{HUB_FILE}"\n'
        f'sha256 = "{sha}"\n',
        encoding="utf-8",
    )
    yield fake, registry, sha
    fake.stop()


@pytest.fixture(scope="module")
def srv(
    hub: tuple[FakeHub, Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    fake, registry, _ = hub
    home = tmp_path_factory.mktemp("ollama-home")
    server = start_server(
        "--models-file",
        str(registry),
        "--parallel",
        "1",
        "--n-ctx",
        "1024",
        env={
            "HF_ENDPOINT": fake.url,
            "HF_HOME": str(home / "hf"),
            "XDG_CACHE_HOME": str(home / "xdg"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        },
    )
    yield server
    server.assert_clean_shutdown()


@pytest.fixture
def client(srv: ServerProcess) -> ollama.Client:
    return ollama.Client(host=srv.base_url, timeout=60)


def _n_ctx(srv: ServerProcess) -> int:
    with srv.client() as http:
        return int(http.get("/models/current").json()["n_ctx"])


def test_version(srv: ServerProcess) -> None:
    version = httpx.get(f"{srv.base_url}/api/version").json()["version"]
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)


def test_list_shows_the_embedded_model(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert "hub-tiny:latest" not in models  # not pulled yet
    gemma = models["gemma-3-270m:latest"]
    assert gemma.digest == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert gemma.size == 253113024
    assert gemma.modified_at is not None
    assert gemma.details is not None
    assert gemma.details.family == "gemma3"
    assert gemma.details.format == "gguf"
    assert gemma.details.parameter_size == "268.10M"
    assert gemma.details.quantization_level == "Q4_K_M"


def test_show_reports_the_context_one_request_gets(
    client: ollama.Client, srv: ServerProcess
) -> None:
    shown = client.show("gemma-3-270m:latest")
    info = shown.modelinfo
    assert info is not None
    assert info["general.architecture"] == "gemma3"
    assert info["general.basename"] == "gemma-3"
    assert info["gemma3.context_length"] == _n_ctx(srv) == 1024
    # Roo Code drops a model without "tools"; this server gives tools to every model.
    assert shown.capabilities == ["completion", "tools"]
    assert shown.parameters is not None
    assert shown.parameters.splitlines()[0].split() == ["num_ctx", "1024"]
    assert '"<end_of_turn>"' in shown.parameters
    assert shown.template == "{{ .Prompt }}"
    assert shown.details is not None and shown.details.family == "gemma3"


def test_ps_lists_the_loaded_model(client: ollama.Client, srv: ServerProcess) -> None:
    [running] = client.ps().models
    assert running.model == "gemma-3-270m:latest"
    assert running.context_length == _n_ctx(srv)
    assert running.size is not None and running.size > 253113024  # the file and its KV cache
    # The default keep-alive (--keep-alive, Ollama's 5 minutes) from the last use.
    assert running.expires_at is not None
    assert 0 < running.expires_at.timestamp() - time.time() <= 300


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("llama3.2:latest")
    assert caught.value.status_code == 404
    assert "not found, try pulling it first" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("llama3.2:latest")
    assert caught.value.status_code == 404
    assert "gemma-3-270m" in caught.value.error  # it says which ids there are


def test_unsupported_endpoints_are_501(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.copy("gemma-3-270m", "mine")
    assert caught.value.status_code == 501
    assert "--model-alias" in caught.value.error


def test_pull_with_progress_then_delete(
    client: ollama.Client, hub: tuple[FakeHub, Path, str]
) -> None:
    _, _, sha = hub
    updates = list(client.pull("hub-tiny", stream=True))
    statuses = [u.status for u in updates]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    pulling = [u for u in updates if u.status == f"pulling {sha[:12]}"]
    assert len(pulling) >= 2, statuses
    assert all(u.digest == f"sha256:{sha}" for u in pulling)
    total = pulling[-1].total
    assert total is not None and total > 8_000_000 and pulling[-1].completed == total
    listed = {m.model: m for m in client.list().models}
    assert listed["hub-tiny:latest"].digest == sha
    assert listed["hub-tiny:latest"].details is not None
    assert listed["hub-tiny:latest"].details.family == "llama"
    # Pulled again: on disk already, a quick success.
    assert client.pull("hub-tiny:latest").status == "success"
    assert client.delete("hub-tiny:latest").status == "success"
    assert "hub-tiny:latest" not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("hub-tiny:latest")
    assert caught.value.status_code == 404


def test_the_loaded_model_is_not_deleted(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("gemma-3-270m:latest")
    assert caught.value.status_code in (400, 409)
