"""Issue #11's faults, each with the protection it needs: an engine is never freed under a
thread using it, a failed engine is replaced, a failed load keeps the model being served, a
switch cannot starve, shutdown drains, and the settings refuse what cannot work."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, FakeFactory
from helpers import make_client, make_settings, wait_until

from locallab_cpp.cli import build_parser
from locallab_cpp.config import load_settings
from locallab_cpp.engine.lease import Leases
from locallab_cpp.engine.llama import guesses
from locallab_cpp.engine.llama.scheduler import DecodeLoop
from locallab_cpp.engine.llama.slots import Job, Slot
from locallab_cpp.engine.types import GenerationHandle, GenerationInput, SamplingParams
from locallab_cpp.errors import ConfigError, GenerationAborted, ModelUnavailable
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.registry import ModelSpec, Registry

# ----- leases ---------------------------------------------------------------------------


def test_close_waits_for_a_held_lease_then_refuses_new_ones() -> None:
    leases = Leases()
    entered, release = threading.Event(), threading.Event()

    def user() -> None:
        with leases.hold():
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=user)
    thread.start()
    assert entered.wait(5)
    assert leases.close(timeout=0.1) is False  # still held: nothing may be freed yet
    with pytest.raises(GenerationAborted), leases.hold():
        pass
    release.set()
    assert leases.close(timeout=5) is True
    thread.join(5)
    assert leases.held == 0


class LeasedFake(FakeEngine):
    """A fake whose tokenize holds a lease, as LlamaEngine's does, and blocks until told:
    a long tokenization in a worker thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leases = Leases()
        self.tokenizing = threading.Event()
        self.release = threading.Event()
        self.freed_while_leased = False

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        with self.leases.hold():
            if len(text) > 100:
                self.tokenizing.set()
                self.release.wait(5)
            return super().tokenize(text, add_bos=add_bos)

    def close(self, reason: Any = None) -> None:
        self.leases.close()
        self.freed_while_leased = self.leases.held > 0
        super().close(reason)


class LeasedFactory(FakeFactory):
    def __call__(self, spec: ModelSpec, path: Path, settings: Any) -> LeasedFake:
        engine = LeasedFake(spec, path, settings)
        self.opened.append((spec.id, path))
        self.engines.append(engine)
        return engine


def _manager(models_file: Path, factory: Any, **overrides: Any) -> ModelManager:
    return ModelManager(
        Registry.from_file(models_file), make_settings(models_file, **overrides), factory
    )


