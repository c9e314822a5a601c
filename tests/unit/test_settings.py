"""Settings: defaults, precedence (models.toml [server] < LOCALLAB_* < CLI), bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from locallab_cpp.api.locallab.errors import status_of
from locallab_cpp.config import FIELD_NAMES, Settings, field_docs, load_settings
from locallab_cpp.errors import ConfigError


def write_toml(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(f'[[models]]\nid = "m"\npath = "m.gguf"\n\n[server]\n{server}\n')
    return path


def test_defaults() -> None:
    s = Settings()
    assert s.host == "127.0.0.1"
    assert s.port == 8000
    assert s.model is None
    assert s.no_model is False
    assert s.n_ctx == 0
    assert s.threads == 0
    assert s.n_gpu_layers is None
    assert s.parallel == 0  # auto: 4 where the memory allows (models/sizing.py)
    assert s.kv_pool_tokens == 0
    assert s.n_batch == 512
    assert s.queue_size == 128
    assert s.rate_limit == 60.0
    assert s.rate_burst == 10
    assert s.max_body_bytes == 4 * 1024 * 1024
    assert s.log_level == "info"
    assert s.rate_limit_enabled is True
    assert s.is_loopback is True
    assert Path(s.models_file).name == "models.toml"


def test_load_settings_without_any_source_gives_defaults(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    s = load_settings({"models_file": str(missing)}, env={})
    assert s == Settings(models_file=str(missing))


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_precedence_toml_then_env_then_cli(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path, 'port = 8100\nthreads = 3\nparallel = 2\nhost = "0.0.0.0"\nlog_level = "debug"'
    )
    env = {"LOCALLAB_PORT": "8200", "LOCALLAB_THREADS": "5", "LOCALLAB_LOG_LEVEL": "warning"}
    cli = {"models_file": str(path), "port": 8300, "threads": None, "parallel": None}
    s = load_settings(cli, env=env)
    assert s.port == 8300  # CLI beats env and toml
    assert s.threads == 5  # env beats toml; a None CLI value does not count
    assert s.log_level == "warning"
    assert s.parallel == 2  # toml beats the default
    assert s.host == "0.0.0.0"  # toml beats the default
    assert s.is_loopback is False
    assert s.models_file == str(path)


def test_toml_alone_overrides_defaults(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "rate_limit = 0\nqueue_size = 3")
    s = load_settings({"models_file": str(path)}, env={})
    assert s.queue_size == 3
    assert s.rate_limit == 0
    assert s.rate_limit_enabled is False


def test_models_file_from_env(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 8111")
    s = load_settings({}, env={"LOCALLAB_MODELS_FILE": str(path)})
    assert s.models_file == str(path)
    assert s.port == 8111


def test_cli_models_file_beats_env(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    env_file = write_toml(a, "port = 1111")
    cli_file = write_toml(b, "port = 2222")
    s = load_settings({"models_file": str(cli_file)}, env={"LOCALLAB_MODELS_FILE": str(env_file)})
    assert s.port == 2222


def test_env_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLAB_PARALLEL", "7")
    s = load_settings({"models_file": str(tmp_path / "none.toml")})
    assert s.parallel == 7


def test_env_none_resets_optional_fields(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'n_gpu_layers = 10\nmodel = "m"')
    s = load_settings(
        {"models_file": str(path)},
        env={"LOCALLAB_N_GPU_LAYERS": "auto", "LOCALLAB_MODEL": "none"},
    )
    assert s.n_gpu_layers is None
    assert s.model is None


def test_env_types_are_converted(tmp_path: Path) -> None:
    s = load_settings(
        {"models_file": str(tmp_path / "x.toml")},
        env={
            "LOCALLAB_N_GPU_LAYERS": "-1",
            "LOCALLAB_RATE_LIMIT": "1.5",
            "LOCALLAB_NO_MODEL": "yes",
            "LOCALLAB_HOST": "",  # empty means unset
        },
    )
    assert s.n_gpu_layers == -1
    assert s.rate_limit == 1.5
    assert s.no_model is True
    assert s.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("true", True), ("0", False), ("no", False)]
)
def test_env_no_model_booleans(tmp_path: Path, raw: str, expected: bool) -> None:
    s = load_settings({"models_file": str(tmp_path / "x.toml")}, env={"LOCALLAB_NO_MODEL": raw})
    assert s.no_model is expected


@pytest.mark.parametrize(
    ("cli", "env"),
    [
        ({}, {"LOCALLAB_PORT": "eighty"}),
        ({}, {"LOCALLAB_PORT": "70000"}),
        ({"port": -1}, {}),
        ({"parallel": -1}, {}),
        ({"kv_pool_tokens": -1}, {}),
        ({"parallel": 65}, {}),
        ({"n_batch": 16}, {}),
        ({"rate_burst": 0}, {}),
        ({"rate_limit": -1.0}, {}),
        ({"max_body_bytes": 0}, {}),
        ({}, {"LOCALLAB_THREADS": "-2"}),
        ({}, {"LOCALLAB_QUEUE_SIZE": "many"}),
        ({}, {"LOCALLAB_REPACK": "sometimes"}),
    ],
)
def test_bad_values_raise_config_error(tmp_path: Path, cli: dict, env: dict) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"models_file": str(tmp_path / "x.toml"), **cli}, env=env)
    assert info.value.detail.startswith("Invalid setting")


def test_unknown_server_key_is_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "prot = 8000")
    with pytest.raises(ConfigError, match="prot"):
        load_settings({"models_file": str(path)}, env={})


def test_invalid_toml_is_config_error_without_directory(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"models_file": str(path)}, env={})
    assert "models.toml" in info.value.detail
    assert str(tmp_path) not in info.value.detail


def test_server_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text("server = 5\n")
    with pytest.raises(ConfigError, match="table"):
        load_settings({"models_file": str(path)}, env={})


def test_config_error_is_not_a_client_error() -> None:
    assert status_of(ConfigError()) == 500


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("::", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert Settings(host=host).is_loopback is loopback


def test_field_docs_covers_every_field() -> None:
    docs = field_docs()
    assert set(docs) == set(FIELD_NAMES)
    for name, doc in docs.items():
        assert doc.strip(), name
        assert "\n" not in doc and "  " not in doc, name  # folded to one line for --help
    assert "loopback" in docs["host"]


def test_user_config_file_is_used_when_none_is_named(tmp_path: Path) -> None:
    config = tmp_path / "locallab_cpp"
    config.mkdir()
    write_toml(config, "port = 8123")
    s = load_settings({}, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s.port == 8123
    assert s.models_file == str(config / "models.toml")


def test_without_a_user_file_the_package_registry_is_used(tmp_path: Path) -> None:
    from locallab_cpp.config import DEFAULT_MODELS_FILE

    s = load_settings({}, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s.models_file == str(DEFAULT_MODELS_FILE)


def test_repack_defaults_to_auto_and_reads_the_environment(tmp_path: Path) -> None:
    models_file = str(tmp_path / "x.toml")
    assert load_settings({"models_file": models_file}, env={}).repack == "auto"
    s = load_settings({"models_file": models_file}, env={"LOCALLAB_REPACK": "off"})
    assert s.repack == "off"
    s = load_settings(
        {"models_file": models_file, "repack": "no-amx"}, env={"LOCALLAB_REPACK": "off"}
    )
    assert s.repack == "no-amx"
