"""llama.cpp's RPC backend: a model's layers on other machines' devices (ggml-rpc workers).

llama-cpp-python ignores its ``rpc_servers`` parameter, so the backend is driven through
ggml's device registry here: the RPC backend (built into a llama-cpp-python compiled with
``-DGGML_RPC=on``, or the loadable ``libggml-rpc.so`` that scripts/build_rpc.sh builds from
the same llama.cpp source) gets one registry entry per worker (``ggml_backend_rpc_add_server``),
and a model's load lists the devices it may use (``llama_model_params.devices``).

Two facts of llama.cpp shape the rest:

- A worker that cannot be reached aborts the process inside llama.cpp (GGML_ABORT), so every
  endpoint is reached over TCP before it is attached (:func:`reach`).
- A worker that dies mid-call aborts too, on the thread that talks to it. An abort callback
  (:func:`install_abort_guard`) catches llama.cpp's RPC failure messages: it ends the
  affected engines' requests with a clear error and never returns (returning would let
  llama.cpp call abort()), so that thread stays blocked and the context it served is
  leaked, never freed under another thread. llama.cpp keeps that worker's connection as
  long as the stuck context holds it, so a reload reaches the worker under another
  spelling of its address (:func:`spellings`), a new connection.

RPC has no authentication: workers off the loopback interface need ``--rpc-allow-remote``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import re
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("locallab_cpp.engine")

PLUGIN_NAME = "libggml-rpc.so"
CONNECT_TIMEOUT_S = 3.0
IO_TIMEOUT_S = 120.0
"""A worker that answers nothing for this long counts as lost: llama.cpp itself waits
forever on a worker that hangs without closing its connection."""
_GPU = 1  # GGML_BACKEND_DEVICE_TYPE_GPU: how ggml lists an RPC worker's device
_RPC_FAILURES = ("RPC server", "Failed to connect to", "RPC handshake failed")
"""Pieces of llama.cpp's abort messages for a worker it lost (ggml-rpc.cpp)."""


class RpcError(Exception):
    """An RPC worker or the RPC backend cannot be used; ``kind`` says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        """"config" (a bad or refused endpoint), "unreachable" or "no_backend"."""


@dataclass(frozen=True)
class Endpoint:
    """One worker: ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_endpoints(values: Sequence[str]) -> tuple[Endpoint, ...]:
    """``HOST:PORT`` values (each may hold several, comma-separated); RpcError("config")
    naming the first bad one."""
    found: list[Endpoint] = []
    for value in values:
        for raw in value.split(","):
            text = raw.strip()
            if not text:
                continue
            host, sep, port = text.rpartition(":")
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise RpcError(
                    "config", f"RPC worker {text!r} must be HOST:PORT (e.g. 192.168.1.20:50052)"
                )
            endpoint = Endpoint(host, int(port))
            if endpoint not in found:
                found.append(endpoint)
    return tuple(found)


def check_policy(endpoints: Sequence[Endpoint], allow_remote: bool) -> None:
    """Refuse workers off the loopback interface unless ``allow_remote``; warn when allowed."""
    remote = [str(e) for e in endpoints if not e.is_loopback]
    if remote and not allow_remote:
        raise RpcError(
            "config",
            f"RPC worker {remote[0]} is not on this machine, and llama.cpp's RPC protocol has "
            "no authentication: anyone who reaches the port can use the worker. Start the "
            "server with --rpc-allow-remote to use it, on a network you trust.",
        )
    if remote:
        logger.warning("RPC workers %s are reached without authentication or encryption: "
                       "keep them on a trusted network", ", ".join(remote))  # fmt: skip


