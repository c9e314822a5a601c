"""--repack: the auto decision from CPU flags, which tensors CPU_REPACK may take, the GGUF
tensor table it reads, and what reaches llama.cpp's model params."""

from __future__ import annotations

import struct
from pathlib import Path

import llama_cpp
import pytest

from locallab_cpp.engine.llama.gguf import GGUFError, TensorInfo, read_tensor_infos
from locallab_cpp.engine.llama.repack import (
    apply_repack,
    cpu_extra_bufts,
    has_amx,
    plan_repack,
    repackable,
    resolve_repack,
)

Q4_0, Q5_0, Q8_0, Q2_K, Q4_K, Q6_K = 2, 6, 8, 10, 12, 14
AMD = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f"})
SAPPHIRE_RAPIDS = AMD | {"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"}
GEMMA_LIKE = [
    TensorInfo("token_embd.weight", Q8_0, (640, 262144)),
    TensorInfo("blk.0.attn_q.weight", Q5_0, (640, 1024)),
    TensorInfo("blk.0.attn_output.weight", Q4_K, (1024, 640)),
    TensorInfo("blk.0.ffn_down.weight", Q6_K, (2048, 640)),
    TensorInfo("blk.1.ffn_down.weight", Q4_K, (2048, 640)),
    TensorInfo("blk.1.attn_norm.weight", 0, (640,)),
]


def plan(setting: str, flags: frozenset[str], **kw: object) -> object:
    args: dict[str, object] = {
        "flags": flags,
        "gpu_offload": False,
        "tensors": GEMMA_LIKE,
        "cpu_repack_available": True,
    }
    args.update(kw)
    return plan_repack(setting, **args)  # type: ignore[arg-type]


def test_has_amx_from_flags() -> None:
    assert has_amx(SAPPHIRE_RAPIDS)
    assert has_amx({"amx_int8"}) and has_amx({"amx_tile"})
    assert not has_amx(AMD)
    assert not has_amx({"amx_bf16"})  # the int8 kernels are what llama.cpp needs


def test_auto_without_amx_repacks_everything() -> None:
    p = plan("auto", AMD)
    assert p.mode == "on" and p.tensors == ()
    assert "no AMX" in p.reason


def test_auto_with_amx_keeps_cpu_repack_only() -> None:
    p = plan("auto", SAPPHIRE_RAPIDS)
    assert p.mode == "no-amx"
    assert p.tensors == ("blk.0.attn_output.weight", "blk.1.ffn_down.weight")
    assert "AMX" in p.reason and "2 tensors" in p.reason


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"gpu_offload": True}, "GPU offload"),
        ({"cpu_repack_available": False}, "no CPU_REPACK"),
        ({"tensors": None}, "could not be read"),
        ({"tensors": [GEMMA_LIKE[1]]}, "no tensor"),
    ],
)
def test_auto_with_amx_falls_back_to_off(kw: dict[str, object], why: str) -> None:
    p = plan("auto", SAPPHIRE_RAPIDS, **kw)
    assert p.mode == "off" and p.tensors == ()
    assert why in p.reason


def test_explicit_settings_win_over_the_cpu() -> None:
    assert plan("on", SAPPHIRE_RAPIDS).mode == "on"
    assert plan("off", AMD).mode == "off"
    forced = plan("no-amx", AMD)
    assert forced.mode == "no-amx" and len(forced.tensors) == 2


