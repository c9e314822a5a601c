"""sha256 checks of GGUF files, remembered so a multi-gigabyte file is hashed only once.

A file counts as verified while its size, modification time and inode match the record
written when its hash last matched. Records live in ``$XDG_CACHE_HOME/locallab_cpp/``
(``~/.cache/locallab_cpp/`` by default), outside the Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from locallab_cpp.models.progress import LoadProgress

logger = logging.getLogger("locallab_cpp.models.checksum")

CHUNK_BYTES = 8 * 1024 * 1024
_RECORDS_LOCK = threading.Lock()


class ChecksumMismatch(Exception):
    """A file's sha256 is not the one the registry expects."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"sha256 {actual} does not match the expected {expected}")
        self.expected = expected
        self.actual = actual


def records_file() -> Path:
    """Where verification records are kept (read from the environment at each call)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "locallab_cpp" / "verified.json"


def sha256_file(path: Path, progress: LoadProgress | None = None) -> str:
    """The hex sha256 of ``path``, reporting bytes hashed to ``progress``."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
            if progress is not None:
                progress.advance(len(chunk))
    return digest.hexdigest()


def verify(path: Path, expected: str, progress: LoadProgress | None = None) -> None:
    """Check ``path`` against ``expected``, unless an earlier check of this very file passed.

    Raises ChecksumMismatch. ``path`` may be a symlink; the record is kept for its target.
    """
    expected = expected.lower()
    target = path.resolve()
    if _recorded(target, expected):
        return
    if progress is not None:
        progress.begin("verifying", total=target.stat().st_size)
    actual = sha256_file(target, progress)
    if actual != expected:
        raise ChecksumMismatch(expected, actual)
    _record(target, expected)


def recorded(path: Path) -> str | None:
    """The sha256 an earlier check or hash of this very file recorded, else None."""
    target = path.resolve()
    with _RECORDS_LOCK:
        entry = _load().get(str(target))
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return None
    try:
        return str(entry["sha256"]) if entry.get("stat") == _fingerprint(target) else None
    except OSError:
        return None


def remember(path: Path, sha256: str) -> None:
    """Record ``sha256`` as the hash of ``path`` as it is now (one just computed)."""
    _record(path.resolve(), sha256.lower())


def forget(path: Path) -> None:
    """Drop the record of ``path`` (after deleting it)."""
    with _RECORDS_LOCK:
        records = _load()
        if records.pop(str(path), None) is not None:
            _save(records)


def _fingerprint(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _recorded(path: Path, expected: str) -> bool:
    with _RECORDS_LOCK:
        entry = _load().get(str(path))
    if not isinstance(entry, dict) or entry.get("sha256") != expected:
        return False
    try:
        return entry.get("stat") == _fingerprint(path)
    except OSError:
        return False


def _record(path: Path, sha256: str) -> None:
    try:
        with _RECORDS_LOCK:
            records = _load()
            records[str(path)] = {"sha256": sha256, "stat": _fingerprint(path)}
            _save(records)
    except OSError as exc:
        # Only a cache: the file is fine, it will simply be hashed again next time.
        logger.warning("could not record the verification of a model file: %s", exc)


def _load() -> dict[str, object]:
    try:
        data = json.loads(records_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(records: dict[str, object]) -> None:
    file = records_file()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(records, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, file)