def reach(endpoint: Endpoint, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Open and close a TCP connection to the worker; RpcError("unreachable") if it fails."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            pass
    except OSError as exc:
        raise RpcError(
            "unreachable",
            f"RPC worker {endpoint} cannot be reached ({exc.strerror or exc}). Start one there "
            f"with `python -m locallab_cpp rpc-worker --host {endpoint.host} --port "
            f"{endpoint.port}` and try again.",
        ) from None


def spellings(endpoint: Endpoint) -> list[str]:
    """Ways to write the endpoint that reach the same worker, the plain one first."""
    out = [str(endpoint)]
    try:
        address = ipaddress.ip_address(endpoint.host)
    except ValueError:
        out.append(f"{endpoint.host}.:{endpoint.port}")  # the fully qualified name
        return out
    if isinstance(address, ipaddress.IPv4Address):
        a, b, c, d = address.packed
        number = int(address)
        # inet_aton reads all of these as the same address.
        out += [f"{a}.{(b << 16) | (c << 8) | d}:{endpoint.port}",
                f"{a}.{b}.{(c << 8) | d}:{endpoint.port}",
                f"{number}:{endpoint.port}", f"{hex(number)}:{endpoint.port}"]  # fmt: skip
    return out


def default_plugin_path() -> Path:
    """Where scripts/build_rpc.sh puts the RPC backend for the installed llama-cpp-python."""
    import llama_cpp

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "locallab_cpp" / "rpc" / llama_cpp.__version__ / PLUGIN_NAME


def _lib() -> Any:
    import llama_cpp

    lib = llama_cpp.llama_cpp._lib  # libllama: ggml's symbols resolve through it, in the
    # same libggml copy that llama.cpp uses (the wheel ships several copies of the file)
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    signatures: dict[str, tuple[list[Any], Any]] = {
        "ggml_backend_reg_by_name": ([cp], vp), "ggml_backend_load": ([cp], vp),
        "ggml_backend_reg_get_proc_address": ([vp, cp], vp),
        "ggml_backend_register": ([vp], None), "ggml_backend_reg_name": ([vp], cp),
        "ggml_backend_reg_dev_count": ([vp], ctypes.c_size_t),
        "ggml_backend_reg_dev_get": ([vp, ctypes.c_size_t], vp),
        "ggml_backend_dev_count": ([], ctypes.c_size_t),
        "ggml_backend_dev_get": ([ctypes.c_size_t], vp),
        "ggml_backend_dev_type": ([vp], ctypes.c_int), "ggml_backend_dev_name": ([vp], cp),
        "ggml_backend_dev_description": ([vp], cp),
        "ggml_backend_dev_backend_reg": ([vp], vp),
        "ggml_backend_dev_by_type": ([ctypes.c_int], vp),
        "ggml_backend_dev_memory": ([vp, ctypes.POINTER(ctypes.c_size_t),
                                     ctypes.POINTER(ctypes.c_size_t)], None),
        "ggml_set_abort_callback": ([vp], vp),
    }  # fmt: skip
    for name, (args, res) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


_AddServer = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_StartServer = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p))  # fmt: skip


