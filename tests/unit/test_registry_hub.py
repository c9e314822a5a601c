"""The registry file format and user overlay, hub-cache safety, sha256 checks, load progress
and the memory estimate, in process. Real downloads are in tests/integration/test_hub.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fakes import FakeFactory
from helpers import assert_error, make_settings, parse_sse
from litestar.testing import TestClient

from locallab_cpp.api.locallab.errors import status_of
from locallab_cpp.app import create_app
from locallab_cpp.config import DEFAULT_MODELS_FILE, Settings
from locallab_cpp.errors import ConfigError, ModelUnavailable
from locallab_cpp.models import checksum, hub, sizing
from locallab_cpp.models.progress import LoadCancelled, LoadProgress, progress_tqdm
from locallab_cpp.models.registry import ModelSpec, Registry

COMMIT = "a" * 40


@pytest.fixture(autouse=True)
def _private_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sha256 records in a temporary folder; no hub download can happen by accident."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a unit test tried to download from the hub")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)


# --------------------------------------------------------------------------- the package file


def test_package_registry_has_the_promised_models() -> None:
    registry = Registry.load()
    ids = [s.id for s in registry]
    assert ids[0] == "gemma-3-270m" == registry.default_id
    assert registry.get("gemma-3-270m").source == "package"
    for wanted in (
        "qwen2.5-0.5b-instruct",
        "llama-3.2-1b-instruct",
        "phi-3.5-mini-instruct",
        "mistral-7b-instruct-v0.3",
        "qwen2.5-coder-1.5b-instruct",
        "qwen2.5-coder-0.5b-instruct",
        "microsoft/phi-2",
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    ):
        assert wanted in registry, wanted
    assert registry.get("microsoft/phi-2").repo == "TheBloke/phi-2-GGUF"
    assert registry.get("TinyLlama/TinyLlama-1.1B-Chat-v1.0").repo == (
        "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF"
    )
    sizes = sorted(s.size_bytes for s in registry if s.source == "hub")
    assert sizes[0] < 600e6 and sizes[-1] > 4e9  # a 0.5B up to a 7B
    for spec in registry:
        assert spec.sha256 and spec.size_bytes and spec.context_length, spec.id
        assert spec.layers and spec.kv_heads and spec.head_dim, spec.id
        assert spec.name and spec.description and spec.parameters and spec.quantization
        if spec.source == "hub":
            # Pinned to the commit the sha256 was read from.
            assert spec.revision and re.fullmatch(r"[0-9a-f]{40}", spec.revision), spec.id
            assert spec.file and spec.file.endswith(".gguf")


def test_gemma_kv_bytes_match_the_readme() -> None:
    gemma = Registry.load().get("gemma-3-270m")
    assert sizing.kv_bytes_per_token(gemma) == 18 * 1024


# --------------------------------------------------------------------------- overlay


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_user_file_is_laid_over_the_package_file(tmp_path: Path) -> None:
    user = _write(
        tmp_path / "cfg" / "models.toml",
        '[[models]]\nid = "microsoft/phi-2"\ndescription = "my phi"\n\n'
        '[[models]]\nid = "gemma-3-270m"\npath = "my-gemma.gguf"\n\n'
        '[[models]]\nid = "mine"\nrepo = "me/mine-GGUF"\nfile = "mine.gguf"\n',
    )
    (tmp_path / "cfg" / "my-gemma.gguf").write_bytes(b"GGUF")
    package = Registry.load()
    registry = Registry.load(user)
    assert [s.id for s in registry][: len(package)] == [s.id for s in package]
    assert [s.id for s in registry][-1] == "mine"
    phi = registry.get("microsoft/phi-2")
    assert phi.description == "my phi"
    assert phi.sha256 == package.get("microsoft/phi-2").sha256  # untouched fields stay
    gemma = registry.get("gemma-3-270m")
    # A new source drops the old one and the facts about its file.
    assert gemma.source == "file" and gemma.package is None
    assert gemma.sha256 is None and gemma.size_bytes == 0
    assert gemma.chat_format == "gemma"
    # Relative paths of the user's file are relative to the user's file.
    assert registry.local_path(gemma) == (tmp_path / "cfg" / "my-gemma.gguf").resolve()
    assert registry.default_id == "microsoft/phi-2"


def test_naming_the_package_file_adds_nothing() -> None:
    assert [s.id for s in Registry.load(DEFAULT_MODELS_FILE)] == [s.id for s in Registry.load()]


def test_missing_user_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        Registry.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "entry",
    [
        'repo = "../evil"\nfile = "m.gguf"',
        'repo = "a/b/c"\nfile = "m.gguf"',
        'repo = "o/r"\nfile = "../m.gguf"',
        'repo = "o/r"\nfile = "/abs/m.gguf"',
        'repo = "o/r"\nfile = "dir\\\\m.gguf"',
        'repo = "o/r"\nfile = "m.bin"',
        'repo = "o/r"\nfile = "m.gguf"\nrevision = "../main"',
        'repo = "o/r"\nfile = "m.gguf"\nsha256 = "xyz"',
        'repo = "o/r"\nfile = "m.gguf"\npackage = "p"',
        'path = "m.gguf"\nrevision = "main"',
        'path = "m.bin"',
    ],
)
def test_invalid_entries_are_config_errors(tmp_path: Path, entry: str) -> None:
    path = _write(tmp_path / "models.toml", f'[[models]]\nid = "x"\n{entry}\n')
    with pytest.raises(ConfigError, match="'x'"):
        Registry.from_file(path)


def test_subfolder_files_and_revisions_are_allowed(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "models.toml",
        '[[models]]\nid = "x"\nrepo = "o/r"\nfile = "q4/m.GGUF"\nrevision = "v1.0"\n'
        f'sha256 = "{"A" * 64}"\n',
    )
    assert Registry.from_file(path).get("x").revision == "v1.0"


# --------------------------------------------------------------------------- the hub cache


def _cache_with(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Lay out huggingface_hub's cache for ``repo`` at COMMIT, as hf_hub_download does."""
    storage = root / ("models--" + repo.replace("/", "--"))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(COMMIT)
    (storage / "blobs").mkdir(exist_ok=True)
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (storage / "blobs" / digest).write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / digest)
    return storage


