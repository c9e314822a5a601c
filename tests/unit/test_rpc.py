"""RPC workers (engine/llama/rpc.py): endpoints, the loopback rule, reaching a worker, the
addresses a reload reaches a worker under, settings and the registry field."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import msgspec
import pytest

from locallab_cpp.config import load_settings
from locallab_cpp.engine.llama import rpc
from locallab_cpp.engine.llama.devices import _ranges
from locallab_cpp.models.registry import ModelSpec


def test_endpoints_parse_from_repeated_and_comma_separated_values() -> None:
    got = rpc.parse_endpoints(["127.0.0.1:50052,localhost:50053", " [::1]:7 ", "127.0.0.1:50052"])
    assert got == (rpc.Endpoint("127.0.0.1", 50052), rpc.Endpoint("localhost", 50053),
                   rpc.Endpoint("::1", 7))  # fmt: skip
    assert str(got[2]) == "[::1]:7"
    assert all(e.is_loopback for e in got)


@pytest.mark.parametrize("bad", ["127.0.0.1", ":50052", "host:0", "host:70000", "host:port"])
def test_a_bad_endpoint_is_named_in_the_error(bad: str) -> None:
    with pytest.raises(rpc.RpcError) as info:
        rpc.parse_endpoints([bad])
    assert info.value.kind == "config" and bad in str(info.value) and "HOST:PORT" in str(info.value)


def test_remote_workers_need_allow_remote() -> None:
    remote = rpc.parse_endpoints(["192.168.1.20:50052"])
    assert not remote[0].is_loopback
    with pytest.raises(rpc.RpcError) as info:
        rpc.check_policy(remote, allow_remote=False)
    assert "--rpc-allow-remote" in str(info.value) and "authentication" in str(info.value)
    rpc.check_policy(remote, allow_remote=True)  # allowed (with a warning)
    rpc.check_policy(rpc.parse_endpoints(["127.0.0.1:1"]), allow_remote=False)


def test_an_unreachable_worker_says_how_to_start_one() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(rpc.RpcError) as info:
        rpc.reach(rpc.Endpoint("127.0.0.1", port), timeout=2)
    assert info.value.kind == "unreachable"
    assert f"rpc-worker --host 127.0.0.1 --port {port}" in str(info.value)


def test_a_listening_worker_is_reached() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        accepted = threading.Thread(target=lambda: server.accept()[0].close())
        accepted.start()
        rpc.reach(rpc.Endpoint("127.0.0.1", server.getsockname()[1]))
        accepted.join(5)
        assert not accepted.is_alive()


def test_every_spelling_of_an_address_reaches_the_same_host() -> None:
    names = rpc.spellings(rpc.Endpoint("127.0.0.1", 50052))
    assert names[0] == "127.0.0.1:50052" and len(set(names)) == len(names) >= 4
    for name in names:
        host, _, port = name.rpartition(":")
        assert port == "50052"
        assert socket.gethostbyname(host) == "127.0.0.1"  # inet_aton's reading, as llama.cpp's
    assert rpc.spellings(rpc.Endpoint("gpu-box", 1)) == ["gpu-box:1", "gpu-box.:1"]


def test_worker_failures_are_told_from_other_aborts() -> None:
    assert rpc.is_worker_failure("Remote RPC server crashed or returned malformed response")
    assert rpc.is_worker_failure("Failed to connect to 127.0.0.1:5")
    assert not rpc.is_worker_failure("GGML_ASSERT(n_tokens > 0) failed")


def test_a_missing_backend_says_what_to_do(tmp_path: Path) -> None:
    text = rpc.no_backend_message(tmp_path / "libggml-rpc.so")
    assert "scripts/build_rpc.sh" in text and "GGML_RPC=on" in text


def test_settings_and_registry_take_workers() -> None:
    settings = load_settings({"rpc": ["127.0.0.1:1,127.0.0.1:2"], "rpc_allow_remote": True},
                             env={})  # fmt: skip
    assert settings.rpc == ("127.0.0.1:1,127.0.0.1:2",) and settings.rpc_allow_remote
    env = load_settings(env={"LOCALLAB_RPC": "127.0.0.1:1,127.0.0.1:2"})
    assert rpc.parse_endpoints(env.rpc) == rpc.parse_endpoints(settings.rpc)
    spec = msgspec.convert({"id": "big", "repo": "a/b", "file": "b.gguf",
                            "rpc": ["127.0.0.1:50052"]}, ModelSpec)  # fmt: skip
    assert spec.rpc == ("127.0.0.1:50052",)


def test_layer_ranges_read_as_a_person_writes_them() -> None:
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert _ranges([10]) == "10"