class RpcBackend:
    """The process's RPC backend and the workers attached to it (one per process: ggml's
    device registry is process-wide)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reg: int | None = None
        self._attached: dict[str, int] = {}
        """Spelling -> the registry entry llama.cpp made for it."""
        self._endpoints: dict[str, Endpoint] = {}
        self._broken: set[str] = set()
        """Spellings whose connection a stuck context holds (see the module's docstring)."""

    def registry(self, plugin: str = "") -> int:
        """The RPC backend's registry entry: built in, else loaded from ``plugin`` (or the
        default path); RpcError("no_backend") saying how to get one."""
        with self._lock:
            if self._reg is not None:
                return self._reg
            lib = _lib()
            reg = lib.ggml_backend_reg_by_name(b"RPC")
            if not reg:
                path = Path(plugin) if plugin else default_plugin_path()
                if not path.is_file():
                    raise RpcError("no_backend", no_backend_message(path))
                reg = lib.ggml_backend_load(str(path).encode())
                if not reg:
                    raise RpcError("no_backend", f"llama.cpp could not load the RPC backend "
                                   f"{path}: it must be built from this llama-cpp-python's "
                                   "llama.cpp (run scripts/build_rpc.sh again)")  # fmt: skip
            self._reg = int(reg)
            return self._reg

    def _proc(self, name: str, kind: Any, plugin: str) -> Any:
        address = _lib().ggml_backend_reg_get_proc_address(self.registry(plugin), name.encode())
        if not address:
            raise RpcError("no_backend", f"this llama.cpp's RPC backend has no {name}")
        return kind(address)

    def attach(self, endpoints: Sequence[Endpoint], plugin: str = "") -> list[int]:
        """Reach each worker and attach it (once); the devices they give, in order."""
        lib = _lib()
        add = self._proc("ggml_backend_rpc_add_server", _AddServer, plugin)
        devices: list[int] = []
        for endpoint in endpoints:
            reach(endpoint)
            with self._lock:
                spelling = next((s for s in spellings(endpoint) if s not in self._broken), None)
                if spelling is None:
                    raise RpcError("unreachable", f"RPC worker {endpoint} failed too often in "
                                   "this server's life; restart the server")  # fmt: skip
                reg = self._attached.get(spelling)
                if reg is None:
                    reg = int(add(spelling.encode()) or 0)
                    if not reg:
                        raise RpcError("unreachable", f"RPC worker {endpoint} refused us")
                    lib.ggml_backend_register(reg)
                    self._attached[spelling] = reg
                    self._endpoints[spelling] = endpoint
            for i in range(int(lib.ggml_backend_reg_dev_count(reg))):
                devices.append(int(lib.ggml_backend_reg_dev_get(reg, i)))
        return devices

    def arm_timeouts(self, endpoints: Sequence[Endpoint], seconds: float = IO_TIMEOUT_S) -> int:
        """Give llama.cpp's open connections to these workers send and receive timeouts;
        how many were armed."""
        timeval = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
        armed = 0
        for sock in _sockets_to(endpoints):
            with sock, contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                armed += 1
        return armed

    def cut_connections(self) -> None:
        """Shut down every connection to the attached workers: a worker serves one client
        at a time, so the surviving ones would never answer a reload while the stuck
        context's connections stay open."""
        with self._lock:
            endpoints = list(self._endpoints.values())
        for sock in _sockets_to(endpoints):
            with sock, contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def mark_broken(self) -> None:
        """A worker failed mid-call: every connection now open may be the stuck one."""
        with self._lock:
            self._broken.update(self._attached)

    @property
    def attached(self) -> bool:
        return bool(self._attached)

    def start_server(self, endpoint: str, threads: int, cache_dir: str, plugin: str) -> None:
        """Serve this machine's CPU to RPC clients (blocks; a worker process's main call)."""
        start = self._proc("ggml_backend_rpc_start_server", _StartServer, plugin)
        cpu = _lib().ggml_backend_dev_by_type(0)
        devices = (ctypes.c_void_p * 1)(cpu)
        start(endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, 1, devices)


BACKEND = RpcBackend()


def _sockets_to(endpoints: Sequence[Endpoint]) -> list[socket.socket]:
    """Duplicates of this process's TCP descriptors connected to ``endpoints`` (socket
    options and shutdown act on the socket, whichever descriptor names it)."""
    wanted = set()
    for endpoint in endpoints:
        with contextlib.suppress(OSError):
            for *_, address in socket.getaddrinfo(endpoint.host, endpoint.port,
                                                  type=socket.SOCK_STREAM):  # fmt: skip
                wanted.add((address[0], address[1]))
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    found = []
    for name in os.listdir(folder):
        try:
            sock = socket.fromfd(int(name), socket.AF_INET, socket.SOCK_STREAM)
        except (OSError, ValueError):
            continue
        try:
            peer = sock.getpeername()
        except OSError:
            sock.close()
            continue
        if isinstance(peer, tuple) and peer[:2] in wanted:
            found.append(sock)
        else:
            sock.close()
    return found


def no_backend_message(path: Path) -> str:
    return (
        "This llama-cpp-python has no RPC backend, and none was found at "
        f"{path}. Build one from the same llama.cpp with scripts/build_rpc.sh (a minute), "
        'or reinstall llama-cpp-python with RPC: CMAKE_ARGS="-DGGML_RPC=on" pip install '
        "--force-reinstall --no-cache-dir llama-cpp-python. See docs/rpc.md."
    )


def local_gpus() -> list[int]:
    """This machine's own GPU devices (RPC workers' devices left out)."""
    lib = _lib()
    out = []
    for i in range(int(lib.ggml_backend_dev_count())):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) not in (1, 2):
            continue
        name = lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)) or b""
        if not name.startswith(b"RPC"):
            out.append(int(dev))
    return out


