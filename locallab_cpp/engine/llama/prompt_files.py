"""The prompt cache on disk: saved prompt-prefix states that outlive a restart.

:class:`PromptFiles` keeps opaque payloads (the states the prompt cache hands it) keyed by
token sequence, one file each in a directory private to the user (prompt_format.py says
what a file holds). It never calls llama.cpp: the engine thread saves and loads bytes, and
only the prompt cache puts them into a context.

- **Nothing stale or damaged is loaded.** At :meth:`PromptFiles.start` a background thread
  reads every file's header (never its payload) and indexes those saved under this
  process's :class:`CacheIdentity`; a file of another identity is logged as stale once and
  left alone (another model may use it), a damaged header is logged and skipped.
  :meth:`PromptFiles.load` reads the payload and checks it against the header's checksum
  and the identity again; a file that fails is logged, deleted and dropped from the index.
- **Saving never blocks the engine thread.** :meth:`PromptFiles.save` queues the payload
  (a few at most: when full, the oldest pending write gives way) for the writer thread,
  which writes a temporary file in the same directory and renames it into place, so a
  reader sees a whole file or none.
- **A size cap.** After each write the least recently used files go until the directory's
  cache files fit ``cap_bytes`` (stale ones count too, so switching models cannot fill the
  disk); use is a file's mtime, set again on every load so it survives restarts. A payload
  larger than the cap is never written; a cap of 0 turns the store off.
- **A private directory.** Created 0o700, tightened to that if it is ours and wider; a
  symlink or someone else's directory turns the store off with an error logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from locallab_cpp.engine.llama.prompt_format import (
    SUFFIX,
    CacheIdentity,
    FormatError,
    Payload,
    encode_head,
    file_name,
    file_sha256,
    payload_parts,
    read_head,
    read_payload,
)

__all__ = ["CacheIdentity", "PromptFiles", "StoredPrompt", "file_sha256"]

logger = logging.getLogger("locallab_cpp.engine")

MAX_PENDING = 4
"""Writes queued at most: payloads can be large, and a newer prefix is the likelier one."""
_TEMP_PREFIX = ".tmp-"
# A temporary file this old is a crashed writer's, not a write under way in another process.
_TEMP_MAX_AGE_S = 3600.0
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True)
class StoredPrompt:
    """One saved prefix: its tokens, its file, the payload's size in bytes."""

    tokens: tuple[int, ...]
    path: Path
    size: int


