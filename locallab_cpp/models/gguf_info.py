"""What a GGUF file says about its model, read from the header without loading weights.

The metadata (``general.architecture``, ``<arch>.context_length``, the chat template...),
the parameter count (``general.parameter_count``, else summed over the tensor shapes), the
quantization (``general.file_type``) and the vocabulary's fill-in-the-middle and
end-of-turn tokens. Every length in the header is checked against what is left of the file
before it is believed, strings and arrays are kept only up to a bound, and a damaged header
is a :class:`~locallab_cpp.engine.llama.gguf.GGUFError` with a sentence saying so. The
vocabulary (hundreds of thousands of strings) is scanned, not kept.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from locallab_cpp.engine.llama.gguf import GGUF_MAGIC, GGUFError

MAX_STRING_BYTES = 1 << 20
"""Longer metadata strings are skipped (value None): a chat template is tens of KB."""
MAX_ARRAY_ITEMS = 64
"""Longer arrays (the vocabulary, merges, scores) are scanned or skipped, never kept."""
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_DIMS = 4
READ_CHUNK = 1 << 16

# GGUF value types (gguf.h) -> struct format of the scalar ones.
_STRING = 8
_ARRAY = 9
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}

FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip
"""llama.cpp's ``enum llama_ftype`` (``general.file_type``) as Ollama names quantizations."""

# The token texts llama.cpp itself recognises as FIM tokens when the metadata names none
# (llama-vocab.cpp), so "has FIM tokens" here agrees with what engine.fim_tokens finds.
FIM_TEXTS: dict[str, frozenset[str]] = {
    "pre": frozenset(
        {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim▁begin\uff5c>",
         "<PRE>", "▁<PRE>",
         "<|code_prefix|>"}
    ),
    "suf": frozenset(
        {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim▁hole\uff5c>",
         "<SUF>", "▁<SUF>",
         "<|code_suffix|>"}
    ),
    "mid": frozenset(
        {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim▁end\uff5c>",
         "<MID>", "▁<MID>",
         "<|code_middle|>"}
    ),
}  # fmt: skip
# End-of-turn texts llama.cpp treats as end of generation when the metadata names no EOT.
EOT_TEXTS = frozenset(
    {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
     "<\uff5cend▁of▁sentence\uff5c>", "<|return|>"}
)  # fmt: skip

_TOKEN_ID_KEYS = {
    "tokenizer.ggml.fim_pre_token_id": "pre",
    "tokenizer.ggml.fim_suf_token_id": "suf",
    "tokenizer.ggml.fim_mid_token_id": "mid",
}


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """The header of one GGUF file."""

    metadata: Mapping[str, Any]
    """Every key: scalars, strings (None if over :data:`MAX_STRING_BYTES`), arrays of up to
    :data:`MAX_ARRAY_ITEMS` items (None for longer ones: see :attr:`array_lengths`)."""
    array_lengths: Mapping[str, int]
    parameter_count: int
    tensor_count: int
    fim_tokens: Mapping[str, str] = field(default_factory=dict)
    """"pre", "suf", "mid" -> the token's text, where the vocabulary has it."""
    stop_texts: tuple[str, ...] = ()
    """Texts of the end-of-turn and end-of-sequence tokens (EOT first)."""

    @property
    def architecture(self) -> str:
        """``general.architecture`` ("gemma3", "llama"...), "" if missing."""
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else ""

    @property
    def has_fim(self) -> bool:
        """Whether the vocabulary has FIM prefix, suffix and middle tokens."""
        return all(k in self.fim_tokens for k in ("pre", "suf", "mid"))

    @property
    def chat_template(self) -> str | None:
        """``tokenizer.chat_template``, if the file has one."""
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    @property
    def quantization(self) -> str:
        """The file type as Ollama writes it ("Q4_K_M"), "" if unknown."""
        value = self.metadata.get("general.file_type")
        return FILE_TYPES.get(value, "") if isinstance(value, int) else ""


def human_number(n: int) -> str:
    """A count as Ollama's ``format.HumanNumber`` writes it: "268.10M", "7B", "1.5B"."""
    for scale, unit, digits in ((10**9, "B", 1), (10**6, "M", 2)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{digits}f}{unit}"
    return f"{n / 1000:.0f}K" if n >= 1000 else str(n)


