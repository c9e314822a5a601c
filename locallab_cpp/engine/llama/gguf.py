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
