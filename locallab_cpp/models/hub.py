"""GGUF files from the Hugging Face hub, in huggingface_hub's standard cache.

huggingface_hub does the transfer: it honours ``HF_TOKEN``, ``HF_ENDPOINT``, ``HF_HOME``
and ``HF_HUB_OFFLINE``, writes to a temporary file that is renamed into the cache only once
complete, and, when a connection drops mid-file, resumes it with an HTTP Range request (up
to five times). A download that fails for good leaves nothing behind and the next attempt
starts from zero. This module adds what a server needs on top: byte progress, a file that
must stay inside the cache, errors that say what to do, and removal of one file.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import NoReturn, Protocol

from locallab_cpp.errors import ModelUnavailable
from locallab_cpp.models import checksum
from locallab_cpp.models.progress import LoadCancelled, LoadProgress, progress_tqdm


class HubEntry(Protocol):
    """What the hub needs of a registry entry (the registry's HubEntry is one); declared
    here so that the hub does not import the registry, which imports the hub."""

    @property
    def id(self) -> str: ...

    @property
    def repo(self) -> str | None: ...

    @property
    def file(self) -> str | None: ...

    @property
    def revision(self) -> str | None: ...

    @property
    def size_bytes(self) -> int: ...


logger = logging.getLogger("locallab_cpp.models.hub")

_TRUE = {"1", "on", "yes", "true"}


class UnsafeCachePath(ModelUnavailable):
    """A cached file resolves outside the Hugging Face cache (a planted or broken symlink)."""


def cache_dir(override: Path | None = None) -> Path:
    """The hub cache: ``override``, else huggingface_hub's (``HF_HUB_CACHE``, ``HF_HOME/hub``)."""
    if override is not None:
        return Path(override).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def offline() -> bool:
    """Whether hub downloads are switched off (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def how_to_get(spec: HubEntry) -> str:
    """One sentence on fetching a model by hand."""
    return f"Run: python -m locallab_cpp models pull {spec.id}"


def cached_path(spec: HubEntry, cache: Path | None = None) -> Path | None:
    """The model's complete GGUF in the cache, or None. Never touches the network.

    Raises UnsafeCachePath if the cache entry resolves outside the cache.
    """
    from huggingface_hub import try_to_load_from_cache

    repo, file = _repo_file(spec)
    root = cache_dir(cache)
    found = try_to_load_from_cache(repo, file, revision=spec.revision, cache_dir=str(root))
    if not isinstance(found, str):
        return None
    return _inside(Path(found), root, spec)


def download(
    spec: HubEntry,
    *,
    cache: Path | None = None,
    progress: LoadProgress | None = None,
    show_progress: bool = False,
    refresh: bool = False,
) -> Path:
    """The model's GGUF, downloaded first if it is not in the cache. Blocking.

    ``refresh`` asks the hub whether the revision moved even when a copy is cached (a
    pinned commit never moves). Raises ModelUnavailable with a detail for the user.
    """
    root = cache_dir(cache)
    found = cached_path(spec, root)
    if found is not None and (not refresh or offline()):
        return found
    if found is None and offline():
        raise ModelUnavailable(
            f"Model '{spec.id}' is not downloaded and hub downloads are switched off "
            f"(HF_HUB_OFFLINE is set). Unset HF_HUB_OFFLINE, then load it again. "
            f"{how_to_get(spec)}"
        )
    from huggingface_hub import hf_hub_download

    repo, file = _repo_file(spec)
    progress = progress or LoadProgress(spec.id)
    if found is None:
        # Say "downloading" from the first request on; the size is the registry's until the
        # hub answers with its own.
        progress.begin("downloading", total=spec.size_bytes)
    bar = progress_tqdm(progress, show=show_progress, label=file)
    try:
        raw = hf_hub_download(
            repo, file, revision=spec.revision, cache_dir=str(root), tqdm_class=bar
        )
    except LoadCancelled:
        raise
    except Exception as exc:
        raise _download_error(spec, exc) from None
    return _inside(Path(str(raw)), root, spec)


def remove(spec: HubEntry, cache: Path | None = None) -> int:
    """Delete the model's GGUF from every cached revision; returns the bytes freed.

    Blobs still used by another cached file stay. Nothing outside the repository's cache
    folder is ever deleted, whatever its symlinks point to.
    """
    from huggingface_hub.file_download import repo_folder_name

    repo, file = _repo_file(spec)
    root = cache_dir(cache).resolve()
    storage = root / repo_folder_name(repo_id=repo, repo_type="model")
    snapshots = storage / "snapshots"
    if storage.is_symlink() or snapshots.is_symlink() or not snapshots.is_dir():
        return 0
    relative = Path(*file.split("/"))
    candidates: set[Path] = set()
    freed = 0
    for snapshot in snapshots.iterdir():
        if snapshot.is_symlink() or not snapshot.is_dir():
            continue
        pointer = snapshot / relative
        if not Path(os.path.realpath(pointer.parent)).is_relative_to(snapshot):
            continue
        if pointer.is_symlink():
            candidates.add(Path(os.path.realpath(pointer)))
        elif pointer.is_file():
            # No symlinks on this system: huggingface_hub stored a copy in the snapshot.
            freed += pointer.stat().st_size
        else:
            continue
        pointer.unlink()
        _prune_empty(pointer.parent, stop=snapshots)
    still_used = _referenced_blobs(snapshots)
    for blob in candidates:
        if blob in still_used or not blob.is_relative_to(root) or not blob.is_file():
            continue
        freed += blob.stat().st_size
        _unlink_blob_links(storage / "blobs", blob)
        blob.unlink(missing_ok=True)
        checksum.forget(blob)
    if not any(p.is_file() or p.is_symlink() for p in snapshots.rglob("*")):
        shutil.rmtree(storage, ignore_errors=True)
    return freed


def _repo_file(spec: HubEntry) -> tuple[str, str]:
    if not (spec.repo and spec.file):
        raise ModelUnavailable(f"Model '{spec.id}' is not a Hugging Face hub entry.")
    return spec.repo, spec.file


def _inside(path: Path, root: Path, spec: HubEntry) -> Path:
    # The snapshot entry is a symlink into blobs/; whatever it points to must be a regular
    # file under the cache, or a planted link could make llama.cpp open any file.
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return _missing(spec)
    if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
        logger.error("cached file of %s resolves outside the hub cache; refusing it", spec.id)
        raise UnsafeCachePath(
            f"The cached file of model '{spec.id}' points outside the Hugging Face cache; "
            f"refusing to load it. Remove it with: python -m locallab_cpp models rm {spec.id}"
        )
    return resolved


def _missing(spec: HubEntry) -> NoReturn:
    raise ModelUnavailable(
        f"The cached file of model '{spec.id}' is a broken link. {how_to_get(spec)}"
    )


def _referenced_blobs(snapshots: Path) -> set[Path]:
    return {Path(os.path.realpath(p)) for p in snapshots.rglob("*") if p.is_symlink()}


def _unlink_blob_links(blobs: Path, blob: Path) -> None:
    # With the shared Xet store, blobs/<etag> is itself a link to the stored file.
    if not blobs.is_dir():
        return
    for entry in blobs.iterdir():
        if entry.is_symlink() and Path(os.path.realpath(entry)) == blob:
            entry.unlink(missing_ok=True)


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _download_error(spec: HubEntry, exc: Exception) -> ModelUnavailable:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"'{spec.file}' of '{spec.repo}'" + (f" at {spec.revision}" if spec.revision else "")
    if isinstance(exc, LocalEntryNotFoundError):
        return ModelUnavailable(
            f"Model '{spec.id}' is not downloaded and the Hugging Face hub cannot be reached "
            f"(offline?). Connect to the network and load it again. {how_to_get(spec)}"
        )
    if isinstance(exc, GatedRepoError):
        return ModelUnavailable(
            f"Model '{spec.id}' comes from a gated repository ({spec.repo}): accept its "
            "license on huggingface.co, then set HF_TOKEN to a token of that account."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ModelUnavailable(
            f"The hub has no repository '{spec.repo}' for model '{spec.id}' (or it is private: "
            "set HF_TOKEN). Check the entry in the model registry."
        )
    if isinstance(exc, RevisionNotFoundError | EntryNotFoundError):
        return ModelUnavailable(
            f"The hub has no file {where} for model '{spec.id}'. Check the entry in the "
            "model registry."
        )
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        hint = " Set HF_TOKEN if the repository needs a login." if status in (401, 403) else ""
        return ModelUnavailable(
            f"Downloading model '{spec.id}' from the Hugging Face hub failed (HTTP {status})."
            f"{hint} Try again later."
        )
    logger.error("download of %s failed: %s: %s", spec.id, type(exc).__name__, exc)
    return ModelUnavailable(
        f"Downloading model '{spec.id}' failed ({type(exc).__name__}). Check the network and "
        f"the free disk space, then try again; an interrupted download starts over cleanly. "
        f"{how_to_get(spec)}"
    )