def describe(devices: Sequence[int]) -> list[dict[str, Any]]:
    """Name, description (the worker's address and its device) and memory of devices."""
    lib = _lib()
    out = []
    for dev in devices:
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append({
            "name": (lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
            "description": (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
            "memory_free_bytes": int(free.value), "memory_total_bytes": int(total.value),
        })  # fmt: skip
    return out


# ----- worker failure: the abort callback --------------------------------------------------

_handlers: dict[int, Callable[[str], None]] = {}
_handlers_lock = threading.Lock()
_installed: list[Any] = []  # the callback object, kept alive for the process's life
_AbortCallback = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


def on_worker_failure(key: int, handler: Callable[[str], None] | None) -> None:
    """Call ``handler(message)`` (from llama.cpp's failing thread) when a worker is lost;
    None removes the handler of ``key``."""
    with _handlers_lock:
        if handler is None:
            _handlers.pop(key, None)
        else:
            _handlers[key] = handler


def is_worker_failure(message: str) -> bool:
    return any(piece in message for piece in _RPC_FAILURES)


def _on_abort(raw: bytes | None) -> None:
    message = (raw or b"").decode("utf-8", errors="replace").strip()
    print(message, file=sys.stderr, flush=True)
    message = re.sub(r"^\S+:\d+: ", "", message)  # llama.cpp's source file and line
    if not is_worker_failure(message):
        return  # llama.cpp aborts the process, as it would without this callback
    logger.error("an RPC worker was lost: %s", message)
    BACKEND.mark_broken()
    BACKEND.cut_connections()
    with _handlers_lock:
        handlers = list(_handlers.values())
    for handler in handlers:
        try:
            handler(message)
        except Exception:
            logger.exception("ending the requests of a lost RPC worker failed")
    threading.Event().wait()  # never return: returning means abort()


def install_abort_guard() -> None:
    """Install the abort callback once (see the module's docstring)."""
    if _installed:
        return
    callback = _AbortCallback(_on_abort)
    _installed.append(callback)
    _lib().ggml_set_abort_callback(ctypes.cast(callback, ctypes.c_void_p))


def load_guarded(load: Callable[[], Any], uses_rpc: bool) -> Any:
    """``load()``; with RPC workers it runs on a thread of its own, so that a worker lost
    mid-load (that thread then blocks for good inside llama.cpp) ends the wait with an
    RpcError instead of hanging the caller."""
    if not uses_rpc:
        return load()
    done = threading.Event()
    result: list[Any] = []
    failure: list[BaseException | str] = []

    def run() -> None:
        try:
            result.append(load())
        except BaseException as exc:  # handed to the waiting caller
            failure.append(exc)
        done.set()

    def lost(message: str) -> None:
        failure.append(message)
        done.set()

    thread = threading.Thread(target=run, name="llama-load-rpc", daemon=True)
    key = id(thread)
    on_worker_failure(key, lost)
    try:
        thread.start()
        done.wait()
    finally:
        on_worker_failure(key, None)
    if failure:
        if isinstance(failure[0], BaseException):
            raise failure[0]
        raise RpcError("unreachable", f"an RPC worker was lost while the model loaded "
                       f"({failure[0]}); start it again and load the model again")  # fmt: skip
    return result[0]
