"""The prompt cache's file format, and the model file's digest that goes in its identity.

A file holds one prompt prefix's saved state, opaque bytes to this module::

    magic (8 bytes) | version (u16) | header length (u32)    little-endian, fixed size
    header          JSON: the identity, token count, payload size, both digests
    tokens          int32 little-endian, one per token
    payload         the state bytes

The identity (model file digest, llama.cpp build, KV cache types and whatever else the
caller names) decides whether a state may go back into this process's context: a state
saved by another model, build or cache type is not ours to load. The token list's digest
lets the index trust the tokens from the header alone; the payload's digest is checked
on every load, so a flipped byte is caught before llama.cpp sees it. Every read is
bounded: a garbage or hostile file costs at most a small header read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import sys
import tempfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

MAGIC = b"LLPCACHE"
VERSION = 1
SUFFIX = ".lpc"
_PREFIX = struct.Struct("<8sHI")
_MAX_HEADER = 64 * 1024
# Far past any context we open; only there so a damaged count cannot ask for gigabytes.
_MAX_TOKENS = 1 << 24
_CHUNK = 1 << 20
_MEMO_NAME = "model-sha256.json"
_MEMO_ENTRIES = 64


class FormatError(Exception):
    """A file that is not a whole, well-formed prompt cache file."""


@dataclass(frozen=True)
class CacheIdentity:
    """What must match for a saved state to be loaded into this process's context."""

    model_sha256: str
    """The model file's sha256 (the registry's when pinned, else :func:`file_sha256`)."""
    llama_build: str
    """The llama.cpp build, e.g. llama-cpp-python's version and a system info digest."""
    cache_type_k: str
    """The K cache's type (f16, q8_0...)."""
    cache_type_v: str
    """The V cache's type."""
    extra: tuple[tuple[str, str], ...] = ()
    """Anything else that must match (window settings, the pool's size...)."""


class Header(msgspec.Struct, forbid_unknown_fields=True):
    """A file's header: its identity, and the sizes and digests of what follows."""

    model_sha256: str
    llama_build: str
    cache_type_k: str
    cache_type_v: str
    extra: tuple[tuple[str, str], ...]
    n_tokens: int
    tokens_sha256: str
    payload_size: int
    payload_sha256: str

    def identity(self) -> CacheIdentity:
        """The identity this file was saved under."""
        return CacheIdentity(
            self.model_sha256, self.llama_build, self.cache_type_k, self.cache_type_v, self.extra
        )


@dataclass(frozen=True)
class Head:
    """What a file says before its payload: the header, the tokens, where the payload starts."""

    header: Header
    tokens: tuple[int, ...]
    payload_offset: int


def _token_bytes(tokens: Sequence[int]) -> bytes:
    packed = array("i", tokens)
    if packed.itemsize != 4:  # pragma: no cover - every platform we build for has 4-byte int
        return struct.pack(f"<{len(tokens)}i", *tokens)
    if sys.byteorder == "big":  # pragma: no cover
        packed.byteswap()
    return packed.tobytes()


def _tokens_from(data: bytes) -> tuple[int, ...]:
    packed = array("i")
    if packed.itemsize != 4:  # pragma: no cover
        return struct.unpack(f"<{len(data) // 4}i", data)
    packed.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        packed.byteswap()
    return tuple(packed)


def file_name(identity: CacheIdentity, tokens: Sequence[int]) -> str:
    """The file a prefix is saved in: the same prefix under the same identity replaces itself."""
    digest = hashlib.sha256(msgspec.json.encode(identity))
    digest.update(_token_bytes(tokens))
    return digest.hexdigest()[:40] + SUFFIX


Buffer = bytes | bytearray | memoryview
Payload = Buffer | Sequence[Buffer]
"""A payload: one buffer, or its parts in order (written one after another, never joined)."""


def payload_parts(payload: Payload) -> list[Buffer]:
    """The buffers of ``payload`` in order."""
    return [payload] if isinstance(payload, bytes | bytearray | memoryview) else list(payload)


