"""/models/load, /models/current, /models/available and /models/unload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeFactory
from helpers import ALPHA_BYTES, BETA_BYTES, assert_error, make_client, run_async

from locallab_cpp.api.locallab import models as models_controller

CURRENT_KEYS = {
    "model_id",
    "name",
    "is_loaded",
    "n_ctx",
    "n_gpu_layers",
    "size_bytes",
    "chat_format",
    "loaded_at",
}
AVAILABLE_KEYS = {
    "id",
    "name",
    "description",
    "size_bytes",
    "is_downloaded",
    "is_loaded",
    "can_load",
}


def test_start_up_loads_the_default_model(client: Any, factory: FakeFactory) -> None:
    assert [model_id for model_id, _ in factory.opened] == ["alpha"]
    assert client.get("/health").json()["model_id"] == "alpha"


def test_start_up_loads_the_configured_model(models_file: Path) -> None:
    factory = FakeFactory()
    with make_client(models_file, factory, model="beta") as client:
        assert client.get("/models/current").json()["model_id"] == "beta"
    assert [model_id for model_id, _ in factory.opened] == ["beta"]
    assert factory.last.closed  # shutdown frees the engine


def test_start_up_survives_a_model_that_cannot_load(models_file: Path) -> None:
    with make_client(models_file, FakeFactory(), model="gone") as client:
        assert client.get("/health").json() == {
            "status": "healthy",
            "model_loaded": False,
            "model_id": None,
            "slots_idle": 0,
            "slots_processing": 0,
        }


def test_load_and_current(client: Any, factory: FakeFactory) -> None:
    before = time.time()
    response = client.post("/models/load", json={"model_id": "beta"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    assert body["model_id"] == "beta"
    assert isinstance(body["message"], str) and "beta" in body["message"]
    current = client.get("/models/current")
    assert current.status_code == 200
    info = current.json()
    assert set(info) >= CURRENT_KEYS
    assert info["model_id"] == "beta"
    assert info["name"] == "Beta Test Model"
    assert info["is_loaded"] is True
    assert info["n_ctx"] == factory.last.n_ctx
    assert info["n_gpu_layers"] == 0
    assert info["size_bytes"] == 2000
    assert info["chat_format"] is None
    assert before <= info["loaded_at"] <= time.time()
    # alpha stays resident beside it; beta, loaded last, is the default model.
    assert not factory.engines[0].closed
    resident = {m["model_id"]: m for m in info["resident"]}
    assert set(resident) == {"alpha", "beta"}
    assert resident["beta"]["is_default"] and not resident["alpha"]["is_default"]
    assert resident["beta"]["kind"] == "chat" and resident["beta"]["memory_bytes"] >= 2000
    assert [m["model_id"] for m in info["resident"]] == ["beta", "alpha"]  # most recent first
    unload = client.post("/models/unload", params={"model_id": "alpha"})
    assert unload.status_code == 200 and unload.json()["model_id"] == "alpha"
    assert factory.engines[0].closed
    assert client.get("/models/current").json()["model_id"] == "beta"


def test_loading_the_loaded_model_keeps_it(client: Any, factory: FakeFactory) -> None:
    """A client that loads the model the server already has must not reload it under
    everyone else's generations."""
    response = client.post("/models/load", json={"model_id": "alpha"})
    assert response.status_code == 200, response.text
    assert response.json()["model_id"] == "alpha"
    assert len(factory.engines) == 1
    assert not factory.engines[0].closed


def test_current_of_the_start_up_model(client: Any) -> None:
    info = client.get("/models/current").json()
    assert info["model_id"] == "alpha"
    assert info["chat_format"] == "chatml"
    assert info["size_bytes"] == 1000


def test_load_unknown_model_is_404(client: Any, factory: FakeFactory, models_file: Path) -> None:
    for model_id in ["nope", "../alpha.gguf", "alpha.gguf", str(models_file.parent / "alpha.gguf")]:
        response = client.post("/models/load", json={"model_id": model_id})
        detail = assert_error(response, 404, "/models/available")
        assert str(models_file.parent) not in detail
    assert len(factory.engines) == 1
    assert client.get("/models/current").json()["model_id"] == "alpha"


def test_load_model_whose_file_is_missing_is_503(client: Any, models_file: Path) -> None:
    response = client.post("/models/load", json={"model_id": "gone"})
    detail = assert_error(response, 503, "'gone'")
    assert str(models_file.parent) not in detail
    assert client.get("/health").status_code == 200


def test_factory_crash_is_503_without_internals(models_file: Path) -> None:
    class Boom(FakeFactory):
        def __call__(self, spec: Any, path: Path, settings: Any) -> Any:
            if spec.id == "beta":
                raise RuntimeError(f"cannot mmap {path}")
            return super().__call__(spec, path, settings)

    with make_client(models_file, Boom()) as client:
        response = client.post("/models/load", json={"model_id": "beta"})
    detail = assert_error(response, 503, "'beta'", "RuntimeError")
    assert "mmap" not in detail and str(models_file.parent) not in detail


def test_current_after_unload_is_404(client: Any, factory: FakeFactory) -> None:
    response = client.post("/models/unload")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert "alpha" in body["message"]
    assert factory.last.closed
    current = client.get("/models/current")
    assert current.status_code == 404
    assert current.json() == {"detail": "No model is currently loaded"}