class _Reader:
    """Reads the header through a buffer; no length is believed beyond the file's end."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.size = size
        self.pos = 0
        self.buf = b""
        self.at = 0  # read position inside buf

    def read(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise GGUFError(f"the file ends inside its header ({what})")
        if self.at + n > len(self.buf):
            rest = self.buf[self.at :]
            more = self.fh.read(max(READ_CHUNK, n - len(rest)))
            self.buf, self.at = rest + more, 0
            if len(self.buf) < n:
                raise GGUFError(f"the file ends inside its header ({what})")
        data = self.buf[self.at : self.at + n]
        self.at += n
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise GGUFError(f"the file ends inside its header ({what})")
        left = len(self.buf) - self.at
        if n <= left:
            self.at += n
        else:
            self.fh.seek(n - left, os.SEEK_CUR)
            self.buf, self.at = b"", 0
        self.pos += n

    def scalar(self, value_type: int, what: str) -> Any:
        fmt = _SCALARS[value_type]
        value = struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]
        if value_type == 6:  # float32: its shortest text (1e-06, not 9.99999997e-07)
            return float(f"{value:.7g}")
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar(4, what))

    def u64(self, what: str) -> int:
        return int(self.scalar(10, what))

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str | None:
        n = self.u64(what)
        if n > limit:
            self.skip(n, what)
            return None
        return self.read(n, what).decode("utf-8", errors="replace")


class _Scan:
    """What reading the vocabulary finds: FIM and end-of-turn tokens by text."""

    def __init__(self) -> None:
        self.fim: dict[str, tuple[int, str]] = {}
        self.eot: tuple[int, str] | None = None
        self.wanted_ids: dict[int, str] = {}  # token id -> its text (ids named by metadata)


def _value(r: _Reader, value_type: int, key: str, scan: _Scan, lengths: dict[str, int]) -> Any:
    if value_type in _SCALARS:
        return r.scalar(value_type, key)
    if value_type == _STRING:
        return r.string(key)
    if value_type != _ARRAY:
        raise GGUFError(f"metadata {key} has an unknown value type {value_type}")
    item_type = r.u32(key)
    count = r.u64(key)
    if count > r.size - r.pos:  # every item takes at least one byte
        raise GGUFError(f"metadata {key} claims an array of {count} items")
    lengths[key] = count
    if key == "tokenizer.ggml.tokens" and item_type == _STRING:
        _scan_tokens(r, count, scan)
        return None
    if item_type in _SCALARS:
        width = struct.calcsize(_SCALARS[item_type])
        if count > MAX_ARRAY_ITEMS:
            r.skip(width * count, key)
            return None
        return [r.scalar(item_type, key) for _ in range(count)]
    if item_type == _STRING:
        items = [r.string(key) for _ in range(count)]
        return items if count <= MAX_ARRAY_ITEMS else None
    raise GGUFError(f"metadata {key} is an array of type {item_type}, which GGUF does not nest")


def _scan_tokens(r: _Reader, count: int, scan: _Scan) -> None:
    fim_of = {text: kind for kind, texts in FIM_TEXTS.items() for text in texts}
    for token in range(count):
        text = r.string("tokenizer.ggml.tokens", limit=4096) or ""
        if token in scan.wanted_ids:
            scan.wanted_ids[token] = text
        kind = fim_of.get(text)
        if kind is not None and kind not in scan.fim:
            scan.fim[kind] = (token, text)
        elif scan.eot is None and text in EOT_TEXTS:
            scan.eot = (token, text)


def read_gguf_info(path: Path) -> GGUFInfo:
    """The header of the GGUF at ``path``; GGUFError if it is not one or is damaged.
    Blocking (a vocabulary scan takes a fraction of a second): call it off the event loop."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        return _read_header(_Reader(fh, size), path, fh)


