"""GET /health and GET /system/info."""

from __future__ import annotations

from typing import Any

LOCALLAB_KEYS = {"cpu_usage", "memory_usage", "gpu_info", "active_model", "uptime", "request_count"}


def test_health_with_a_model(client: Any) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "model_loaded": True,
        "model_id": "alpha",
        "slots_idle": 4,  # the fake engine's parallel
        "slots_processing": 0,
    }


def test_health_without_a_model(empty_client: Any) -> None:
    response = empty_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "model_loaded": False,
        "model_id": None,
        "slots_idle": 0,
        "slots_processing": 0,
    }


def test_health_follows_unload(client: Any) -> None:
    client.post("/models/unload")
    assert client.get("/health").json()["model_loaded"] is False


def test_system_info_has_the_locallab_keys(client: Any) -> None:
    response = client.get("/system/info")
    assert response.status_code == 200
    info = response.json()
    assert set(info) >= LOCALLAB_KEYS
    assert isinstance(info["cpu_usage"], int | float) and 0 <= info["cpu_usage"] <= 100
    assert isinstance(info["memory_usage"], int | float) and 0 <= info["memory_usage"] <= 100
    assert isinstance(info["gpu_info"], dict) and isinstance(info["gpu_info"]["available"], bool)
    assert info["uptime"] >= 0
    assert isinstance(info["request_count"], int) and info["request_count"] >= 1
    active = info["active_model"]
    assert active["model_id"] == "alpha"
    assert active["n_ctx"] == 64
    assert active["n_ctx_reason"] == "the model's trained context"
    # the engine's own details are passed on, with defaults for what it does not know
    assert active["architecture"] == "fake"
    assert active["kv_cache_bytes"] == 4096
    assert active["n_vocab"] == 0
    for key in ("active_sequences", "queued_sequences", "generated_tokens", "prompt_tokens"):
        assert isinstance(active[key], int)


def test_system_info_machine_details(client: Any) -> None:
    info = client.get("/system/info").json()
    memory = info["memory"]
    assert memory["total_bytes"] >= memory["available_bytes"] > 0
    assert memory["process_rss_bytes"] > 0
    cpu = info["cpu"]
    assert cpu["logical_cores"] >= cpu["physical_cores"] >= 1
    assert isinstance(cpu["flags"], list)
    llama = info["llama_cpp"]
    assert llama["llama_cpp_python_version"]
    assert isinstance(llama["gpu_offload_supported"], bool)


def test_system_info_without_a_model(empty_client: Any) -> None:
    info = empty_client.get("/system/info").json()
    assert set(info) >= LOCALLAB_KEYS
    assert info["active_model"] is None


def test_request_count_and_uptime_grow(client: Any) -> None:
    first = client.get("/system/info").json()
    client.get("/health")
    client.get("/models/current")
    second = client.get("/system/info").json()
    assert second["request_count"] == first["request_count"] + 3
    assert second["uptime"] >= first["uptime"]


def test_generated_tokens_are_counted(client: Any) -> None:
    client.post("/generate", json={"prompt": "a b"})
    active = client.get("/system/info").json()["active_model"]
    assert active["generated_tokens"] == 4
    assert active["prompt_tokens"] == 3