def test_unload_with_nothing_loaded_still_succeeds(empty_client: Any) -> None:
    for _ in range(2):
        response = empty_client.post("/models/unload")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "success"
        assert isinstance(body["message"], str) and body["message"]
    assert empty_client.get("/models/current").status_code == 404


def test_load_after_unload(empty_client: Any) -> None:
    assert empty_client.post("/models/load", json={"model_id": "alpha"}).status_code == 200
    assert empty_client.get("/health").json()["model_loaded"] is True


def test_available_lists_the_registry(client: Any) -> None:
    response = client.get("/models/available")
    assert response.status_code == 200
    body = response.json()
    assert body["current_model"] == "alpha"
    models = body["models"]
    assert [m["id"] for m in models] == ["alpha", "beta", "gone"]
    for entry in models:
        assert set(entry) >= AVAILABLE_KEYS, entry
        assert isinstance(entry["can_load"], bool)
    alpha, beta, gone = models
    assert alpha["name"] == "Alpha Test Model"
    assert alpha["description"] == "The first entry: the default model."
    assert alpha["is_loaded"] is True and alpha["can_load"] is True
    assert alpha["is_downloaded"] is True
    assert alpha["size_bytes"] == len(ALPHA_BYTES)  # the real file's size
    assert beta["is_loaded"] is False and beta["is_downloaded"] is True
    assert beta["size_bytes"] == len(BETA_BYTES)
    assert gone["is_downloaded"] is False and gone["is_loaded"] is False
    assert gone["size_bytes"] == 3000  # the registry's figure
    assert beta["can_load"] is True  # a few bytes fit in any machine's free memory


def test_available_with_nothing_loaded(empty_client: Any) -> None:
    body = empty_client.get("/models/available").json()
    assert body["current_model"] is None
    assert not any(m["is_loaded"] for m in body["models"])


def test_can_load_follows_free_memory(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import locallab_cpp.sysinfo

    monkeypatch.setattr(locallab_cpp.sysinfo, "available_memory", lambda: 0)
    models = {m["id"]: m for m in client.get("/models/available").json()["models"]}
    assert models["beta"]["can_load"] is False
    assert models["alpha"]["can_load"] is True  # already loaded


def test_estimated_need_grows_with_size() -> None:
    from locallab_cpp.models.registry import ModelSpec

    small = models_controller.estimated_need(ModelSpec(id="s", path="s", size_bytes=10**9))
    big = models_controller.estimated_need(ModelSpec(id="b", path="b", size_bytes=4 * 10**9))
    assert 10**9 < small < big


def test_concurrent_loads_conflict(models_file: Path) -> None:
    factory = FakeFactory(delay=0.3)

    async def scenario(client: Any) -> None:
        first = asyncio.create_task(client.post("/models/load", json={"model_id": "beta"}))
        await asyncio.sleep(0.05)
        second = await client.post("/models/load", json={"model_id": "alpha"})
        assert_error(second, 409, "beta")
        unload = await client.post("/models/unload")
        assert_error(unload, 409)
        health = await client.get("/system/info")
        assert health.json()["loading"] == "beta"
        assert (await first).status_code == 200
        assert (await client.get("/models/current")).json()["model_id"] == "beta"

    run_async(models_file, factory, scenario, no_model=True)
    assert [model_id for model_id, _ in factory.opened] == ["beta"]


def test_concurrent_loads_one_wins(models_file: Path) -> None:
    factory = FakeFactory(delay=0.2)

    async def scenario(client: Any) -> list[int]:
        responses = await asyncio.gather(
            client.post("/models/load", json={"model_id": "alpha"}),
            client.post("/models/load", json={"model_id": "beta"}),
        )
        return sorted(r.status_code for r in responses)

    assert run_async(models_file, factory, scenario, no_model=True) == [200, 409]
    assert len(factory.engines) == 1


def test_health_answers_during_a_load(models_file: Path) -> None:
    factory = FakeFactory(delay=0.5)

    async def scenario(client: Any) -> None:
        load = asyncio.create_task(client.post("/models/load", json={"model_id": "beta"}))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        health = await client.get("/health")
        assert time.monotonic() - started < 0.3
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        assert not load.done()
        assert (await load).status_code == 200

    run_async(models_file, factory, scenario)


def test_generation_waits_for_a_start_up_style_load(models_file: Path) -> None:
    """A request without model_id during a load waits for it rather than failing 503."""
    factory = FakeFactory(delay=0.3)

    async def scenario(client: Any) -> None:
        load = asyncio.create_task(client.post("/models/load", json={"model_id": "beta"}))
        await asyncio.sleep(0.05)
        response = await client.post("/generate", json={"prompt": "x"})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "beta"
        await load

    run_async(models_file, factory, scenario, no_model=True)


def test_load_progress_after_a_load(client: Any) -> None:
    assert client.post("/models/load", json={"model_id": "beta"}).status_code == 200
    body = client.get("/models/load/progress").json()
    assert body["loading"] is False
    assert body["model_id"] == "beta"
    assert body["state"] == "ready"


def test_load_progress_of_a_failed_load(client: Any) -> None:
    client.post("/models/load", json={"model_id": "gone"})
    body = client.get("/models/load/progress").json()
    assert body["state"] == "failed" and body["model_id"] == "gone"
    assert "'gone'" in body["detail"]
    # The failed load left the model that was loaded in place.
    assert client.get("/models/current").json()["model_id"] == "alpha"


def test_load_progress_stream(client: Any) -> None:
    response = client.get("/models/load/progress", params={"stream": "true"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
