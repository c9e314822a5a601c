"""POST /api/pull: fetch a registry model's GGUF (Registry.ensure_local in a worker thread),
reported as Ollama's NDJSON progress.

Ollama's lines, in order: ``pulling manifest``; ``pulling <digest[:12]>`` with ``digest``
(``sha256:<hex>``), ``total`` and ``completed`` bytes, repeated while it downloads;
``verifying sha256 digest``; ``writing manifest``; ``success``. A failure after the
stream began is a last ``{"error": "..."}`` line (the ollama client raises it). Where the
registry has no sha256 for a hub file, the pulling lines name the file and carry no
``digest``. A model already on disk answers the same lines at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from locallab_cpp.api.ollama.model_protocol import ProgressLine
from locallab_cpp.errors import LocalLabError, ModelNotFound, printable
from locallab_cpp.http.ndjson import ndjson_line
from locallab_cpp.models.manager import ModelManager
from locallab_cpp.models.progress import LoadProgress
from locallab_cpp.models.registry import ModelSpec

logger = logging.getLogger("locallab_cpp.api.ollama")

PROGRESS_INTERVAL_S = 0.25
"""How often a running pull reports its bytes."""


def unknown_model(models: ModelManager, name: str) -> ModelNotFound:
    """Ollama's 404 for a pull of a name the registry does not list, with what it lists."""
    ids = ", ".join(spec.id for spec in models.registry)
    error = ModelNotFound(name)
    error.detail = (
        f'pull model manifest: file does not exist: "{printable(name)}" is not in the model '
        f"registry, which lists {ids} (GET /models/available; add others to models.toml)"
    )
    return error


def registry_id(models: ModelManager, name: str) -> str:
    """The registry id a pull names (``id`` or ``id:tag``); Ollama's 404 otherwise."""
    model_id = models.resolve(name) if name else None
    if model_id is None:
        raise unknown_model(models, name)
    return model_id


def _pulling(spec: ModelSpec, total: int, completed: int) -> ProgressLine:
    if spec.sha256:
        digest = spec.sha256.lower()
        return ProgressLine(
            status=f"pulling {digest[:12]}",
            digest=f"sha256:{digest}",
            total=total,
            completed=completed,
        )
    return ProgressLine(status=f"pulling {spec.file or spec.id}", total=total, completed=completed)


async def pull_once(models: ModelManager, spec: ModelSpec) -> ProgressLine:
    """``stream: false``: fetch the file, then one ``success`` (errors raise)."""
    await asyncio.to_thread(models.registry.ensure_local, spec)
    return ProgressLine(status="success")


async def pull_lines(models: ModelManager, spec: ModelSpec) -> AsyncIterator[bytes]:
    """The NDJSON progress of fetching ``spec``'s file. A client that hangs up cancels the
    download at its next chunk (huggingface_hub leaves no partial file in the cache)."""
    yield ndjson_line(ProgressLine(status="pulling manifest"))
    progress = LoadProgress(spec.id)
    work = asyncio.ensure_future(asyncio.to_thread(models.registry.ensure_local, spec, progress))
    # A cancelled pull's thread ends in LoadCancelled that no one awaits: retrieve it.
    work.add_done_callback(lambda done: done.cancelled() or done.exception())
    last: tuple[int, int] | None = None
    verifying = False
    try:
        while not work.done():
            await asyncio.wait({work}, timeout=PROGRESS_INTERVAL_S)
            now = progress.snapshot()
            if now.state == "downloading" and (now.bytes_total, now.bytes_done) != last:
                last = (now.bytes_total, now.bytes_done)
                yield ndjson_line(_pulling(spec, now.bytes_total, now.bytes_done))
            elif now.state == "verifying" and not verifying:
                verifying = True
                yield ndjson_line(ProgressLine(status="verifying sha256 digest"))
        try:
            path = work.result()
        except LocalLabError as exc:
            yield ndjson_line({"error": exc.detail})
            return
        except Exception as exc:
            logger.exception("pull of %s failed", spec.id)
            yield ndjson_line({"error": f"The pull of '{spec.id}' failed ({type(exc).__name__})."})
            return
        size = path.stat().st_size
        if last != (size, size):  # already on disk, or the last chunk came after a look
            yield ndjson_line(_pulling(spec, size, size))
        if not verifying:
            yield ndjson_line(ProgressLine(status="verifying sha256 digest"))
        yield ndjson_line(ProgressLine(status="writing manifest"))
        yield ndjson_line(ProgressLine(status="success"))
    finally:
        if not work.done():
            progress.cancel()
            logger.info("pull of %s cancelled: the client hung up", spec.id)
