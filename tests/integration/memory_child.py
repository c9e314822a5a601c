"""Child of test_memory_shapes.py: open one GGUF the way the engine does (loading.open_model)
at a given context, slots and pool, and print the process's peak resident memory with the
estimate's figures for the same load, as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from locallab_cpp.config import Settings
from locallab_cpp.engine.llama.loading import open_model
from locallab_cpp.models import sizing
from locallab_cpp.models.gguf_shape import with_file_shape
from locallab_cpp.models.registry import ModelSpec


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    path, n_ctx, parallel, pool = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    settings = Settings(n_ctx=n_ctx, parallel=parallel, kv_pool_tokens=pool, threads=1)
    spec = ModelSpec(id="tiny", path=str(path))
    before = _peak_rss()
    loaded = open_model(spec, path, settings)
    shaped = with_file_shape(spec, path)
    memory = sizing.plan(shaped, settings, 1 << 40, path.stat().st_size)
    print(
        json.dumps(
            {
                "before": before,
                "peak": _peak_rss(),
                "kv_estimate": memory.kv_bytes - memory.checkpoint_bytes,
                "need_estimate": memory.need_bytes,
                "pool": loaded.pool_tokens,
                "n_swa": loaded.n_swa,
                "layers": shaped.layers,
                "swa_layers": shaped.swa_layers,
            }
        )
    )
    loaded.close()


if __name__ == "__main__":
    main()
