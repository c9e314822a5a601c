"""Idle unloads by default (--keep-alive), pinned models (--pin), the reload after an idle
unload, and a generation request that does not download (--pull-on-demand), with the fake
engine. Timings are generous: a loaded 2-core machine runs these; waits poll up to 15 s
and nothing is asserted to *not* happen within less than a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeFactory
from helpers import MODELS_TOML, assert_error, make_client, make_settings, write_registry
from litestar.testing import TestClient

from locallab_cpp.api.ollama.keepalive import parse_keep_alive
from locallab_cpp.cli import build_parser
from locallab_cpp.config import FIELD_NAMES, Settings, load_settings
from locallab_cpp.errors import ConfigError, InvalidRequest, ModelNotDownloaded, ModelNotFound
from locallab_cpp.models import idle
from locallab_cpp.models.idle import parse_duration
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.registry import ModelSpec, Registry

HUB_ENTRY = """
[[models]]
id = "hubby"
repo = "test-org/hubby-GGUF"
file = "hubby.gguf"
"""

WAIT_S = 15.0
HINTS = ("models pull hubby", "/api/pull", "/models/load")


@pytest.fixture
def registry_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """alpha and beta on disk, gone missing, hubby a hub model that is not downloaded."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_registry(tmp_path)
    path.write_text(MODELS_TOML + HUB_ENTRY, encoding="utf-8")
    return path


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idle, "REQUEST_GRACE_S", 0.05)


def _manager(registry_file: Path, factory: FakeFactory, **settings: Any) -> ModelManager:
    manager = ModelManager(
        Registry.from_file(registry_file), make_settings(registry_file, **settings), factory
    )
    manager.keep_alive_poll_s = 0.01
    return manager