def _hub_registry(cache: Path, **fields: Any) -> tuple[Registry, ModelSpec]:
    spec = ModelSpec(id="m", repo="o/r", file="m.gguf", **fields)
    return Registry([spec], cache, hub_cache=cache), spec


def test_cached_file_is_used_without_network_and_checked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"GGUF" + b"\1" * 100
    cache = tmp_path / "hub"
    storage = _cache_with(cache, "o/r", {"m.gguf": data})
    registry, spec = _hub_registry(cache, sha256=hashlib.sha256(data).hexdigest())
    blob = (storage / "blobs" / hashlib.sha256(data).hexdigest()).resolve()
    assert registry.local_path(spec) == blob
    progress = LoadProgress("m")
    assert registry.ensure_local(spec, progress) == blob
    assert progress.snapshot().state == "verifying"
    assert progress.snapshot().bytes_done == len(data)

    def no_hashing(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(checksum, "sha256_file", no_hashing)
    assert registry.ensure_local(spec) == blob  # the record of the first check holds
    os.utime(blob, ns=(1, 1))  # the file changed: its record no longer counts
    with pytest.raises(AssertionError, match="hashed again"):
        registry.ensure_local(spec)


def test_wrong_sha256_deletes_the_cached_file(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    storage = _cache_with(cache, "o/r", {"m.gguf": b"GGUF broken"})
    registry, spec = _hub_registry(cache, sha256="0" * 64)
    with pytest.raises(ModelUnavailable) as info:
        registry.ensure_local(spec)
    detail = info.value.detail
    assert "'m'" in detail and "sha256" in detail and "deleted" in detail
    assert str(tmp_path) not in detail
    assert not storage.exists()
    assert registry.local_path(spec) is None


def test_wrong_sha256_of_a_local_file_keeps_the_file(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    registry = Registry([ModelSpec(id="m", path="m.gguf", sha256="0" * 64)], tmp_path)
    with pytest.raises(ModelUnavailable, match="sha256"):
        registry.ensure_local(registry.get("m"))
    assert gguf.exists()


def test_cache_link_leading_outside_the_cache_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(b"not yours")
    cache = tmp_path / "hub"
    storage = _cache_with(cache, "o/r", {})
    (storage / "snapshots" / COMMIT / "m.gguf").symlink_to(secret)
    registry, spec = _hub_registry(cache)
    assert registry.local_path(spec) is None
    with pytest.raises(hub.UnsafeCachePath) as info:
        registry.ensure_local(spec)
    assert status_of(info.value) == 503
    assert "outside" in info.value.detail and str(tmp_path) not in info.value.detail
    # Removing the entry drops the link and never touches what it points to.
    registry.remove(spec)
    assert secret.read_bytes() == b"not yours"


def test_remove_keeps_blobs_other_files_use(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    storage = _cache_with(cache, "o/r", {"m.gguf": b"GGUF one", "other.gguf": b"GGUF two"})
    registry, spec = _hub_registry(cache)
    assert registry.remove(spec) == len(b"GGUF one")
    assert not (storage / "snapshots" / COMMIT / "m.gguf").exists()
    assert (storage / "snapshots" / COMMIT / "other.gguf").read_bytes() == b"GGUF two"
    assert registry.remove(spec) == 0
    other = ModelSpec(id="o", repo="o/r", file="other.gguf")
    assert registry.remove(other) == len(b"GGUF two")
    assert not storage.exists()


def test_offline_names_the_model_and_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry, spec = _hub_registry(tmp_path / "hub")
    with pytest.raises(ModelUnavailable) as info:
        registry.ensure_local(spec)
    assert "'m'" in info.value.detail and "HF_HUB_OFFLINE" in info.value.detail
    assert "models pull m" in info.value.detail


def test_hub_errors_say_what_to_do() -> None:
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    spec = ModelSpec(id="m", repo="o/r", file="m.gguf")
    unreachable = hub._download_error(spec, LocalEntryNotFoundError("no connection"))
    assert "cannot be reached" in unreachable.detail and "models pull m" in unreachable.detail
    response = httpx2.Response(403, request=httpx2.Request("HEAD", "https://hub/o/r"))
    gated = hub._download_error(spec, GatedRepoError("gated", response=response))
    assert "HF_TOKEN" in gated.detail
    disk = hub._download_error(spec, OSError(28, "No space left on device", "/tmp/x"))
    assert "disk" in disk.detail and "/tmp" not in disk.detail


# --------------------------------------------------------------------------- progress


def test_progress_counts_only_the_first_bar_and_never_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = LoadProgress("m")
    bar_class = progress_tqdm(progress)
    first = bar_class(total=100, initial=10, desc="m.gguf", unit="B")
    second = bar_class(total=100, desc="transfer", unit="B")  # Xet's second bar
    first.update(30)
    second.update(50)
    now = progress.snapshot()
    assert (now.state, now.bytes_done, now.bytes_total) == ("downloading", 40, 100)
    assert now.percent == 40.0
    first.update(-40)  # huggingface_hub rolls back when a server ignores a Range request
    assert progress.snapshot().bytes_done == 0
    first.close()
    second.close()
    assert capsys.readouterr().err == ""
    progress.cancel()
    with pytest.raises(LoadCancelled):
        first.update(1)


def test_finished_progress_is_not_active() -> None:
    progress = LoadProgress("m")
    progress.begin("verifying", total=0)
    assert progress.snapshot().percent is None
    done = progress.finish("failed", "why")
    assert not done.active and done.detail == "why"


# --------------------------------------------------------------------------- sizing


def test_memory_estimate_follows_context_and_slots() -> None:
    spec = ModelSpec(id="m", path="m.gguf", size_bytes=10**9, context_length=2048, layers=16,
                     kv_heads=8, head_dim=64)  # fmt: skip
    assert sizing.kv_bytes_per_token(spec) == 2 * 16 * 8 * 64 * 2
    assert sizing.slot_context(spec, Settings()) == 2048  # the trained context
    assert sizing.slot_context(spec, Settings(n_ctx=4096)) == 4096
    one = sizing.estimated_need(spec, Settings(parallel=1))
    four = sizing.estimated_need(spec, Settings(parallel=4))
    assert four - one == 3 * 2048 * sizing.kv_bytes_per_token(spec)
    unknown = ModelSpec(id="u", path="u.gguf", size_bytes=16_384 * 1000)
    assert sizing.kv_bytes_per_token(unknown) == 1000


# --------------------------------------------------------------------------- the HTTP layer


class SlowRegistry(Registry):
    """Simulates a download of beta that waits for ``release`` half-way."""

    release: threading.Event

    def ensure_local(self, spec: ModelSpec, progress: LoadProgress | None = None,
                     **kwargs: Any) -> Path:  # fmt: skip
        if spec.id == "beta" and progress is not None:
            progress.begin("downloading", total=1000)
            progress.advance(400)
            assert self.release.wait(10)
            progress.advance(600)
            progress.begin("verifying", total=1000)
            progress.advance(1000)
        return super().ensure_local(spec, progress, **kwargs)


@contextmanager
def _slow_app(models_file: Path, **overrides: Any) -> Iterator[tuple[Any, threading.Event]]:
    """A TestClient over an app whose registry downloads beta slowly. Requests from several
    threads really overlap (the app runs on the client's portal loop)."""
    registry = SlowRegistry.from_file(models_file)
    assert isinstance(registry, SlowRegistry)
    registry.release = threading.Event()
    app = create_app(
        make_settings(models_file, **overrides), registry=registry, engine_factory=FakeFactory()
    )
    try:
        with TestClient(app) as client:
            yield client, registry.release
    finally:
        registry.release.set()


def _start_load(client: Any, model_id: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault(
            "response", client.post("/models/load", json={"model_id": model_id})
        )
    )
    thread.start()
    deadline = time.monotonic() + 10
    while client.get("/models/load/progress").json()["state"] != "downloading":
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.01)
    return thread, result


def test_download_progress_is_visible_and_the_old_model_keeps_serving(models_file: Path) -> None:
    with _slow_app(models_file) as (client, release):
        thread, result = _start_load(client, "beta")
        body = client.get("/models/load/progress").json()
        assert body["loading"] is True and body["model_id"] == "beta"
        assert (body["bytes_done"], body["bytes_total"], body["percent"]) == (400, 1000, 40.0)

        current = client.get("/models/current").json()
        assert current["model_id"] == "alpha" and current["is_loaded"] is True
        assert current["loading"]["model_id"] == "beta"
        available = client.get("/models/available").json()
        assert available["loading"]["state"] == "downloading"
        entries = {m["id"]: m for m in available["models"]}
        assert entries["beta"]["progress"]["bytes_done"] == 400
        assert entries["alpha"]["progress"] is None
        # The loaded model keeps generating while the next one downloads.
        generated = client.post("/generate", json={"prompt": "hi"})
        assert generated.status_code == 200 and generated.json()["model"] == "alpha"
        assert_error(client.post("/models/load", json={"model_id": "alpha"}), 409, "beta")

        release.set()
        thread.join(10)
        assert result["response"].status_code == 200
        done = client.get("/models/load/progress").json()
        assert done["state"] == "ready" and done["loading"] is False
        assert client.get("/models/current").json()["loading"] is None


def test_while_the_first_model_downloads(models_file: Path) -> None:
    with _slow_app(models_file, no_model=True) as (client, release):
        thread, result = _start_load(client, "beta")
        current = client.get("/models/current")
        assert current.status_code == 200
        body = current.json()
        assert body["is_loaded"] is False and body["model_id"] == "beta"
        assert body["name"] == "Beta Test Model" and body["n_ctx"] is None
        assert body["loading"]["state"] == "downloading"
        busy = client.post("/generate", json={"prompt": "hi"})
        detail = assert_error(busy, 503, "'beta'", "downloading", "/models/load/progress")
        assert "40%" in detail and busy.headers["retry-after"]

        threading.Timer(0.3, release.set).start()
        stream = client.get("/models/load/progress", params={"stream": "true"})
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(stream.text)
        assert events[-1] == ("message", "[DONE]")
        states = [json.loads(data)["state"] for _, data in events[:-1]]
        assert states[0] == "downloading" and states[-1] == "ready", states
        thread.join(10)
        assert result["response"].status_code == 200
        assert client.get("/models/current").json()["is_loaded"] is True


def test_idle_progress(empty_client: Any) -> None:
    body = empty_client.get("/models/load/progress").json()
    assert body == {
        "loading": False,
        "model_id": None,
        "state": "idle",
        "bytes_done": 0,
        "bytes_total": 0,
        "percent": None,
        "started_at": None,
        "elapsed_s": None,
        "detail": None,
    }
    stream = empty_client.get("/models/load/progress", params={"stream": "true"})
    assert [kind for kind, _ in parse_sse(stream.text)] == ["message", "message"]
    assert stream.text.endswith("data: [DONE]\n\n")


def test_path_like_ids_are_404_on_every_model_route(client: Any, models_file: Path) -> None:
    tricks = ["../alpha.gguf", "models/beta.gguf", str(models_file.parent / "alpha.gguf"),
              "%2e%2e%2falpha.gguf", "alpha/../alpha", "~/alpha.gguf"]  # fmt: skip
    message = [{"role": "user", "content": "x"}]
    for model_id in tricks:
        for method, url, body in (
            ("POST", "/models/load", {"model_id": model_id}),
            ("POST", "/generate", {"prompt": "x", "model_id": model_id}),
            ("POST", "/chat", {"messages": message, "model_id": model_id}),
        ):
            detail = assert_error(client.request(method, url, json=body), 404)
            assert str(models_file.parent) not in detail
    assert client.get("/models/current").json()["model_id"] == "alpha"