def encode_head(identity: CacheIdentity, tokens: Sequence[int], payload: Payload) -> bytes:
    """Everything in a file before its payload."""
    parts = payload_parts(payload)
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    token_bytes = _token_bytes(tokens)
    header = Header(
        model_sha256=identity.model_sha256,
        llama_build=identity.llama_build,
        cache_type_k=identity.cache_type_k,
        cache_type_v=identity.cache_type_v,
        extra=identity.extra,
        n_tokens=len(tokens),
        tokens_sha256=hashlib.sha256(token_bytes).hexdigest(),
        payload_size=sum(len(part) for part in parts),
        payload_sha256=digest.hexdigest(),
    )
    encoded = msgspec.json.encode(header)
    return _PREFIX.pack(MAGIC, VERSION, len(encoded)) + encoded + token_bytes


def _read_exactly(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise FormatError("truncated")
    return data


def read_head(f: BinaryIO, file_size: int) -> Head:
    """The header and tokens of an open file of ``file_size`` bytes; :class:`FormatError`
    when it is not ours, another version, damaged or not the size its header says."""
    magic, version, header_len = _PREFIX.unpack(_read_exactly(f, _PREFIX.size))
    if magic != MAGIC:
        raise FormatError("not a prompt cache file")
    if version != VERSION:
        raise FormatError(f"format version {version}, not {VERSION}")
    if header_len > _MAX_HEADER:
        raise FormatError("header too long")
    try:
        header = msgspec.json.decode(_read_exactly(f, header_len), type=Header)
    except msgspec.DecodeError as exc:
        raise FormatError(f"bad header: {exc}") from None
    if not 0 <= header.n_tokens <= _MAX_TOKENS or header.payload_size < 0:
        raise FormatError("bad sizes")
    offset = _PREFIX.size + header_len + 4 * header.n_tokens
    if offset + header.payload_size != file_size:
        raise FormatError("size differs from the header's")
    token_bytes = _read_exactly(f, 4 * header.n_tokens)
    if hashlib.sha256(token_bytes).hexdigest() != header.tokens_sha256:
        raise FormatError("tokens checksum mismatch")
    return Head(header, _tokens_from(token_bytes), offset)


def read_payload(f: BinaryIO, head: Head) -> bytearray:
    """The payload after ``head`` (the file positioned there), its checksum verified: one
    writable buffer, so that a restore reads the state in it without a copy."""
    payload = bytearray(head.header.payload_size)
    if f.readinto(payload) != len(payload):  # type: ignore[attr-defined]
        raise FormatError("truncated")
    if hashlib.sha256(payload).hexdigest() != head.header.payload_sha256:
        raise FormatError("payload checksum mismatch")
    return payload


def file_sha256(path: Path, memo_dir: Path | None = None) -> str:
    """The sha256 of a file, read in 1 MiB chunks. With ``memo_dir``, remembered there by
    (resolved path, size, mtime_ns), so a multi-gigabyte model is hashed once, not at every
    start; a file rewritten in place changes its mtime and is hashed again."""
    resolved = str(Path(path).resolve())
    before = os.stat(resolved)
    key = f"{before.st_size}:{before.st_mtime_ns}"
    memo: dict[str, dict[str, str]] = _read_memo(memo_dir) if memo_dir is not None else {}
    known = memo.get(resolved)
    if known is not None and known.get("key") == key and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = hashlib.sha256()
    with open(resolved, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    result = digest.hexdigest()
    after = os.stat(resolved)
    # Remembered only when the file did not change while it was read.
    if memo_dir is not None and (after.st_size, after.st_mtime_ns) == (
        before.st_size,
        before.st_mtime_ns,
    ):
        memo.pop(resolved, None)
        memo[resolved] = {"key": key, "sha256": result}
        _write_memo(memo_dir, dict(list(memo.items())[-_MEMO_ENTRIES:]))
    return result


def _read_memo(memo_dir: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads((memo_dir / _MEMO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)}


def _write_memo(memo_dir: Path, memo: dict[str, dict[str, str]]) -> None:
    """Atomically, private to the user; a memo that cannot be written only costs a rehash."""
    try:
        os.makedirs(memo_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=memo_dir, prefix=".tmp-", suffix=".part")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(memo, f)
        os.replace(tmp, memo_dir / _MEMO_NAME)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
