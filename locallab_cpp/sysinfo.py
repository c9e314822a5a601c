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