async def _until(predicate: Any, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _poll(check: Any, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _no_model(client: TestClient[Any]) -> bool:
    return client.get("/models/current").status_code == 404


# ----- the default keep-alive, pins ----------------------------------------------------


@pytest.mark.usefixtures("short_grace")
def test_default_keep_alive_unloads_an_idle_model(registry_file: Path) -> None:
    async def main() -> None:
        factory = FakeFactory()
        manager = _manager(registry_file, factory, keep_alive="1s")
        await manager.load("alpha")  # an explicit load, as at start: no request's keep_alive
        expires = manager.expires_at()
        assert expires is not None and expires - time.time() <= 1.0
        await _until(lambda: manager.current_id is None)
        await _until(lambda: factory.last.closed_with is not None)
        assert "idle" in factory.last.closed_with.detail
        assert manager.idle_unloaded == "alpha"
        await manager.close()

    asyncio.run(main())


@pytest.mark.usefixtures("short_grace")
def test_a_request_keep_alive_overrides_the_default(registry_file: Path) -> None:
    async def main() -> None:
        manager = _manager(registry_file, FakeFactory(), keep_alive="-1")
        await manager.load("alpha")
        assert manager.expires_at() is None  # --keep-alive -1: never
        manager.keep_alive("alpha", 0.5)
        await _until(lambda: manager.current_id is None)
        await manager.close()

    asyncio.run(main())


@pytest.mark.usefixtures("short_grace")
def test_a_pinned_model_never_unloads_for_idleness(registry_file: Path) -> None:
    async def main() -> None:
        manager = _manager(registry_file, FakeFactory(), keep_alive="0", pin=("alpha:latest",))
        await manager.load("alpha")
        manager.keep_alive("alpha", 0)  # a request's keep_alive does not unpin
        assert manager.expires_at() is None
        await asyncio.sleep(1.5)
        assert manager.current_id == "alpha"
        # The same settings unload a model that is not pinned: the reaper is running.
        await manager.load("beta")
        await _until(lambda: manager.current_id is None)
        await manager.close()

    asyncio.run(main())


# ----- the next request after an idle unload ------------------------------------------


@pytest.mark.usefixtures("short_grace")
def test_requests_during_the_reload_wait_for_it(registry_file: Path) -> None:
    async def main() -> None:
        factory = FakeFactory(delay=0.5)  # a load that takes a while
        manager = _manager(registry_file, factory, keep_alive="0.5")
        await manager.load("alpha")
        await _until(lambda: manager.current_id is None)
        engines = await asyncio.gather(*(manager.engine_for(None) for _ in range(4)))
        assert {engine.info.model_id for engine in engines} == {"alpha"}
        assert len({id(engine) for engine in engines}) == 1
        assert [model for model, _ in factory.opened] == ["alpha", "alpha"]
        await manager.close()

    asyncio.run(main())


def test_the_start_up_model_unloads_when_idle_and_the_next_request_reloads_it(
    registry_file: Path,
) -> None:
    factory = FakeFactory()
    with make_client(registry_file, factory, keep_alive="1") as client:
        assert client.get("/models/current").json()["model_id"] == "alpha"
        _poll(lambda: _no_model(client))
        detail = assert_error(client.get("/models/current"), 404, "alpha", "idle")
        assert "next request" in detail
        r = client.post("/generate", json={"prompt": "hello", "max_length": 2})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "alpha"
        # Again through the OpenAI API, with a name the registry does not know (the
        # loaded model): after the next idle unload it is alpha again.
        _poll(lambda: _no_model(client))
        r = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200, r.text
        assert client.get("/models/current").json()["model_id"] == "alpha"
        assert [model for model, _ in factory.opened] == ["alpha"] * 3


def test_an_explicit_unload_means_no_model(registry_file: Path) -> None:
    with make_client(registry_file, keep_alive="1") as client:
        _poll(lambda: _no_model(client))
        # Nothing is loaded, but the unload is still what the user asked for.
        assert client.post("/models/unload").status_code == 200
        assert_error(client.get("/models/current"), 404)
        r = client.post("/generate", json={"prompt": "hello", "max_length": 2})
        assert_error(r, 503, "No model is loaded")
        # After an unload of a loaded model too.
        assert client.post("/models/load", json={"model_id": "beta"}).status_code == 200
        assert client.post("/models/unload").json()["model_id"] == "beta"
        r = client.post("/generate", json={"prompt": "hello", "max_length": 2})
        assert_error(r, 503, "No model is loaded")


# ----- a model not on disk ---------------------------------------------------------------


def test_a_generation_request_does_not_download(registry_file: Path) -> None:
    factory = FakeFactory()
    with make_client(registry_file, factory) as client:
        r = client.post("/generate", json={"prompt": "x", "max_length": 2, "model_id": "hubby"})
        assert_error(r, 404, *HINTS)
        r = client.post(
            "/v1/chat/completions",
            json={"model": "hubby", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert all(hint in error["message"] for hint in HINTS), error
        r = client.post(
            "/api/chat",
            json={"model": "hubby", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 404, r.text
        assert list(r.json()) == ["error"]
        assert "try pulling it first" in r.json()["error"]
        assert all(hint in r.json()["error"] for hint in HINTS), r.json()
        # The model being served was not touched.
        assert client.get("/models/current").json()["model_id"] == "alpha"
        assert [model for model, _ in factory.opened] == ["alpha"]


def _fake_download(monkeypatch: pytest.MonkeyPatch, registry_file: Path) -> list[str]:
    """Registry.ensure_local "downloads" hubby (hands back alpha's file); returns the ids
    it was asked for."""
    asked: list[str] = []
    real = Registry.ensure_local

    def ensure_local(self: Registry, spec: ModelSpec, *args: Any, **kwargs: Any) -> Path:
        asked.append(spec.id)
        if spec.id == "hubby":
            return registry_file.parent / "alpha.gguf"
        return real(self, spec, *args, **kwargs)

    monkeypatch.setattr(Registry, "ensure_local", ensure_local)
    return asked


def test_pull_on_demand_downloads_in_the_request(
    registry_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _fake_download(monkeypatch, registry_file)
    with make_client(registry_file, pull_on_demand=True) as client:
        r = client.post("/generate", json={"prompt": "x", "max_length": 2, "model_id": "hubby"})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "hubby"
        assert client.post("/models/load", json={"model_id": "alpha"}).status_code == 200
        r = client.post(
            "/api/chat",
            json={"model": "hubby", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200, r.text
    # Loading alpha left hubby resident beside it: the second request downloads nothing.
    assert asked.count("hubby") == 1


def test_explicit_loads_still_download(
    registry_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _fake_download(monkeypatch, registry_file)

    async def main() -> None:
        manager = _manager(registry_file, FakeFactory())
        with pytest.raises(ModelNotDownloaded) as caught:
            await manager.engine_for("hubby")
        assert isinstance(caught.value, ModelNotFound)
        assert "hubby" not in asked
        await manager.load("hubby")
        assert manager.current_id == "hubby" and asked == ["hubby"]
        await manager.close()

    asyncio.run(main())


# ----- settings ------------------------------------------------------------------------


def test_settings_defaults_env_and_toml(tmp_path: Path) -> None:
    s = Settings()
    assert (s.keep_alive, s.keep_alive_s, s.pin, s.pull_on_demand) == ("5m", 300.0, (), False)
    assert {"keep_alive", "pin", "pull_on_demand"} <= set(FIELD_NAMES)
    missing = str(tmp_path / "absent.toml")
    env = {
        "LOCALLAB_KEEP_ALIVE": "-1",
        "LOCALLAB_PIN": "alpha, beta",
        "LOCALLAB_PULL_ON_DEMAND": "true",
    }
    s = load_settings({"models_file": missing}, env=env)
    assert (s.keep_alive_s, s.pin, s.pull_on_demand) == (None, ("alpha", "beta"), True)
    for raw, seconds in (("0", 0.0), ("300", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5)):
        s = load_settings({"models_file": missing}, env={"LOCALLAB_KEEP_ALIVE": raw})
        assert s.keep_alive_s == seconds
    toml = tmp_path / "models.toml"
    toml.write_text('[[models]]\nid = "m"\npath = "m.gguf"\n\n[server]\nkeep_alive = 60\n')
    assert load_settings({"models_file": str(toml)}, env={}).keep_alive_s == 60.0
    with pytest.raises(ConfigError, match="not a duration"):
        load_settings({"models_file": missing}, env={"LOCALLAB_KEEP_ALIVE": "5 minutes"})


def test_cli_flags(tmp_path: Path) -> None:
    argv = ["serve", "--keep-alive", "-1", "--pin", "alpha", "--pin", "beta", "--pull-on-demand"]
    args = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k in FIELD_NAMES}
    s = load_settings({**given, "models_file": str(tmp_path / "absent.toml")}, env={})
    assert (s.keep_alive_s, s.pin, s.pull_on_demand) == (None, ("alpha", "beta"), True)
    args = build_parser().parse_args(["serve", "--keep-alive=10m"])
    assert args.keep_alive == "10m" and args.pull_on_demand is None


def test_one_parser_for_the_setting_and_ollama_keep_alive() -> None:
    for value in ("5m", "1h30m", "300ms", "300", 300, -1, "-1", 0, "0", " 2s "):
        assert parse_keep_alive(value) == parse_duration(value)
    for bad in ("5x", "", "-", True, "nan", float("inf"), "1" * 70 + "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
        with pytest.raises(InvalidRequest, match="keep_alive"):
            parse_keep_alive(bad)
