"""Sizing from the GGUF header (models/gguf_shape.py) and the memory check before a load
(models/fit.py, ModelManager._replace): headers written with the ``gguf`` package."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from fakes import FakeFactory
from helpers import make_settings

from locallab_cpp.config import Settings
from locallab_cpp.errors import ErrorKind, InsufficientMemory
from locallab_cpp.models import sizing
from locallab_cpp.models.fit import check_fits
from locallab_cpp.models.gguf_shape import read_shape, swa_layer_count, with_file_shape
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.registry import ModelSpec, Registry

MIB = 1 << 20


def _header(path: Path, arch: str = "llama", **keys: Any) -> Path:
    """A GGUF with the given ``<arch>.*`` keys, a vocabulary and one tiny tensor."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    for key, value in keys.items():
        if isinstance(value, list):
            w.add_array(f"{arch}.{key}", value)
        else:
            w.add_uint32(f"{arch}.{key}", value)
    w.add_token_list([f"t{i}" for i in range(1000)])
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


LLAMA_GQA = {
    "block_count": 32,
    "embedding_length": 4096,
    "attention.head_count": 32,
    "attention.head_count_kv": 8,
    "context_length": 131072,
}


def test_the_header_gives_layers_kv_heads_head_size_vocabulary_and_context(
    tmp_path: Path,
) -> None:
    shape = read_shape(_header(tmp_path / "m.gguf", **LLAMA_GQA))
    assert shape is not None
    assert (shape.layers, shape.kv_heads, shape.head_dim) == (32, 8, 128)  # 4096 / 32
    assert (shape.vocab_size, shape.context_length, shape.swa_layers) == (1000, 131072, 0)


def test_key_and_value_lengths_win_over_the_embedding_split(tmp_path: Path) -> None:
    keys = {**LLAMA_GQA, "attention.key_length": 192, "attention.value_length": 128}
    shape = read_shape(_header(tmp_path / "m.gguf", **keys))
    assert shape is not None and shape.head_dim == 160  # (192 + 128) / 2: bytes a token


def test_per_layer_kv_heads_count_only_the_layers_with_attention(tmp_path: Path) -> None:
    keys = {**LLAMA_GQA, "block_count": 4, "attention.head_count_kv": [8, 0, 8, 0]}
    shape = read_shape(_header(tmp_path / "m.gguf", **keys))
    assert shape is not None and (shape.kv_layers, shape.kv_heads) == (2, 8)


def test_gemma3_slides_five_layers_of_every_six(tmp_path: Path) -> None:
    keys = {
        "block_count": 26,
        "embedding_length": 1152,
        "attention.head_count": 4,
        "attention.head_count_kv": 1,
        "attention.key_length": 256,
        "attention.value_length": 256,
        "attention.sliding_window": 512,
        "context_length": 32768,
    }
    shape = read_shape(_header(tmp_path / "g.gguf", "gemma3", **keys))
    assert shape is not None
    assert (shape.swa_window, shape.swa_layers, shape.head_dim) == (512, 22, 256)
    assert swa_layer_count("gemma3", 18) == 15 and swa_layer_count("gemma2", 26) == 13
    # A window in an architecture llama.cpp gives no pattern: every layer counted whole.
    assert swa_layer_count("llama", 32) == 0
    assert swa_layer_count("anything", 4, [True, False, True, True]) == 3


def test_the_files_figures_replace_the_registrys_and_the_registrys_stay_without_a_file(
    tmp_path: Path,
) -> None:
    path = _header(tmp_path / "m.gguf", **LLAMA_GQA)
    listed = ModelSpec(id="m", path=str(path), layers=32, kv_heads=32, head_dim=128)
    shaped = with_file_shape(listed, path)
    assert (shaped.kv_heads, shaped.vocab_size, shaped.context_length) == (8, 1000, 131072)
    assert with_file_shape(listed, None) is listed
    assert with_file_shape(listed, tmp_path / "missing.gguf") is listed
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    assert with_file_shape(listed, bad) is listed
    # Neither a file nor the registry's figures: the file-size guess.
    guess = ModelSpec(id="g", path="g", size_bytes=4 << 30)
    assert sizing.kv_bytes_per_token(guess) == (4 << 30) // sizing.KV_GUESS_DIVISOR
    assert sizing.kv_bytes_per_token(shaped) == 32 * 8 * 128 * 4


def _model(tmp_path: Path) -> tuple[ModelSpec, Path]:
    path = _header(tmp_path / "m.gguf", **LLAMA_GQA)
    return ModelSpec(id="m", path=str(path)), path


