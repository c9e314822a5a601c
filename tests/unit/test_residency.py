"""Several resident models under one memory budget (models/manager.py, placement.py).

Fake engines stand for the models; a fake memory check says a model fits when its
``size_bytes`` is within the room the budget leaves it, and each resident model is taken
to hold its ``size_bytes`` (placement.held_bytes patched), so the budget arithmetic can be
followed by hand.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, FakeFactory
from helpers import make_settings

from locallab_cpp import sysinfo
from locallab_cpp.config import Settings
from locallab_cpp.engine.base import EngineInfo, Resident
from locallab_cpp.engine.types import GenerationInput, SamplingParams
from locallab_cpp.errors import InsufficientMemory, InvalidRequest
from locallab_cpp.models import idle, placement
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.registry import ModelSpec, Registry

REGISTRY = """\
[[models]]
id = "alpha"
path = "alpha.gguf"
size_bytes = 4000

[[models]]
id = "beta"
path = "beta.gguf"
size_bytes = 4000

[[models]]
id = "gamma"
path = "gamma.gguf"
size_bytes = 4000

[[models]]
id = "huge"
path = "huge.gguf"
size_bytes = 20000

[[models]]
id = "embed"
path = "embed.gguf"
kind = "embedding"
size_bytes = 1000
"""

BUDGET = 10_000
"""--memory-limit of these tests: two 4000-byte models fit, a third does not."""


class BudgetFactory(FakeFactory):
    """Fake engines; a model fits when its size is within the room it is given.
    ``slow`` models take ``slow_s`` seconds to open."""

    def __init__(self, slow: str = "", slow_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slow, self.slow_s = slow, slow_s
        self.rooms: dict[str, int] = {}

    def check_memory(self, spec: ModelSpec, path: Path, settings: Settings, freed: int) -> None:
        if spec.size_bytes > settings.memory_limit:
            raise InsufficientMemory(
                f"Model '{spec.id}' does not fit: {spec.size_bytes} > {settings.memory_limit}"
            )

    def __call__(self, spec: ModelSpec, path: Path, settings: Settings) -> FakeEngine:
        if spec.id == self.slow:
            time.sleep(self.slow_s)
        self.rooms[spec.id] = settings.memory_limit
        return super().__call__(spec, path, settings)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("alpha", "beta", "gamma", "huge", "embed"):
        (tmp_path / f"{name}.gguf").write_bytes(b"GGUF" + b"\0" * 12)
    path = tmp_path / "models.toml"
    path.write_text(REGISTRY, encoding="utf-8")
    monkeypatch.setattr(placement, "held_bytes", lambda e: e.info.size_bytes)
    monkeypatch.setattr(sysinfo, "available_memory", lambda: 1 << 40)
    monkeypatch.setattr(idle, "REQUEST_GRACE_S", 0.05)  # a request's grace, shortened
    return path


def _manager(path: Path, factory: FakeFactory, **overrides: Any) -> ModelManager:
    overrides.setdefault("memory_limit", BUDGET)
    return ModelManager(Registry.from_file(path), make_settings(path, **overrides), factory)


def _ids(manager: ModelManager) -> list[str]:
    return [e.info.model_id for e in manager.residents()]


def _after_grace() -> Any:
    return asyncio.sleep(0.1)


def test_models_load_beside_each_other_within_the_budget(registry: Path) -> None:
    factory = BudgetFactory()

    async def scenario() -> None:
        manager = _manager(registry, factory)
        await manager.load("alpha")
        beta = await manager.engine_for("beta")
        assert _ids(manager) == ["alpha", "beta"] and not factory.engines[0].closed
        # Each load plans with what the budget leaves it: the room is its memory_limit.
        assert factory.rooms == {"alpha": BUDGET, "beta": BUDGET - 4000}
        assert manager.current_id == "alpha"  # the default: loaded last through load()
        assert await manager.engine_for(None) is factory.engines[0]
        assert await manager.engine_for("beta") is beta
        await manager.close()

    asyncio.run(scenario())


def test_the_least_recently_used_idle_model_makes_room(registry: Path) -> None:
    factory = BudgetFactory()

    async def scenario() -> None:
        manager = _manager(registry, factory)
        alpha = await manager.load("alpha")
        beta = await manager.engine_for("beta")
        await manager.engine_for("alpha")  # alpha used last: beta is the LRU
        await _after_grace()
        gamma = await manager.engine_for("gamma")
        assert cast_closed(beta) and not cast_closed(alpha) and not cast_closed(gamma)
        assert _ids(manager) == ["alpha", "gamma"]
        assert factory.rooms["gamma"] == BUDGET - 4000
        await manager.close()

    asyncio.run(scenario())


def cast_closed(engine: Resident) -> bool:
    assert isinstance(engine, FakeEngine)
    return engine.closed


def test_a_busy_model_is_not_unloaded_under_its_requests(registry: Path) -> None:
    gate = threading.Event()
    factory = BudgetFactory(gate=gate)

    async def scenario() -> None:
        manager = _manager(registry, factory)
        alpha = await manager.load("alpha")
        beta = await manager.engine_for("beta")
        [running] = alpha.submit([GenerationInput((1, 2), SamplingParams(), 4)])
        await _after_grace()
        # alpha is the least recently used, but it is generating: beta makes room.
        await manager.engine_for("gamma")
        assert cast_closed(beta) and not cast_closed(alpha)
        gate.set()
        assert (await running.result()).finish_reason == "stop"
        await manager.close()

    asyncio.run(scenario())


def test_a_load_that_fits_in_no_way_is_refused_before_anything_closes(registry: Path) -> None:
    factory = BudgetFactory()

    async def scenario() -> None:
        manager = _manager(registry, factory)
        await manager.load("alpha")
        await manager.engine_for("beta")
        await _after_grace()
        with pytest.raises(InsufficientMemory, match="does not fit"):
            await manager.engine_for("huge")
        assert _ids(manager) == ["alpha", "beta"]
        assert not any(e.closed for e in factory.engines)
        engine = await manager.engine_for("alpha")  # still serving
        [handle] = engine.submit([GenerationInput((1,), SamplingParams(), 2)])
        assert (await handle.result()).finish_reason in ("stop", "length")
        await manager.close()

    asyncio.run(scenario())


def test_a_pinned_model_is_never_unloaded_for_room(registry: Path) -> None:
    factory = BudgetFactory()

    async def scenario() -> None:
        manager = _manager(registry, factory, pin=("alpha",))
        await manager.load("alpha")
        await manager.engine_for("beta")  # alpha is now the LRU, but pinned
        await _after_grace()
        await manager.engine_for("gamma")
        assert _ids(manager) == ["alpha", "gamma"]
        await manager.close()

    asyncio.run(scenario())


def test_max_models_unloads_the_least_recently_used(registry: Path) -> None:
    factory = BudgetFactory()

    async def scenario() -> None:
        manager = _manager(registry, factory, memory_limit=0, max_models=2)
        await manager.load("alpha")
        await manager.engine_for("beta")
        await _after_grace()
        await manager.engine_for("gamma")  # memory is plenty; the count is not
        assert _ids(manager) == ["beta", "gamma"]
        # The default model, unloaded for room, comes back for a request naming none.
        await _after_grace()
        again = await manager.engine_for(None)
        assert again.info.model_id == "alpha" and manager.current_id == "alpha"
        assert len(_ids(manager)) == 2
        await manager.close()

    asyncio.run(scenario())


def test_requests_for_a_resident_model_do_not_wait_on_another_load(registry: Path) -> None:
    factory = BudgetFactory(slow="beta", slow_s=1.5)

    async def scenario() -> None:
        manager = _manager(registry, factory)
        alpha = await manager.load("alpha")
        loading = asyncio.ensure_future(manager.engine_for("beta"))
        await asyncio.sleep(0.2)
        assert manager.loading is not None and manager.loading.model_id == "beta"
        started = time.monotonic()
        engine = await manager.engine_for("alpha")
        [handle] = engine.submit([GenerationInput((1,), SamplingParams(), 2)])
        await handle.result()
        assert engine is alpha and not loading.done()
        assert time.monotonic() - started < 1.0  # well before beta's 1.5 s load ends
        # Requests for the model being loaded join that load.
        joined = await asyncio.gather(loading, manager.engine_for("beta"))
        assert joined[0] is joined[1] and [e.info.model_id for e in factory.engines] == [
            "alpha",
            "beta",
        ]
        await manager.close()

    asyncio.run(scenario())


def test_idle_time_unloads_one_model_and_keeps_the_others(registry: Path) -> None:
    factory = BudgetFactory()

    async def scenario() -> None:
        manager = _manager(registry, factory)
        manager.keep_alive_poll_s = 0.01
        await manager.load("alpha")
        await manager.engine_for("beta")
        manager.keep_alive("beta", 0.1)
        deadline = time.monotonic() + 15
        while "beta" in _ids(manager) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert _ids(manager) == ["alpha"]
        assert manager.expires_at("alpha") is not None  # --keep-alive's 5 minutes
        await manager.close()

    asyncio.run(scenario())


def test_a_model_of_another_kind_is_a_clear_400(registry: Path) -> None:
    factory = BudgetFactory()

    async def scenario() -> None:
        manager = _manager(registry, factory)
        with pytest.raises(InvalidRequest, match="'embed' is an embedding model"):
            await manager.engine_for("embed")
        with pytest.raises(InvalidRequest, match="Models that do: embed"):
            await manager.embedder_for("alpha")
        assert factory.engines == []  # refused before anything was loaded
        embedder = await manager.embedder_for(None)  # the registry's embedding model
        assert embedder.info.model_id == "embed"
        await manager.close()

    asyncio.run(scenario())


# ----- GPU memory --------------------------------------------------------------------------


class _Offloaded:
    """A resident model with ``layers_on`` of its 10 layers on the GPU."""

    def __init__(self, model_id: str, size: int, layers_on: int) -> None:
        self.info = EngineInfo(
            model_id=model_id,
            name=model_id,
            description="",
            n_ctx=512,
            n_ctx_train=512,
            n_gpu_layers=layers_on,
            parallel=1,
            size_bytes=size,
            chat_format=None,
            loaded_at=0.0,
            details={"n_layer": 10},
        )


def test_the_gpu_room_counts_offloaded_layers(registry: Path) -> None:
    settings = make_settings(registry)
    whole, half = _Offloaded("a", 4000, 10), _Offloaded("b", 4000, 5)
    # No GPU: nothing counted.
    assert placement.room(settings, 50_000, [whole]).gpu_bytes == 0
    # GPU allocations are real: the residents' are already off the free figure, and an
    # evicted model's offloaded share (all of a, half of b) comes back.
    assert placement.room(settings, 50_000, [whole, half], gpu_free=1000).gpu_bytes == 1000
    assert placement.room(settings, 50_000, [half], [whole], gpu_free=1000).gpu_bytes == 5000
    assert placement.room(settings, 50_000, [whole], [half], gpu_free=1000).gpu_bytes == 3000
    capped = make_settings(registry, gpu_memory_limit=6000)
    assert placement.room(capped, 50_000, [whole], gpu_free=10_000).gpu_bytes == 2000


def test_a_model_whose_offloaded_layers_do_not_fit_the_gpu_is_refused(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from locallab_cpp.models import fit, sizing

    spec = ModelSpec(id="big", path="big.gguf", layers=32)
    planned = sizing.MemoryPlan(
        n_ctx_slot=4096,
        parallel=1,
        pool_tokens=4096,
        kv_bytes=0,
        need_bytes=8 * sizing.GIB,
        available_bytes=64 * sizing.GIB,
        reason="",
    )
    monkeypatch.setattr(sysinfo, "gpu_free_memory", lambda: 4 * sizing.GIB)
    with pytest.raises(InsufficientMemory, match=r"GPU's memory.*--n-gpu-layers 16 of 32"):
        fit.check_gpu(spec, make_settings(registry), planned)
    fit.check_gpu(spec, make_settings(registry, n_gpu_layers=12), planned)  # 3 GiB: fits
    fit.check_gpu(spec, make_settings(registry, n_gpu_layers=0), planned)  # CPU only
    monkeypatch.setattr(sysinfo, "gpu_free_memory", lambda: None)  # a CPU build
    fit.check_gpu(spec, make_settings(registry), planned)
