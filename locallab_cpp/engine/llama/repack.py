"""Where llama.cpp may repack weights: the ``--repack`` setting and what it decides.

On the CPU, llama.cpp can copy quantized weights at load time into "extra" buffer types
whose layout its faster matrix kernels read: ``CPU_REPACK`` (interleaved rows for AVX2 /
NEON) and, on Intel CPUs with AMX, ``AMX``. The AMX kernels crash on the first token in
the llama.cpp that llama-cpp-python vendors (ggml-org/llama.cpp#20824), so on such CPUs
the server keeps weights out of the AMX buffer. ``no-amx`` still sends the tensors that
``CPU_REPACK`` takes there, by naming each one in llama.cpp's tensor buffer-type
overrides; ``off`` keeps every weight in plain CPU memory (llama-server's ``--no-repack``).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from locallab_cpp.engine.llama.gguf import GGUFError, TensorInfo, read_tensor_infos

logger = logging.getLogger("locallab_cpp.engine")

RepackMode = Literal["on", "no-amx", "off"]

AMX_FLAGS = frozenset({"amx_int8", "amx_tile"})

# ggml type ids (ggml.h) that the CPU_REPACK buffer takes on x86-64, with the CPU flag each
# needs; this mirrors ggml_repack_get_optimal_repack_type for x86 in the vendored llama.cpp.
# A tensor of any other type placed there aborts the load.
_Q4_0, _Q2_K, _Q4_K, _IQ4_NL, _MXFP4 = 2, 10, 12, 20, 39
_X86_REPACK_TYPES: dict[int, str] = {
    _Q4_0: "avx2",
    _Q4_K: "avx2",
    _IQ4_NL: "avx2",
    _MXFP4: "avx2",
    _Q2_K: "avx512f",
}
_REPACK_ROWS = 8
"""The x86 repacked layouts interleave 8 rows: a tensor's row count must divide by it."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags, from /proc/cpuinfo where there is one, else py-cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    try:
        import cpuinfo

        return frozenset(cpuinfo.get_cpu_info().get("flags", []))
    except Exception:  # py-cpuinfo may fail on exotic platforms; no flags is a safe answer
        return frozenset()


def has_amx(flags: Iterable[str]) -> bool:
    """Whether a CPU with these flags has AMX (llama.cpp then offers its AMX buffer)."""
    return not AMX_FLAGS.isdisjoint(flags)


def repackable(tensor: TensorInfo, flags: frozenset[str]) -> bool:
    """Whether llama.cpp's CPU_REPACK buffer takes ``tensor`` on an x86 CPU with ``flags``.

    Only matrix weights of the repeating blocks qualify: the token embedding is read row by
    row (not a matrix product), which the repack buffer cannot serve.
    """
    needs = _X86_REPACK_TYPES.get(tensor.ggml_type)
    return (
        needs is not None
        and needs in flags
        and tensor.name.startswith("blk.")
        and len(tensor.shape) >= 2
        and tensor.shape[1] % _REPACK_ROWS == 0
    )


@dataclass(frozen=True)
class RepackPlan:
    """What llama.cpp is told about extra buffer types for one model load."""

    setting: str
    """What the user asked for (auto, on, no-amx, off)."""
    mode: RepackMode
    """on: every extra buffer type llama.cpp offers; no-amx: CPU_REPACK only, for the
    tensors named in ``tensors``; off: none."""
    reason: str
    """Why, in a sentence for the log and /system/info."""
    tensors: tuple[str, ...] = ()
    """Tensors sent to CPU_REPACK by name (mode no-amx)."""


def plan_repack(
    setting: str,
    *,
    flags: frozenset[str],
    gpu_offload: bool,
    tensors: Sequence[TensorInfo] | None,
    cpu_repack_available: bool,
) -> RepackPlan:
    """Decide, from the setting and the machine, how llama.cpp may repack the weights.

    ``tensors`` is the model's tensor table (None where it could not be read);
    ``cpu_repack_available`` whether the CPU backend offers a CPU_REPACK buffer.
    """
    if setting == "on":
        return RepackPlan(setting, "on", "--repack on: every extra buffer type is allowed")
    if setting == "off":
        return RepackPlan(setting, "off", "--repack off: weights stay in plain CPU memory")
    amx = has_amx(flags)
    if setting == "auto" and not amx:
        return RepackPlan(setting, "on", "this CPU has no AMX; repacking is safe and faster")
    why = "this CPU has AMX, whose llama.cpp kernels crash" if amx else "--repack no-amx"
    if gpu_offload:
        # Naming tensors would pull offloaded layers back to the CPU.
        return RepackPlan(setting, "off", f"{why}; with GPU offload only plain buffers are used")
    if not cpu_repack_available:
        return RepackPlan(setting, "off", f"{why}; this llama.cpp has no CPU_REPACK buffer")
    if tensors is None:
        return RepackPlan(setting, "off", f"{why}; the model's tensor table could not be read")
    names = tuple(t.name for t in tensors if repackable(t, flags))
    if not names:
        return RepackPlan(setting, "off", f"{why}; no tensor of this model can be repacked")
    return RepackPlan(
        setting,
        "no-amx",
        f"{why}: {len(names)} tensors repacked for the CPU (CPU_REPACK), none for AMX",
        names,
    )


