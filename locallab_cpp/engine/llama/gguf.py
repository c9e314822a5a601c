"""Read a GGUF file's tensor table (names, types, shapes) without loading any weights.

llama.cpp decides at load time where each weight lives; to steer that (see repack.py) the
server needs to know, before loading, which tensors a file holds and in which format.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GGUF_MAGIC = b"GGUF"

# GGUF metadata value types (gguf.h) and the fixed sizes of the scalar ones.
_STRING = 8
_ARRAY = 9
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One entry of a GGUF tensor table."""

    name: str
    ggml_type: int
    """ggml's type id (ggml.h ``enum ggml_type``: 12 is Q4_K, 2 is Q4_0...)."""
    shape: tuple[int, ...]
    """Dimensions as ggml counts them: ``shape[0]`` is the row length (ne[0])."""


def _read(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise GGUFError("the file ends inside its header")
    return data


def _u32(fh: BinaryIO) -> int:
    return int(struct.unpack("<I", _read(fh, 4))[0])


def _u64(fh: BinaryIO) -> int:
    return int(struct.unpack("<Q", _read(fh, 8))[0])


def _string(fh: BinaryIO) -> str:
    return _read(fh, _u64(fh)).decode("utf-8", errors="replace")


def _skip_value(fh: BinaryIO, value_type: int) -> None:
    if value_type == _STRING:
        fh.seek(_u64(fh), 1)
    elif value_type == _ARRAY:
        item_type = _u32(fh)
        count = _u64(fh)
        if item_type in _SCALAR_SIZES:
            fh.seek(_SCALAR_SIZES[item_type] * count, 1)
        else:
            for _ in range(count):
                _skip_value(fh, item_type)
    elif value_type in _SCALAR_SIZES:
        fh.seek(_SCALAR_SIZES[value_type], 1)
    else:
        raise GGUFError(f"unknown metadata value type {value_type}")


def read_tensor_infos(path: Path) -> list[TensorInfo]:
    """The tensor table of the GGUF file at ``path`` (version 2 or 3)."""
    with path.open("rb") as fh:
        if _read(fh, 4) != GGUF_MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file")
        version = _u32(fh)
        if version not in (2, 3):
            raise GGUFError(f"{path.name} is GGUF version {version}; 2 and 3 are understood")
        n_tensors = _u64(fh)
        n_kv = _u64(fh)
        for _ in range(n_kv):
            _string(fh)
            _skip_value(fh, _u32(fh))
        tensors = []
        for _ in range(n_tensors):
            name = _string(fh)
            n_dims = _u32(fh)
            if n_dims > 8:
                raise GGUFError(f"tensor {name} claims {n_dims} dimensions")
            shape = tuple(_u64(fh) for _ in range(n_dims))
            ggml_type = _u32(fh)
            _u64(fh)  # offset into the data section
            tensors.append(TensorInfo(name=name, ggml_type=ggml_type, shape=shape))
        return tensors


# ----- checking a file before it is loaded ----------------------------------------------

MAX_TENSORS = 1 << 20
"""More tensors than any real model has (a large MoE has a few thousand): a header claiming
more is damaged, and believing it would make the reader loop for hours."""
MAX_METADATA = 1 << 20
MAX_DIMS = 4
"""GGML_MAX_DIMS."""
DEFAULT_ALIGNMENT = 32
"""GGUF_DEFAULT_ALIGNMENT: where the data section and each tensor start, unless
``general.alignment`` says otherwise."""

# ggml type id -> (elements per block, bytes per block), from ggml.c's type traits. A type
# missing here is only checked to start inside the file.
_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    30: (1, 2),  # BF16
}


class _Bounded:
    """A GGUF reader that never believes a length longer than what is left of the file."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.size = size

    def left(self) -> int:
        return self.size - self.fh.tell()

    def read(self, n: int, what: str) -> bytes:
        if n > self.left():
            raise GGUFError(f"the file ends inside its header ({what})")
        return _read(self.fh, n)

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.read(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.read(8, what))[0])

    def skip(self, n: int, what: str) -> None:
        if n > self.left():
            raise GGUFError(f"the file ends inside its header ({what})")
        self.fh.seek(n, 1)

    def string(self, what: str) -> bytes:
        return self.read(self.u64(what), what)

    def value(self, value_type: int, what: str, depth: int = 0) -> int | None:
        """Skip one metadata value; a 32-bit unsigned value is returned (for alignment)."""
        if value_type == 4:
            return self.u32(what)
        if value_type == _STRING:
            self.skip(self.u64(what), what)
        elif value_type == _ARRAY:
            item_type = self.u32(what)
            count = self.u64(what)
            if count > self.left():  # every item takes at least one byte
                raise GGUFError(f"metadata {what} claims an array of {count} items")
            if item_type in _SCALAR_SIZES:
                self.skip(_SCALAR_SIZES[item_type] * count, what)
            elif depth > 2:
                raise GGUFError(f"metadata {what} nests arrays too deep")
            else:
                for _ in range(count):
                    self.value(item_type, what, depth + 1)
        elif value_type in _SCALAR_SIZES:
            self.skip(_SCALAR_SIZES[value_type], what)
        else:
            raise GGUFError(f"metadata {what} has an unknown value type {value_type}")
        return None


def check_gguf(path: Path) -> None:
    """Raise GGUFError unless ``path`` looks like a whole GGUF file: the magic, a known
    version, tensor and metadata counts within sane bounds, a header that ends inside the
    file and every tensor's data inside it too (a truncated download fails here, cheaply,
    instead of inside llama.cpp after the current model was closed)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        r = _Bounded(fh, size)
        if size < 4 or r.read(4, "magic") != GGUF_MAGIC:
            raise GGUFError("it is not a GGUF file (no GGUF magic at its start)")
        version = r.u32("version")
        if version not in (2, 3):
            raise GGUFError(f"it is GGUF version {version}; versions 2 and 3 are understood")
        n_tensors = r.u64("tensor count")
        n_kv = r.u64("metadata count")
        if n_tensors > MAX_TENSORS or n_kv > MAX_METADATA:
            raise GGUFError(
                f"its header claims {n_tensors} tensors and {n_kv} metadata entries, "
                "beyond any real model: the file is damaged"
            )
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = r.string("metadata key").decode("utf-8", errors="replace")
            found = r.value(r.u32(key), key)
            if key == "general.alignment" and found is not None:
                alignment = found
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(f"its alignment {alignment} is not a power of two")
        data_end = 0
        for _ in range(n_tensors):
            name = r.string("tensor name").decode("utf-8", errors="replace")
            n_dims = r.u32(name)
            if n_dims > MAX_DIMS:
                raise GGUFError(f"tensor {name} claims {n_dims} dimensions")
            elements = 1
            for _ in range(n_dims):
                elements *= r.u64(name)
            ggml_type = r.u32(name)
            offset = r.u64(name)
            if offset % alignment:
                raise GGUFError(f"tensor {name} is not aligned")
            block, block_bytes = _TYPE_SIZES.get(ggml_type, (1, 0))
            data_end = max(data_end, offset + -(-elements // block) * block_bytes)
        header_end = fh.tell()
    data_start = -(-header_end // alignment) * alignment
    if data_start + data_end > size:
        missing = data_start + data_end - size
        raise GGUFError(
            f"it is {size} bytes but its tensors need {data_start + data_end}: "
            f"{missing} bytes are missing (an incomplete download?)"
        )