def test_repackable_follows_the_x86_repack_rules() -> None:
    def t(name: str, ggml_type: int, rows: int = 64) -> TensorInfo:
        return TensorInfo(name, ggml_type, (256, rows))

    assert repackable(t("blk.3.ffn_up.weight", Q4_0), AMD)
    assert repackable(t("blk.3.ffn_up.weight", Q4_K), AMD)
    # q5_0, q8_0 and q6_K have no x86 repacked layout: naming them aborts the load.
    for kind in (Q5_0, Q8_0, Q6_K):
        assert not repackable(t("blk.3.ffn_up.weight", kind), SAPPHIRE_RAPIDS)
    # The interleaved layout takes 8 rows at a time.
    assert not repackable(t("blk.3.ffn_up.weight", Q4_K, rows=12), AMD)
    # Outside the blocks (the embedding is read by row, not multiplied).
    assert not repackable(t("token_embd.weight", Q4_0), AMD)
    assert not repackable(TensorInfo("blk.0.attn_norm.weight", Q4_0, (640,)), AMD)
    # Each type needs its instruction set.
    assert not repackable(t("blk.3.ffn_up.weight", Q4_K), frozenset({"avx"}))
    assert repackable(t("blk.3.ffn_up.weight", Q2_K), AMD)
    assert not repackable(t("blk.3.ffn_up.weight", Q2_K), AMD - {"avx512f"})


def _gguf(path: Path, tensors: list[tuple[str, int, tuple[int, ...]]]) -> Path:
    def string(text: str) -> bytes:
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 3)
    out += string("general.architecture") + struct.pack("<I", 8) + string("gemma3")
    out += string("general.n") + struct.pack("<I", 4) + struct.pack("<I", 7)
    # An array of strings, skipped.
    out += string("tok.list") + struct.pack("<IIQ", 9, 8, 2) + string("a") + string("bc")
    for name, ggml_type, shape in tensors:
        out += string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ggml_type, 0)
    path.write_bytes(out)
    return path


def test_gguf_tensor_table(tmp_path: Path) -> None:
    path = _gguf(
        tmp_path / "m.gguf",
        [("token_embd.weight", Q8_0, (640, 100)), ("blk.0.attn_q.weight", Q4_K, (640, 1024))],
    )
    assert read_tensor_infos(path) == [
        TensorInfo("token_embd.weight", Q8_0, (640, 100)),
        TensorInfo("blk.0.attn_q.weight", Q4_K, (640, 1024)),
    ]


@pytest.mark.parametrize("data", [b"", b"GGU", b"NOPE" + b"\0" * 20, b"GGUF" + b"\x09\0\0\0"])
def test_gguf_reader_refuses_what_is_not_gguf(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError):
        read_tensor_infos(path)


def test_gguf_truncated_table(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "m.gguf", [("blk.0.attn_q.weight", Q4_K, (640, 1024))])
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(GGUFError):
        read_tensor_infos(path)


def test_resolve_reads_the_table_only_when_needed(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    # Without AMX auto is decided from the flags alone: the file is never opened.
    assert resolve_repack("auto", missing, gpu_offload=False, flags=AMD).mode == "on"
    # With AMX an unreadable table falls back to off instead of failing the load.
    assert resolve_repack("auto", missing, gpu_offload=False, flags=SAPPHIRE_RAPIDS).mode == "off"


def test_apply_writes_llama_params() -> None:
    mparams = llama_cpp.llama_model_default_params()
    apply_repack(mparams, plan("off", AMD))  # type: ignore[arg-type]
    assert mparams.use_extra_bufts is False and not mparams.tensor_buft_overrides
    mparams = llama_cpp.llama_model_default_params()
    apply_repack(mparams, plan("on", AMD))  # type: ignore[arg-type]
    assert mparams.use_extra_bufts is True and not mparams.tensor_buft_overrides


@pytest.mark.skipif("CPU_REPACK" not in cpu_extra_bufts(), reason="no CPU_REPACK buffer")
def test_apply_no_amx_names_each_tensor() -> None:
    mparams = llama_cpp.llama_model_default_params()
    applied = apply_repack(mparams, plan("no-amx", AMD))  # type: ignore[arg-type]
    assert mparams.use_extra_bufts is False
    overrides = applied._keep[0]
    assert [o.pattern for o in overrides] == [
        rb"^blk\.0\.attn_output\.weight$",
        rb"^blk\.1\.ffn_down\.weight$",
        None,  # the list's terminator
    ]
    assert overrides[0].buft == cpu_extra_bufts()["CPU_REPACK"]
    assert "AMX" not in cpu_extra_bufts() or overrides[0].buft != cpu_extra_bufts()["AMX"]
