"""Facts about the machine: CPU, memory, llama.cpp's build and GPU offload."""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import psutil

# Instruction sets llama.cpp's CPU kernels are built for; the ones worth showing a user.
_FLAGS = (
    "avx",
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "fma",
    "f16c",
    "neon",
    "sve",
)


@functools.cache
def cpu_static() -> dict[str, Any]:
    """CPU model and flags; py-cpuinfo is slow (it may spawn a process), so only once."""
    import cpuinfo

    info = cpuinfo.get_cpu_info()
    flags = set(info.get("flags", []))
    return {
        "model": info.get("brand_raw") or info.get("arch_string_raw", "unknown"),
        "arch": info.get("arch", ""),
        "physical_cores": psutil.cpu_count(logical=False) or 0,
        "logical_cores": psutil.cpu_count(logical=True) or 0,
        "flags": sorted(f for f in _FLAGS if f in flags or f.replace("_", "") in flags),
    }


@functools.cache
def llama_static() -> dict[str, Any]:
    """llama.cpp's version, build features and GPU backends."""
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    enabled = sorted(set(re.findall(r"(\w+) = 1", system_info)))
    gpu = bool(llama_cpp.llama_supports_gpu_offload())
    backends = [name for name in ("CUDA", "Metal", "Vulkan", "HIP", "SYCL") if name in system_info]
    if gpu and not backends:
        backends = ["GPU"]
    return {
        "llama_cpp_python_version": llama_cpp.__version__,
        "system_info": system_info.strip(),
        "cpu_features": enabled,
        "gpu_offload_supported": gpu,
        "gpu_backends": backends,
        "backend": backends[0] if gpu else "CPU",
    }


def snapshot() -> dict[str, Any]:
    """Live CPU and memory figures (cheap enough to call per request)."""
    vm = psutil.virtual_memory()
    proc = psutil.Process(os.getpid())
    return {
        "cpu_usage": psutil.cpu_percent(interval=None),
        "memory_usage": vm.percent,
        "memory": {
            "total_bytes": vm.total,
            "available_bytes": vm.available,
            "used_percent": vm.percent,
            "process_rss_bytes": proc.memory_info().rss,
        },
    }


def available_memory() -> int:
    """Bytes of memory the machine can still give out."""
    return int(psutil.virtual_memory().available)


_GPU_TYPES = (1, 2)
"""ggml_backend_dev_type values of GPUs: a discrete GPU and an integrated one."""


def gpu_free_memory() -> int | None:
    """Bytes free on the GPUs llama.cpp can offload to (summed), as its backends report
    them; None when this build has no GPU device (a CPU build). Cheap; call it off the
    event loop all the same (a driver call)."""
    import ctypes

    import llama_cpp

    lib = llama_cpp.llama_cpp._lib
    try:
        count_fn, get_fn = lib.ggml_backend_dev_count, lib.ggml_backend_dev_get
        type_fn, memory_fn = lib.ggml_backend_dev_type, lib.ggml_backend_dev_memory
    except AttributeError:  # an older build without the device API
        return None
    count_fn.restype = ctypes.c_size_t
    get_fn.argtypes, get_fn.restype = [ctypes.c_size_t], ctypes.c_void_p
    type_fn.argtypes, type_fn.restype = [ctypes.c_void_p], ctypes.c_int
    memory_fn.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    memory_fn.restype = None
    reg_fn, name_fn = lib.ggml_backend_dev_backend_reg, lib.ggml_backend_reg_name
    reg_fn.argtypes, reg_fn.restype = [ctypes.c_void_p], ctypes.c_void_p
    name_fn.argtypes, name_fn.restype = [ctypes.c_void_p], ctypes.c_char_p
    total_free, found = 0, False
    for index in range(int(count_fn())):
        device = get_fn(index)
        if not device or type_fn(device) not in _GPU_TYPES:
            continue
        # RPC workers' devices are other machines' memory, and asking a lost worker
        # would block for good (engine/llama/rpc.py).
        if (name_fn(reg_fn(device)) or b"").startswith(b"RPC"):
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        memory_fn(device, ctypes.byref(free), ctypes.byref(total))
        total_free, found = total_free + int(free.value), True
    return total_free if found else None
