"""--ollama-port: a second listener of the same app, for clients that assume Ollama's port
(issue 19, item 7). The setting, its flag and environment name, the sockets `serve` binds
and hands to one uvicorn server, and the access checks on the second port."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from helpers import make_client, make_settings

from locallab_cpp import cli
from locallab_cpp.cli import build_parser, listeners
from locallab_cpp.config import Settings, load_settings
from locallab_cpp.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------- the setting


def test_off_by_default() -> None:
    assert Settings().ollama_port is None
    assert build_parser().parse_args(["serve"]).ollama_port is None


def test_flag_and_environment(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--ollama-port", "11434"])
    assert args.ollama_port == 11434
    none_file = str(tmp_path / "none.toml")
    s = load_settings({"models_file": none_file}, env={"LOCALLAB_OLLAMA_PORT": "11434"})
    assert s.ollama_port == 11434
    # The flag beats the environment; "none" in the environment resets a file's value.
    s = load_settings(
        {"models_file": none_file, "ollama_port": 12000}, env={"LOCALLAB_OLLAMA_PORT": "11434"}
    )
    assert s.ollama_port == 12000
    toml = tmp_path / "models.toml"
    toml.write_text("[server]\nollama_port = 11434\n")
    assert load_settings({"models_file": str(toml)}, env={}).ollama_port == 11434
    s = load_settings({"models_file": str(toml)}, env={"LOCALLAB_OLLAMA_PORT": "none"})
    assert s.ollama_port is None


@pytest.mark.parametrize(
    ("cli_values", "env"),
    [
        ({}, {"LOCALLAB_OLLAMA_PORT": "ollama"}),
        ({}, {"LOCALLAB_OLLAMA_PORT": "70000"}),
        ({"ollama_port": 0}, {}),  # 0 would pick a port no client could be told
        ({"port": 11434, "ollama_port": 11434}, {}),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, cli_values: dict[str, Any], env: dict) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"models_file": str(tmp_path / "x.toml"), **cli_values}, env=env)
    assert info.value.detail.startswith("Invalid setting")


def test_help_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--ollama-port" in out and "LOCALLAB_OLLAMA_PORT" in out and "11434" in out


# ----------------------------------------------------------------------- the sockets


def test_without_it_uvicorn_binds_the_one_port_itself() -> None:
    assert listeners(Settings(port=_free_port())) is None


def test_both_ports_are_bound_but_not_listening_until_served() -> None:
    port, extra = _free_port(), _free_port()
    sockets = listeners(Settings(port=port, ollama_port=extra))
    assert sockets is not None
    try:
        assert [s.getsockname() for s in sockets] == [("127.0.0.1", port), ("127.0.0.1", extra)]
        # Until uvicorn's startup (the model's load) is done, a client is refused at once
        # rather than left waiting in a backlog.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", extra), timeout=2).close()
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_in_use_fails_before_the_model_loads() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            listeners(Settings(port=_free_port(), ollama_port=taken))
        assert f"127.0.0.1:{taken}" in info.value.detail
        assert "in use" in info.value.detail


def test_serve_runs_one_server_on_both_sockets(
    models_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[Any] = []
    monkeypatch.setattr(uvicorn, "Config", lambda app, **kwargs: kwargs)
    monkeypatch.setattr(uvicorn.Server, "__init__", lambda self, config: None)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: runs.append(sockets))
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    port, extra = _free_port(), _free_port()
    assert cli._serve(make_settings(models_file, port=port, ollama_port=extra)) == 0
    [sockets] = runs
    try:
        assert [s.getsockname()[1] for s in sockets] == [port, extra]
    finally:
        for sock in sockets:
            sock.close()
    assert cli._serve(make_settings(models_file, port=port)) == 0
    assert runs[1] is None


# ----------------------------------------------------------------------- access


def test_the_host_check_and_same_origin_accept_the_extra_port(models_file: Path) -> None:
    with make_client(models_file, port=8000, ollama_port=11434) as client:
        for host in ("localhost:11434", "127.0.0.1:11434", "[::1]:11434"):
            assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host
        # A page served on the extra port sends its own origin.
        own = {"Host": "localhost:11434", "Origin": "http://localhost:11434"}
        assert client.post("/generate", json={"prompt": "hi"}, headers=own).status_code == 200
        foreign = {"Host": "evil.example:11434"}
        assert client.get("/v1/models", headers=foreign).status_code == 403


def test_the_start_line_names_both_addresses(
    models_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with make_client(models_file, port=8000, ollama_port=11434):
        pass
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8000" in out and "http://127.0.0.1:11434" in out