@dataclass
class _File:
    """An indexed file: ``prompt`` is None for a file of another identity (counted for the cap)."""

    prompt: StoredPrompt | None
    disk_size: int
    used: float


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """An open descriptor for ``path`` if it is a regular file (not a link); OSError else."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FormatError("not a regular file")
    return fd, st


def _private_dir(directory: Path) -> bool:
    """Makes ``directory`` (0o700) or checks it is a directory of ours, tightened to 0o700."""
    try:
        if not os.path.lexists(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)
            return True
        st = os.lstat(directory)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            logger.error("prompt cache off: %s is a link or not a directory", directory)
            return False
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            logger.error("prompt cache off: %s belongs to another user", directory)
            return False
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(directory, 0o700)
            logger.warning(
                "prompt cache: %s was mode %o, now 0700", directory, stat.S_IMODE(st.st_mode)
            )
        return True
    except OSError as exc:
        logger.error("prompt cache off: cannot use %s: %s", directory, exc)
        return False


class PromptFiles:
    """Saved prompt-prefix states in ``directory``, at most ``cap_bytes`` of files.

    ``entries``, ``save`` and ``load`` are meant for the engine thread; the writer thread
    does the rest. One lock guards the index and the queue.
    """

    def __init__(
        self,
        directory: Path,
        cap_bytes: int,
        identity: CacheIdentity,
        *,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._dir = Path(directory)
        self._cap = max(0, cap_bytes)
        self._identity = identity
        self._max_pending = max(1, max_pending)
        self._lock = threading.Condition()
        self._index: dict[str, _File] = {}
        self._pending: deque[tuple[tuple[int, ...], Payload | Callable[[], Payload]]] = deque()
        self._busy = False
        self._stop = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts = {"written": 0, "loaded": 0, "rejected": 0, "dropped": 0}

    @property
    def enabled(self) -> bool:
        """Whether saves are written: started, with a cap, in a usable directory."""
        return self._thread is not None

    def start(self) -> None:
        """Makes the directory, starts the writer thread, which first indexes the files."""
        if self._thread is not None or self._cap == 0 or not _private_dir(self._dir):
            self._ready.set()
            return
        self._thread = threading.Thread(target=self._run, name="prompt-files", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        """Whether the index scan has finished (entries() is complete from then on)."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for the index scan."""
        return self._ready.wait(timeout)

    def entries(self) -> list[StoredPrompt]:
        """The indexed prefixes of this identity, most recently used first (no disk access)."""
        with self._lock:
            files = [f for f in self._index.values() if f.prompt is not None]
        files.sort(key=lambda f: f.used, reverse=True)
        return [f.prompt for f in files if f.prompt is not None]

    def has(self, tokens: Sequence[int]) -> bool:
        """Whether the state after ``tokens`` is on disk (written and indexed)."""
        name = file_name(self._identity, tokens)
        with self._lock:
            known = self._index.get(name)
        return known is not None and known.prompt is not None

    def save(self, tokens: Sequence[int], payload: Payload | Callable[[], Payload],
             size: int | None = None) -> None:  # fmt: skip
        """Queues ``payload`` as the state after ``tokens``; returns at once. A callable
        payload (with its ``size``) is called by the writer thread, so that a queued write
        holds no copy of the bytes its caller keeps anyway."""
        if self._thread is None or not tokens:
            return
        length = size if callable(payload) and size is not None else None
        if length is None and not callable(payload):
            length = sum(len(part) for part in payload_parts(payload))
        if length is not None and length > self._cap:
            logger.debug("prompt cache: %d-byte state over the disk cap, not saved", length)
            return
        with self._lock:
            if self._stop:
                return
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self._counts["dropped"] += 1
                logger.debug("prompt cache: disk writes behind, oldest pending write dropped")
            self._pending.append((tuple(tokens), payload))
            self._lock.notify_all()

    def load(self, entry: StoredPrompt) -> bytearray | None:
        """The payload of ``entry``, verified; None (logged, the file deleted) if it fails."""
        name = entry.path.name
        try:
            fd, st = _open_regular(entry.path)
        except (OSError, FormatError) as exc:
            # Another server sharing the directory may have evicted it.
            logger.info("prompt cache: %s is gone (%s)", name, exc)
            with self._lock:
                self._index.pop(name, None)
            return None
        with os.fdopen(fd, "rb") as f:
            try:
                head = read_head(f, st.st_size)
                if head.header.identity() != self._identity or head.tokens != entry.tokens:
                    raise FormatError("header differs from the index")
                payload = read_payload(f, head)
            except (OSError, FormatError) as exc:
                self._reject(entry.path, st, str(exc))
                return None
        now = time.time()
        with contextlib.suppress(OSError):
            os.utime(entry.path, (now, now))
        with self._lock:
            known = self._index.get(name)
            if known is not None:
                known.used = now
            self._counts["loaded"] += 1
        return payload

    def flush(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for the queued writes; whether they all finished."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (self._pending or self._busy or not self._ready.is_set()) and (
                self._thread is not None and self._thread.is_alive()
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return not self._pending and not self._busy

    def close(self, timeout: float = 5.0) -> None:
        """Gives queued writes up to ``timeout`` seconds, drops the rest, stops the thread."""
        if self._thread is None:
            return
        self.flush(timeout)
        with self._lock:
            self._stop = True
            self._counts["dropped"] += len(self._pending)
            self._pending.clear()
            self._lock.notify_all()
        self._thread.join(timeout)

    @property
    def stats(self) -> dict[str, int]:
        """Files and bytes of this identity indexed, other files' bytes, and counters."""
        with self._lock:
            ours = [f for f in self._index.values() if f.prompt is not None]
            other = sum(f.disk_size for f in self._index.values() if f.prompt is None)
            return {
                "files": len(ours),
                "bytes": sum(f.disk_size for f in ours),
                "other_bytes": other,
                "pending": len(self._pending),
                **self._counts,
            }

    def _reject(self, path: Path, st: os.stat_result, why: str) -> None:
        """A file that failed its checks: logged, deleted unless replaced meanwhile, unindexed."""
        logger.warning("prompt cache: %s ignored and deleted: %s", path.name, why)
        with self._lock:
            self._counts["rejected"] += 1
            try:
                now = os.lstat(path)
            except OSError:
                self._index.pop(path.name, None)
                return
            # A writer may have put a good file of the same prefix there since it was read.
            if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                self._index.pop(path.name, None)

    # The writer thread.

    def _run(self) -> None:
        try:
            self._scan()
        finally:
            self._ready.set()
            with self._lock:
                self._lock.notify_all()
        while True:
            with self._lock:
                while not self._pending and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                tokens, payload = self._pending.popleft()
                self._busy = True
            try:
                self._write(tokens, payload() if callable(payload) else payload)
            except Exception:
                logger.exception("prompt cache: writing a state failed")
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _scan(self) -> None:
        """Indexes the directory's files from their headers."""
        try:
            names = sorted(e.name for e in os.scandir(self._dir))
        except OSError as exc:
            logger.error("prompt cache: cannot list %s: %s", self._dir, exc)
            return
        for name in names:
            path = self._dir / name
            if name.startswith(_TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    if time.time() - os.lstat(path).st_mtime > _TEMP_MAX_AGE_S:
                        os.unlink(path)
                continue
            if not name.endswith(SUFFIX):
                continue
            try:
                fd, st = _open_regular(path)
                with os.fdopen(fd, "rb") as f:
                    head = read_head(f, st.st_size)
            except (OSError, FormatError) as exc:
                logger.warning("prompt cache: %s ignored: %s", name, exc)
                continue
            prompt = None
            if head.header.identity() == self._identity:
                prompt = StoredPrompt(head.tokens, path, head.header.payload_size)
            else:
                logger.info("prompt cache: %s is stale (another model, build or cache type)", name)
            with self._lock:
                self._index[name] = _File(prompt, st.st_size, st.st_mtime)
        self._enforce_cap()

    def _write(self, tokens: tuple[int, ...], payload: Payload) -> None:
        parts = payload_parts(payload)
        length = sum(len(part) for part in parts)
        name = file_name(self._identity, tokens)
        path = self._dir / name
        now = time.time()
        with self._lock:
            known = self._index.get(name)
        if known is not None and known.prompt is not None and known.prompt.size == length:
            # The same prefix under the same identity: the state on disk is as good, and
            # rewriting it would only wear the disk. Gone meanwhile, it is written again.
            try:
                os.utime(path, (now, now))
            except OSError:
                pass
            else:
                with self._lock:
                    known.used = now
                return
        head = encode_head(self._identity, tokens, parts)
        size = len(head) + length
        if size > self._cap:
            logger.debug("prompt cache: %d-byte file over the disk cap, not saved", size)
            return
        fd, tmp = _temp_file(self._dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(head)
                for part in parts:
                    f.write(part)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with self._lock:
            self._index[name] = _File(StoredPrompt(tokens, path, length), size, now)
            self._counts["written"] += 1
        self._enforce_cap()

    def _enforce_cap(self) -> None:
        """Deletes the least recently used files until the total fits the cap."""
        with self._lock:
            total = sum(f.disk_size for f in self._index.values())
            order = sorted(self._index.items(), key=lambda item: item[1].used)
            for name, known in order:
                if total <= self._cap:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._dir / name)
                del self._index[name]
                total -= known.disk_size
                logger.debug("prompt cache: %s evicted (disk cap)", name)


def _temp_file(directory: Path) -> tuple[int, str]:
    """A new file beside the cache files (so the rename is atomic), 0o600 (mkstemp's mode)."""
    return tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX, suffix=".part")
