"""Which devices a model's layers go to: this machine's, and RPC workers' (rpc.py).

llama.cpp offloads to every device in its registry unless the model's parameters list
them, and the registry is process-wide: once a model's RPC workers are attached, another
model would spread over them too. So as soon as any worker is attached, each load lists
its devices: its own workers (first: llama.cpp puts RPC devices before GPUs) and this
machine's GPUs. Where the layers went is read from llama.cpp's load log ("layer N assigned
to device X"), which is what it did rather than a formula that could drift from it.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from locallab_cpp.config import Settings
from locallab_cpp.engine.llama import rpc
from locallab_cpp.errors import ConfigError, ModelUnavailable
from locallab_cpp.models.registry import ModelSpec

_ASSIGNED = re.compile(r"layer\s+(\d+) assigned to device ([^,\s]+)")


@dataclass
class DevicePlan:
    """The devices one load may use, kept alive while llama.cpp holds the list."""

    devices: list[int]
    endpoints: tuple[str, ...]
    parsed: tuple[rpc.Endpoint, ...] = ()
    array: Any = None
    workers: list[dict[str, Any]] = field(default_factory=list)
    layers: dict[str, list[int]] = field(default_factory=dict)
    """Device name -> the layers llama.cpp put there (its load log)."""

    @property
    def uses_rpc(self) -> bool:
        return bool(self.endpoints)

    def details(self) -> dict[str, Any]:
        """For /system/info: the workers and where the layers went."""
        return {
            "rpc_workers": list(self.endpoints),
            "rpc_devices": self.workers,
            "layer_devices": {name: _ranges(layers) for name, layers in self.layers.items()},
        }


def plan_devices(spec: ModelSpec, settings: Settings) -> DevicePlan | None:
    """The devices of a load (None: llama.cpp's own choice, nothing attached). Attaches
    the model's workers (``rpc`` in models.toml, else ``--rpc``) after reaching them."""
    try:
        endpoints = rpc.parse_endpoints(spec.rpc or settings.rpc)
        if not endpoints and not rpc.BACKEND.attached:
            return None
        workers: list[int] = []
        if endpoints:
            rpc.check_policy(endpoints, settings.rpc_allow_remote)
            rpc.install_abort_guard()
            workers = rpc.BACKEND.attach(endpoints, settings.rpc_backend)
    except rpc.RpcError as exc:
        if exc.kind == "unreachable":
            raise ModelUnavailable(f"Model '{spec.id}': {exc}") from None
        raise ConfigError(f"Model '{spec.id}': {exc}") from None
    devices = workers + rpc.local_gpus()
    plan = DevicePlan(devices, tuple(str(e) for e in endpoints), parsed=endpoints)
    plan.array = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
    plan.workers = rpc.describe(workers)
    return plan


def apply(mparams: Any, plan: DevicePlan) -> None:
    """Put the plan's NULL-terminated device list into llama.cpp's model parameters."""
    mparams.devices = ctypes.cast(plan.array, ctypes.c_void_p)


@contextlib.contextmanager
def layers_logged(plan: DevicePlan | None) -> Iterator[None]:
    """While loading, read llama.cpp's log for where each layer goes (into ``plan``)."""
    if plan is None:
        yield
        return
    from llama_cpp import _logger

    def read(level: int, text: bytes | None, _user: Any) -> None:
        if text and (found := _ASSIGNED.search(text.decode("utf-8", errors="replace"))):
            plan.layers.setdefault(found.group(2), []).append(int(found.group(1)))

    callback = llama_cpp.llama_log_callback(read)
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    if plan.parsed:  # llama.cpp has connected to the workers by now
        rpc.BACKEND.arm_timeouts(plan.parsed)


def _ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    out: list[str] = []
    for n in sorted(set(layers)):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)
