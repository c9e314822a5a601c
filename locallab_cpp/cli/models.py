"""``python -m locallab_cpp models list | pull ID | rm ID | info ID``.

Results go to stdout, progress bars and errors to stderr. Exit status: 0 done, 1 the model
could not be fetched or removed, 2 an unknown id or an invalid registry.
"""

from __future__ import annotations

import sys
from typing import TextIO

from locallab_cpp.config import Settings
from locallab_cpp.errors import LocalLabError, ModelNotFound, ModelUnavailable
from locallab_cpp.models import hub, sizing
from locallab_cpp.models.catalog import catalog
from locallab_cpp.models.gguf_shape import with_file_shape
from locallab_cpp.models.progress import LoadProgress, Phase
from locallab_cpp.models.registry import ModelSpec, Registry


def run_models_command(command: str, model_id: str | None, settings: Settings) -> int:
    """Run one ``models`` sub-command; returns the exit status."""
    registry = Registry.load(settings.models_file)
    if command == "list":
        return _list(registry, settings)
    assert model_id is not None
    try:
        spec = registry.get(model_id)
    except ModelNotFound:
        print(
            f"error: unknown model {model_id!r}; `python -m locallab_cpp models list` shows "
            "the ids of the registry.",
            file=sys.stderr,
        )
        return 2
    try:
        if command == "pull":
            return _pull(registry, spec)
        if command == "rm":
            return _rm(registry, spec)
        return _info(registry, spec, settings)
    except LocalLabError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130


def _list(registry: Registry, settings: Settings, out: TextIO = sys.stdout) -> int:
    print(f"{'ID':40} {'PARAMS':7} {'QUANT':8} {'SIZE':>9} {'NEEDS':>9}  ON DISK", file=out)
    for entry in catalog(registry, settings):
        spec = entry.spec
        print(
            f"{spec.id:40} {spec.parameters:7} {spec.quantization:8} {_mb(entry.size_bytes):>9} "
            f"{_mb(entry.estimated_memory_bytes):>9}  {'yes' if entry.on_disk else 'no'}",
            file=out,
        )
    return 0


def _pull(registry: Registry, spec: ModelSpec) -> int:
    if spec.source != "hub":
        path = registry.ensure_local(spec)
        print(f"{spec.id}: nothing to download ({spec.source}); ready at {path}")
        return 0
    progress = _BarProgress(spec.id)
    try:
        path = registry.ensure_local(spec, progress, show_progress=True, refresh=True)
    finally:
        progress.close()
    checked = "sha256 checked" if spec.sha256 else "no sha256 in the registry to check"
    print(f"{spec.id}: {_mb(path.stat().st_size)} at {path} ({checked})")
    return 0


def _rm(registry: Registry, spec: ModelSpec) -> int:
    if spec.source != "hub":
        raise ModelUnavailable(
            f"Model '{spec.id}' is not a download ({spec.source}); there is nothing to remove."
        )
    freed = registry.remove(spec)
    if freed:
        print(f"{spec.id}: removed, {_mb(freed)} freed.")
    else:
        print(f"{spec.id}: not in the cache; nothing removed.")
    return 0


def _info(registry: Registry, spec: ModelSpec, settings: Settings) -> int:
    path = registry.local_path(spec)
    size = path.stat().st_size if path is not None else spec.size_bytes
    free = sizing.available_memory(settings)
    memory = sizing.plan(with_file_shape(spec, path), settings, free, size)
    need = memory.need_bytes
    if spec.source == "hub":
        where = f"{spec.repo} / {spec.file}" + (f" @ {spec.revision}" if spec.revision else "")
    elif spec.source == "file":
        where = str(spec.path)
    else:
        where = f"Python package {spec.package}"
    rows = [
        ("id", spec.id),
        ("name", spec.display_name),
        ("description", spec.description),
        ("source", f"{spec.source}: {where}"),
        ("parameters", spec.parameters or "?"),
        ("quantization", spec.quantization or "?"),
        ("size", _mb(spec.size_bytes) if spec.size_bytes else "?"),
        ("context length", str(spec.context_length or "?")),
        ("chat format", spec.chat_format or "(the GGUF's own template)"),
        ("sha256", spec.sha256 or "(none: the file is not checked)"),
        ("on disk", str(path) if path is not None else "no" + _pull_hint(spec)),
        (
            "KV cache",
            f"{_mb(memory.kv_bytes)} ({memory.pool_tokens} tokens shared by "
            f"{memory.parallel} slots, {memory.n_ctx_slot} per request"
            + (
                f"; {_mb(memory.checkpoint_bytes)} of it window checkpoints"
                if memory.checkpoint_bytes
                else ""
            )
            + ")",
        ),
        (
            "memory needed",
            f"{_mb(need)} ({_mb(free)} available: {'fits' if need <= free else 'does not fit'})",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:{width}}  {value}")
    return 0


def _pull_hint(spec: ModelSpec) -> str:
    return f" ({hub.how_to_get(spec).lower()})" if spec.source == "hub" else ""


def _mb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


class _BarProgress(LoadProgress):
    """Draws the sha256 check as a bar; huggingface_hub draws the download's own."""

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self._bar: object | None = None

    def begin(self, state: Phase, total: int = 0, done: int = 0) -> None:
        super().begin(state, total, done)
        if state == "verifying":
            from huggingface_hub.utils import are_progress_bars_disabled
            from tqdm.auto import tqdm

            self.close()
            self._bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc="checking sha256",
                disable=are_progress_bars_disabled(),
            )

    def advance(self, n: int, total: int | None = None) -> None:
        super().advance(n, total)
        if self._bar is not None:
            self._bar.update(n)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Finish the bar on screen."""
        if self._bar is not None:
            self._bar.close()  # type: ignore[attr-defined]
            self._bar = None
