"""The access settings (issue #11): --api-key, --allowed-host, --cors-origin and
--max-header-bytes as flags, environment values and refused bad values; the start-up
warnings; and the HTTP parser `serve` picks where the network can reach the server."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from helpers import make_settings

from locallab_cpp import cli
from locallab_cpp.cli import build_parser
from locallab_cpp.config import Settings, load_settings
from locallab_cpp.errors import ConfigError
from locallab_cpp.http import access

ORIGIN = "http://localhost:3000"


def test_settings_from_flags_and_env() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--api-key",
            "k1",
            "--api-key",
            "k2",
            "--allowed-host",
            "llm.lan",
            "--cors-origin",
            ORIGIN,
            "--max-header-bytes",
            "8192",
        ]
    )
    given = {k: v for k, v in vars(args).items() if k in Settings.__struct_fields__}
    settings = load_settings(given, env={})
    assert settings.api_keys == ("k1", "k2")
    assert settings.allowed_hosts == ("llm.lan",)
    assert settings.cors_origins == (ORIGIN,)
    assert settings.max_header_bytes == 8192
    env = {"LOCALLAB_API_KEY": "a, b,", "LOCALLAB_CORS_ORIGINS": ORIGIN + ",https://x.org"}
    settings = load_settings({}, env=env)
    assert settings.api_keys == ("a", "b")
    assert settings.cors_origins == (ORIGIN, "https://x.org")
    assert load_settings({}, env={"LOCALLAB_API_KEYS": "c"}).api_keys == ("c",)


@pytest.mark.parametrize(
    "values",
    [
        {"api_keys": ["has space"]},
        {"api_keys": [""]},
        {"cors_origins": ["localhost:3000"]},
        {"cors_origins": ["http://localhost:3000/app"]},
        {"max_header_bytes": 10},
    ],
)
def test_bad_access_settings_are_refused_at_start(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        load_settings(values, env={})


def test_defaults_are_loopback_and_open_only_to_this_machine() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1" and settings.is_loopback
    assert settings.api_keys == () and settings.cors_origins == ()
    assert access.security_warnings(settings) == []


def test_start_up_warnings() -> None:
    [exposed] = access.security_warnings(Settings(host="0.0.0.0"))
    assert "without an API key" in exposed
    assert access.security_warnings(Settings(host="0.0.0.0", api_keys=("k",))) == []
    assert access.security_warnings(Settings(cors_origins=("*",)))
    assert access.security_warnings(Settings(allowed_hosts=("*",)))


@pytest.mark.parametrize(("host", "http"), [("127.0.0.1", "auto"), ("0.0.0.0", "h11")])
def test_serve_bounds_request_heads_where_the_network_reaches(
    models_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    host: str,
    http: str,
) -> None:
    configs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "Config", lambda app, **kwargs: configs.append(kwargs))
    monkeypatch.setattr(uvicorn.Server, "__init__", lambda self, config: None)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    settings = make_settings(models_file, host=host, max_header_bytes=8192)
    assert cli._serve(settings) == 0
    [config] = configs
    assert config["http"] == http
    assert config["h11_max_incomplete_event_size"] == 8192
    warned = "without an API key" in capsys.readouterr().err
    assert warned == (host == "0.0.0.0")