# ----- llama.cpp's side --------------------------------------------------------------------


class _BuftOverride(ctypes.Structure):
    # llama.h: struct llama_model_tensor_buft_override { const char * pattern; buft; }
    _fields_ = (("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p))


_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU
_GetExtraBufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)


@functools.cache
def cpu_extra_bufts() -> dict[str, int]:
    """The CPU backend's extra buffer types by name (``AMX``, ``CPU_REPACK``...)."""
    try:
        from llama_cpp._ggml import libggml

        libggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
        libggml.ggml_backend_dev_by_type.argtypes = (ctypes.c_int,)
        libggml.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
        libggml.ggml_backend_dev_backend_reg.argtypes = (ctypes.c_void_p,)
        libggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
        libggml.ggml_backend_reg_get_proc_address.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
        libggml.ggml_backend_buft_name.restype = ctypes.c_char_p
        libggml.ggml_backend_buft_name.argtypes = (ctypes.c_void_p,)
        dev = libggml.ggml_backend_dev_by_type(_CPU_DEVICE)
        if not dev:
            return {}
        reg = libggml.ggml_backend_dev_backend_reg(dev)
        address = libggml.ggml_backend_reg_get_proc_address(
            reg, b"ggml_backend_dev_get_extra_bufts"
        )
        if not address:
            return {}
        bufts = _GetExtraBufts(address)(dev)
        found: dict[str, int] = {}
        i = 0
        while bufts and bufts[i]:
            name = libggml.ggml_backend_buft_name(bufts[i]).decode("utf-8", errors="replace")
            found[name] = int(bufts[i])
            i += 1
        return found
    except (AttributeError, OSError):  # a llama.cpp build without these entry points
        return {}


@dataclass
class AppliedRepack:
    """A plan written into ``llama_model_params``; keeps the C strings alive for the load."""

    plan: RepackPlan
    _keep: list[Any] = field(default_factory=list)


def apply_repack(mparams: Any, plan: RepackPlan) -> AppliedRepack:
    """Write ``plan`` into llama.cpp model params. Keep the result until the load returns."""
    applied = AppliedRepack(plan)
    mparams.use_extra_bufts = plan.mode == "on"
    if plan.mode == "no-amx":
        buft = cpu_extra_bufts()["CPU_REPACK"]
        overrides = (_BuftOverride * (len(plan.tensors) + 1))()
        for i, name in enumerate(plan.tensors):
            # Patterns are regular expressions searched in the name: anchor each one.
            overrides[i].pattern = ("^" + name.replace(".", r"\.") + "$").encode()
            overrides[i].buft = buft
        mparams.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        applied._keep.append(overrides)
    return applied


def resolve_repack(
    setting: str, path: Path, *, gpu_offload: bool, flags: frozenset[str] | None = None
) -> RepackPlan:
    """The plan for loading the GGUF at ``path`` on this machine, logged once per load."""
    flags = cpu_flags() if flags is None else flags
    tensors: list[TensorInfo] | None = None
    if setting in {"auto", "no-amx"} and (setting == "no-amx" or has_amx(flags)):
        try:
            tensors = read_tensor_infos(path)
        except (OSError, GGUFError) as exc:
            logger.warning("could not read the tensor table of %s: %s", path.name, exc)
    plan = plan_repack(
        setting,
        flags=flags,
        gpu_offload=gpu_offload,
        tensors=tensors,
        cpu_repack_available="CPU_REPACK" in cpu_extra_bufts(),
    )
    logger.info("weight repacking: %s (%s)", plan.mode, plan.reason)
    return plan