def _read_header(r: _Reader, path: Path, fh: BinaryIO) -> GGUFInfo:
    if r.size < 4 or r.read(4, "magic") != GGUF_MAGIC:
        raise GGUFError(f"{path.name} is not a GGUF file (no GGUF magic at its start)")
    version = r.u32("version")
    if version not in (2, 3):
        raise GGUFError(f"{path.name} is GGUF version {version}; versions 2 and 3 are understood")
    n_tensors = r.u64("tensor count")
    n_kv = r.u64("metadata count")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise GGUFError(
            f"the header of {path.name} claims {n_tensors} tensors and {n_kv} metadata "
            "entries, beyond any real model: the file is damaged"
        )
    # The ids of special tokens come before or after the vocabulary; a token id wanted
    # after the scan is looked up on a second pass only if needed (rare: writers put the
    # ids after the tokens).
    scan = _Scan()
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for _ in range(n_kv):
        key = r.string("metadata key", limit=1024)
        if key is None:
            raise GGUFError(f"{path.name} has a metadata key over 1 KiB: the file is damaged")
        value_type = r.u32(key)
        value = _value(r, value_type, key, scan, lengths)
        metadata[key] = value
        if key.endswith("_token_id") and isinstance(value, int):
            scan.wanted_ids.setdefault(value, "")
    parameters = 0
    for _ in range(n_tensors):
        name = r.string("tensor name", limit=1024) or "?"
        n_dims = r.u32(name)
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor {name} of {path.name} claims {n_dims} dimensions")
        elements = 1
        for _ in range(n_dims):
            elements *= r.u64(name)
        r.skip(12, name)  # type (u32) and offset (u64)
        parameters += elements
    counted = metadata.get("general.parameter_count")
    if "tokenizer.ggml.tokens" in lengths and any(not t for t in scan.wanted_ids.values()):
        _rescan_ids(fh, r.size, scan)
    return GGUFInfo(
        metadata=metadata,
        array_lengths=lengths,
        parameter_count=counted if isinstance(counted, int) and counted > 0 else parameters,
        tensor_count=n_tensors,
        fim_tokens=_fim_tokens(metadata, scan),
        stop_texts=_stop_texts(metadata, scan),
    )


def _rescan_ids(fh: BinaryIO, size: int, scan: _Scan) -> None:
    """Read the vocabulary again for token ids the metadata named after it."""
    fh.seek(0)
    r = _Reader(fh, size)
    r.skip(4 + 4 + 8, "header")
    n_kv = r.u64("metadata count")
    for _ in range(n_kv):
        key = r.string("metadata key", limit=1024) or ""
        value_type = r.u32(key)
        if key == "tokenizer.ggml.tokens" and value_type == _ARRAY:
            r.u32(key)
            count = r.u64(key)
            for token in range(count):
                text = r.string(key, limit=4096) or ""
                if token in scan.wanted_ids:
                    scan.wanted_ids[token] = text
            return
        _value(r, value_type, key, _Scan(), {})


def _token_text(metadata: Mapping[str, Any], scan: _Scan, key: str) -> str | None:
    token = metadata.get(key)
    if not isinstance(token, int):
        return None
    return scan.wanted_ids.get(token) or None


def _fim_tokens(metadata: Mapping[str, Any], scan: _Scan) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, kind in _TOKEN_ID_KEYS.items():
        text = _token_text(metadata, scan, key)
        if text is None and kind in scan.fim and not isinstance(metadata.get(key), int):
            text = scan.fim[kind][1]
        if text is not None:
            found[kind] = text
    return found


def _stop_texts(metadata: Mapping[str, Any], scan: _Scan) -> tuple[str, ...]:
    texts: list[str] = []
    eot = _token_text(metadata, scan, "tokenizer.ggml.eot_token_id")
    if eot is None and scan.eot is not None:
        eot = scan.eot[1]
    for text in (eot, _token_text(metadata, scan, "tokenizer.ggml.eos_token_id")):
        if text and text not in texts:
            texts.append(text)
    return tuple(texts)


_CACHE: dict[tuple[str, int, int], GGUFInfo | GGUFError] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def gguf_info(path: Path) -> GGUFInfo:
    """:func:`read_gguf_info`, remembered (a damaged header too) while the file's size
    and mtime stay the same. Blocking: call it off the event loop."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        found = _CACHE.get(key)
    if found is None:
        try:
            found = read_gguf_info(path)
        except GGUFError as exc:
            found = exc
        with _CACHE_LOCK:
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = found
    if isinstance(found, GGUFError):
        raise GGUFError(str(found))
    return found