def test_unload_during_a_long_tokenization_waits_and_the_request_gets_503(
    models_file: Path,
) -> None:
    from locallab_cpp.serving import generation as serving

    factory = LeasedFactory()

    async def scenario() -> None:
        manager = _manager(models_file, factory)
        await manager.load("alpha")
        engine = factory.engines[-1]
        prompt = "word " * (serving.OFFLOOP_TOKENIZE_CHARS // 4)
        first = asyncio.ensure_future(serving.tokenize(engine, prompt))
        await wait_until(engine.tokenizing.is_set)
        unload = asyncio.ensure_future(manager.unload())
        await asyncio.sleep(0.05)
        assert not unload.done() and not engine.closed  # waits for the tokenizer
        engine.release.set()
        await first  # the tokenization already under way completes
        assert await unload == "alpha"
        assert engine.closed and not engine.freed_while_leased
        with pytest.raises(GenerationAborted):  # a later one (batch's next prompt): 503
            await serving.tokenize(engine, prompt)

    asyncio.run(scenario())


# ----- a failed engine ------------------------------------------------------------------


def test_a_failed_engine_is_reported_and_replaced(models_file: Path) -> None:
    factory = FakeFactory()
    with make_client(models_file, factory) as client:
        broken = factory.last
        broken.failed = True
        assert client.get("/health").json() == {
            "status": "degraded",
            "model_loaded": False,
            "model_id": "alpha",
            "slots_idle": 0,  # a failed engine has no slot to offer
            "slots_processing": 0,
        }
        r = client.post("/generate", json={"prompt": "hello", "max_length": 4})
        assert r.status_code == 200, r.text
        assert broken.closed  # a failed engine is still freed
        assert factory.last is not broken and len(factory.engines) == 2
        assert client.get("/health").json()["status"] == "healthy"
        factory.last.failed = True
        r = client.post("/models/load", json={"model_id": "alpha"})  # same id: reopened
        assert r.status_code == 200
        assert len(factory.engines) == 3 and not factory.last.failed


# ----- failed loads ---------------------------------------------------------------------


class PreflightFactory(FakeFactory):
    """Refuses ``bad`` in its preflight (a damaged GGUF header) and fails to open
    ``broken`` (llama.cpp refusing a file whose header looked fine)."""

    def __init__(self, bad: str = "", broken: str = "") -> None:
        super().__init__()
        self.bad = bad
        self.broken = broken

    def preflight(self, spec: ModelSpec, path: Path) -> None:
        if spec.id == self.bad:
            raise ModelUnavailable(f"Model '{spec.id}' cannot be loaded: bad magic.")

    def __call__(self, spec: ModelSpec, path: Path, settings: Any) -> FakeEngine:
        if spec.id == self.broken:
            raise ValueError("llama.cpp could not load it")
        return super().__call__(spec, path, settings)


def test_a_file_failing_the_preflight_leaves_the_current_model_open(models_file: Path) -> None:
    factory = PreflightFactory(bad="beta")

    async def scenario() -> None:
        manager = _manager(models_file, factory)
        await manager.load("alpha")
        with pytest.raises(ModelUnavailable, match="bad magic"):
            await manager.load("beta")
        assert manager.current_id == "alpha" and not factory.last.closed
        assert len(factory.engines) == 1  # never closed, never reopened

    asyncio.run(scenario())


def test_a_load_failing_in_the_factory_reopens_the_previous_model(models_file: Path) -> None:
    factory = PreflightFactory(broken="beta")

    async def scenario() -> None:
        manager = _manager(models_file, factory)
        await manager.load("alpha")
        first = factory.last
        with pytest.raises(ModelUnavailable):
            await manager.load("beta")
        # Loaded beside it (nothing says memory is short): the failure costs alpha nothing.
        assert not first.closed
        assert manager.current_id == "alpha" and factory.last is first
        assert manager.progress() is not None and manager.progress().state == "failed"  # type: ignore[union-attr]
        await manager.engine_for(None)

    asyncio.run(scenario())


# ----- switches and shutdown ------------------------------------------------------------


def test_requests_arriving_during_a_switch_wait_behind_it(models_file: Path) -> None:
    """With room for one model (--max-models 1), a request for another one waits for the
    resident model's generation, and requests for that model wait behind the switch."""
    gate = threading.Event()
    factory = FakeFactory(gate=gate)

    async def scenario() -> None:
        manager = _manager(models_file, factory, max_models=1)
        alpha = await manager.load("alpha")
        [busy] = alpha.submit([GenerationInput((1, 2), SamplingParams(), 4)])
        switch = asyncio.ensure_future(manager.engine_for("beta"))
        await asyncio.sleep(0.05)
        assert not switch.done()  # waits for alpha's generation
        follower = asyncio.ensure_future(manager.engine_for(None))
        await asyncio.sleep(0.05)
        # Without the wait, the follower would get alpha and keep it busy for ever.
        assert not follower.done()
        gate.set()
        await busy.result()
        beta = await switch
        assert beta.info.model_id == "beta"
        # A request naming no model means the one loaded last through load(): alpha,
        # loaded again once beta's grace has passed (beta then makes room for it).
        again = await follower
        assert again.info.model_id == "alpha" and again is not alpha
        assert [e.info.model_id for e in manager.residents()] == ["alpha"]

    asyncio.run(scenario())


def test_drain_waits_for_running_generations_up_to_the_grace(models_file: Path) -> None:
    gate = threading.Event()
    factory = FakeFactory(gate=gate)

    async def scenario() -> None:
        manager = _manager(models_file, factory)
        engine = await manager.load("alpha")
        [handle] = engine.submit([GenerationInput((1, 2), SamplingParams(), 4)])
        started = time.monotonic()
        await manager.drain(0.2)  # the generation is held: the grace runs out
        assert time.monotonic() - started >= 0.19
        with pytest.raises(GenerationAborted, match="shutting down"):
            await manager.engine_for(None)
        asyncio.get_running_loop().call_later(0.05, gate.set)
        await manager.drain(5)  # returns as soon as it ends
        assert (await handle.result()).finish_reason == "stop"
        await manager.close()

    asyncio.run(scenario())


# ----- the decode thread's protections (no model needed) ------------------------------


def test_a_failed_rollback_of_guesses_clears_the_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []

    def seq_rm(_memory: object, seq: int, p0: int, p1: int) -> bool:
        calls.append((seq, p0, p1))
        return p0 < 0  # removing a range fails; clearing the whole sequence works

    monkeypatch.setattr(guesses.llama_cpp, "llama_memory_seq_rm", seq_rm)
    slot = Slot(seq_id=2)
    slot.kv_tokens.extend([5, 6, 7, 8, 9])  # 7, 8, 9: the step's token and two guesses
    slot.drafts.extend([8, 4])
    slot.draft_rows.extend([1, 2])
    argmax = {0: 8, 1: 9, 2: 3}.__getitem__  # guess 8 right, guess 4 wrong
    assert guesses.verify(slot, 0, argmax, None) is None
    assert calls == [(2, 4, -1), (2, -1, -1)]
    assert slot.kv_tokens == [] and not slot.drafts and not slot.draft_rows

    monkeypatch.setattr(guesses.llama_cpp, "llama_memory_seq_rm", lambda *_: True)
    slot.kv_tokens.extend([5, 6, 7, 8, 9])
    slot.drafts.extend([8, 4])
    slot.draft_rows.extend([1, 2])
    assert guesses.verify(slot, 0, argmax, None) == [8, 9]
    assert slot.kv_tokens == [5, 6, 7, 8]


def test_cancelled_queued_jobs_take_no_queue_place() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        decode = DecodeLoop.__new__(DecodeLoop)  # its queue only: no model, no thread
        decode.pending = deque()
        inp = GenerationInput((1, 2), SamplingParams(), 4)
        jobs = [Job(handle=GenerationHandle(loop=loop), inp=inp, max_tokens=4) for _ in range(3)]
        decode.pending.extend(jobs)
        jobs[0].handle.cancel()
        jobs[2].handle.cancel()
        assert decode.queued() == 1

    asyncio.run(scenario())


def test_the_time_limit_is_checked_per_token(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = DecodeLoop.__new__(DecodeLoop)
    decode._started = [100.0, 100.0]
    slot = Slot(seq_id=1)
    decode._time_limit = 0.0
    monkeypatch.setattr("locallab_cpp.engine.llama.scheduler.time.monotonic", lambda: 1e9)
    assert not decode._out_of_time(slot)  # 0: no limit
    decode._time_limit = 5.0
    monkeypatch.setattr("locallab_cpp.engine.llama.scheduler.time.monotonic", lambda: 104.9)
    assert not decode._out_of_time(slot)
    monkeypatch.setattr("locallab_cpp.engine.llama.scheduler.time.monotonic", lambda: 105.0)
    assert decode._out_of_time(slot)


# ----- settings -------------------------------------------------------------------------


def test_parallel_above_n_batch_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"parallel \(64\) must not exceed n_batch \(32\)"):
        load_settings({"parallel": 64, "n_batch": 32}, env={})
    assert load_settings({"parallel": 32, "n_batch": 32}, env={}).parallel == 32


def test_new_settings_have_flags_and_defaults() -> None:
    defaults = load_settings({}, env={})
    assert defaults.shutdown_grace_s == 10.0 and defaults.max_generation_s == 0.0
    args = build_parser().parse_args(
        ["serve", "--shutdown-grace-s", "2.5", "--max-generation-s", "30"]
    )
    settings = load_settings({"shutdown_grace_s": args.shutdown_grace_s, "max_generation_s": 30})
    assert settings.shutdown_grace_s == 2.5 and settings.max_generation_s == 30.0
    with pytest.raises(ConfigError):
        load_settings({"shutdown_grace_s": -1}, env={})
