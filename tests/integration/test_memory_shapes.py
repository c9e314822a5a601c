"""The memory estimate (models/sizing.py, fed by the GGUF header: gguf_shape.py) against the
peak resident memory llama.cpp really takes, for models of several shapes.

The models are small GGUFs written here with the ``gguf`` package (tiny_gguf.py: random
f32 weights, 10-30 MB): llama with grouped-query attention (2 KV heads of 8) and without
(8 of 8), a llama mixture of experts (4 experts, 2 used), and gemma3 with a 512-token
sliding window (12 layers, of which llama.cpp's rule makes 10 slide). Each is opened in a
child process the way the engine opens it (loading.open_model: weights read, one unified KV
pool) at two contexts, 4,096 and 32,768 tokens; the peak resident memory (VmHWM) of each is
measured.

What is checked, within 10%: the DIFFERENCE of the two peaks against the difference of the
estimated KV cache (window checkpoints excluded: the engine allocates those while it serves,
not at load). At these sizes the fixed overheads (Python, llama.cpp's own start, the
compute buffer's floor) are 20-50 MiB against a 10-30 MB file, so a total would measure
them rather than the KV formula; the delta between two contexts of one model is the KV
cache alone (tens to a hundred MiB here). The totals are printed for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from it_support import ServerProcess, error_detail
from tiny_gguf import Shape, write_model

from locallab_cpp.config import load_settings
from locallab_cpp.models import sizing
from locallab_cpp.models.gguf_shape import with_file_shape
from locallab_cpp.models.registry import Registry

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("memory_child.py")
ROOT = Path(__file__).resolve().parents[2]
CONTEXTS = (4096, 32768)
TOLERANCE = 0.10
GEMMA = "gemma-3-270m"

SHAPES = {
    "llama-gqa": Shape(kv_heads=2),
    "llama-mha": Shape(kv_heads=8),
    "llama-moe": Shape(kv_heads=2, experts=4, experts_used=2),
    "gemma3-swa": Shape(arch="gemma3", layers=12, kv_heads=4, head_dim=64, window=512),
}


def _measure(path: Path, n_ctx: int, parallel: int) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(CHILD.parent)])}
    done = subprocess.run(
        [sys.executable, str(CHILD), str(path), str(n_ctx), str(parallel), str(n_ctx)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# Slots change only a sliding-window model's cache: the others are measured with one.
CASES = [(name, 1) for name in SHAPES] + [
    (name, 4) for name, shape in SHAPES.items() if shape.window
]


@pytest.mark.parametrize(("name", "parallel"), CASES)
def test_the_kv_estimate_matches_the_measured_growth(
    name: str, parallel: int, tmp_path: Path
) -> None:
    path = write_model(tmp_path / f"{name}.gguf", SHAPES[name])
    small, large = (_measure(path, n_ctx, parallel) for n_ctx in CONTEXTS)
    measured = large["peak"] - small["peak"]
    estimated = large["kv_estimate"] - small["kv_estimate"]
    print(
        f"{name} x{parallel}: KV growth {CONTEXTS[0]}->{CONTEXTS[1]} measured "
        f"{measured / 2**20:.1f} MiB, estimated {estimated / 2**20:.1f} MiB; peaks "
        f"{small['peak'] / 2**20:.0f}/{large['peak'] / 2**20:.0f} MiB, estimates "
        f"{small['need_estimate'] / 2**20:.0f}/{large['need_estimate'] / 2**20:.0f} MiB"
    )
    assert abs(measured - estimated) <= TOLERANCE * estimated, (measured, estimated)


def test_the_header_gives_the_sliding_window_layout(tmp_path: Path) -> None:
    path = write_model(tmp_path / "gemma3.gguf", SHAPES["gemma3-swa"])
    loaded = _measure(path, CONTEXTS[0], 1)
    # llama.cpp's own window (llama_model_n_swa) and gemma3's rule: every 6th layer whole.
    assert loaded["n_swa"] == 512
    assert (loaded["layers"], loaded["swa_layers"]) == (12, 10)


def test_a_sliding_window_layers_cache_grows_with_the_slots(tmp_path: Path) -> None:
    path = write_model(tmp_path / "gemma3.gguf", SHAPES["gemma3-swa"])
    one, four = (_measure(path, CONTEXTS[0], n) for n in (1, 4))
    measured = four["peak"] - one["peak"]
    estimated = four["kv_estimate"] - one["kv_estimate"]
    assert abs(measured - estimated) <= TOLERANCE * estimated, (measured, estimated)


def test_a_load_that_does_not_fit_is_refused_and_the_model_keeps_serving(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The real server under a memory cap, serving the embedded model at --n-ctx 32768: a
    generated model whose KV cache at that context is 1 GiB is refused before anything is
    closed (its header is all the check reads), with a context that would fit."""
    wide = Shape(layers=16, embd=128, heads=8, kv_heads=8, head_dim=64, ff=256)
    path = write_model(tmp_path / "wide.gguf", wide)
    models_file = tmp_path / "models.toml"
    models_file.write_text(f'[[models]]\nid = "wide"\npath = "{path}"\n', encoding="utf-8")
    cap = 720 * 2**20
    settings = load_settings({"n_ctx": 32768})
    registry = Registry.load(None)
    embedded = registry.get(GEMMA)
    embedded_path = registry.ensure_local(embedded)
    shaped = with_file_shape(embedded, embedded_path)
    assert sizing.plan(shaped, settings, cap, embedded_path.stat().st_size).fits

    srv = server_factory(
        "--models-file", str(models_file), "--model", GEMMA, "--n-ctx", "32768",
        env={sizing.MEMORY_LIMIT_ENV: str(cap)},
    )  # fmt: skip
    with srv.client() as c:
        detail = error_detail(c.post("/models/load", json={"model_id": "wide"}), 503)
        assert "'wide' does not fit in memory" in detail and "--n-ctx " in detail, detail
        assert str(tmp_path) not in detail
        current = c.get("/models/current")
        assert current.status_code == 200 and current.json()["model_id"] == GEMMA
        r = c.post("/generate", json={"prompt": "Hello", "max_length": 4})
        assert r.status_code == 200 and r.json()["model"] == GEMMA, r.text