def _limit_for(spec: ModelSpec, path: Path, settings: Settings) -> int:
    """A memory limit just above what ``settings`` need (the plan's own figure)."""
    shaped = with_file_shape(spec, path)
    return sizing.plan(shaped, settings, 1 << 50, path.stat().st_size).need_bytes + MIB


def test_set_values_that_fit_are_kept(tmp_path: Path) -> None:
    spec, path = _model(tmp_path)
    settings = Settings(n_ctx=16384, parallel=2, kv_pool_tokens=16384)
    limited = msgspec.structs.replace(settings, memory_limit=_limit_for(spec, path, settings))
    planned = check_fits(spec, path, limited)
    assert (planned.n_ctx_slot, planned.parallel, planned.pool_tokens) == (16384, 2, 16384)


def test_a_load_that_does_not_fit_names_settings_that_do(tmp_path: Path) -> None:
    spec, path = _model(tmp_path)
    fitting = Settings(n_ctx=8192, parallel=1)
    limit = _limit_for(spec, path, fitting)
    settings = Settings(n_ctx=65536, parallel=1, memory_limit=limit)
    with pytest.raises(InsufficientMemory) as caught:
        check_fits(spec, path, settings)
    detail = caught.value.detail
    assert caught.value.kind is ErrorKind.UNAVAILABLE and "does not fit" in detail
    found = re.search(r"--n-ctx (\d+)", detail)
    assert found is not None, detail
    suggested = int(found.group(1))
    assert 8192 <= suggested < 65536
    # The figure named really fits, by the same formula; one granule more does not.
    check_fits(spec, path, msgspec.structs.replace(settings, n_ctx=suggested))
    with pytest.raises(InsufficientMemory):
        check_fits(spec, path, msgspec.structs.replace(settings, n_ctx=suggested + 256))
    # Half again as long a context fits where the cache is q8_0 (34 bytes per 32 values).
    near = msgspec.structs.replace(settings, n_ctx=12288)
    with pytest.raises(InsufficientMemory, match="--cache-type-k q8_0 --cache-type-v q8_0"):
        check_fits(spec, path, near)


def test_fewer_slots_are_named_for_a_sliding_window_model(tmp_path: Path) -> None:
    # Each slot keeps its own window in 22 of 26 layers (and its window checkpoints).
    keys = {
        "block_count": 26,
        "embedding_length": 2048,
        "attention.head_count": 8,
        "attention.head_count_kv": 4,
        "attention.key_length": 256,
        "attention.value_length": 256,
        "attention.sliding_window": 4096,
    }
    path = _header(tmp_path / "g.gguf", "gemma3", **keys)
    spec = ModelSpec(id="g", path=str(path))
    base = Settings(n_ctx=16384, parallel=2, kv_pool_tokens=32768)
    settings = msgspec.structs.replace(base, parallel=8, memory_limit=_limit_for(spec, path, base))
    with pytest.raises(InsufficientMemory) as caught:
        check_fits(spec, path, settings)
    found = re.search(r"--parallel (\d+)", caught.value.detail)
    assert found is not None, caught.value.detail
    slots = int(found.group(1))
    assert 2 <= slots < 8
    check_fits(spec, path, msgspec.structs.replace(settings, parallel=slots))


def test_a_model_too_large_for_any_setting_says_so(tmp_path: Path) -> None:
    spec, path = _model(tmp_path)
    with pytest.raises(InsufficientMemory, match="Even one slot"):
        check_fits(spec, path, Settings(memory_limit=MIB))


class MemoryFactory(FakeFactory):
    """Fake engines behind the real memory check (fit.check_fits on the registry's files)."""

    def __init__(self) -> None:
        super().__init__()
        self.freed: list[int] = []

    def check_memory(self, spec: ModelSpec, path: Path, settings: Settings, freed: int) -> None:
        self.freed.append(freed)
        if spec.id == "beta":  # judged at a limit nothing fits
            check_fits(spec, path, msgspec.structs.replace(settings, memory_limit=MIB), freed)


def test_a_load_refused_for_memory_leaves_the_current_model_serving(models_file: Path) -> None:
    factory = MemoryFactory()

    async def scenario() -> None:
        manager = ModelManager(Registry.from_file(models_file), make_settings(models_file), factory)
        await manager.load("alpha")
        with pytest.raises(InsufficientMemory, match="does not fit"):
            await manager.load("beta")
        assert manager.current_id == "alpha" and not factory.last.closed
        assert len(factory.engines) == 1  # never closed, never reopened
        # Tried beside alpha, then with alpha's memory counted as given back: neither fits.
        assert factory.freed[:2] == [0, 0] and factory.freed[2] > 0
        await manager.engine_for(None)

    asyncio.run(scenario())
