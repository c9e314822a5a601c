"""The command line: serve flags, --help, and `models list`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from locallab_cpp import cli
from locallab_cpp.cli import SERVE_FLAGS, build_parser, main

FLAGS = ["--host", "--port", "--model", "--n-ctx", "--threads", "--n-gpu-layers"]


def test_serve_flags_parse_to_settings_names_and_types() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--model",
            "beta",
            "--n-ctx",
            "4096",
            "--threads",
            "3",
            "--n-gpu-layers",
            "-1",
            "--parallel",
            "2",
            "--n-batch",
            "256",
            "--queue-size",
            "5",
            "--rate-limit",
            "30.5",
            "--rate-burst",
            "4",
            "--max-body-bytes",
            "1000",
            "--models-file",
            "my.toml",
            "--log-level",
            "debug",
            "--no-model",
        ]
    )
    assert args.command == "serve"
    assert args.host == "0.0.0.0"
    assert args.port == 9000
    assert args.model == "beta"
    assert args.n_ctx == 4096
    assert args.threads == 3
    assert args.n_gpu_layers == -1
    assert args.parallel == 2
    assert args.n_batch == 256
    assert args.queue_size == 5
    assert args.rate_limit == 30.5
    assert args.rate_burst == 4
    assert args.max_body_bytes == 1000
    assert args.models_file == "my.toml"
    assert args.log_level == "debug"
    assert args.no_model is True


def test_absent_serve_flags_are_none() -> None:
    """None means "not given", so env and models.toml values are not overridden."""
    args = build_parser().parse_args(["serve"])
    for _, name, _ in SERVE_FLAGS:
        assert getattr(args, name) is None, name
    assert args.no_model is None


def test_bad_flag_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--port", "eighty"])
    assert info.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_repack_flag_takes_only_its_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["serve", "--repack", "no-amx"]).repack == "no-amx"
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--repack", "maybe"])
    assert info.value.code == 2
    assert "auto" in capsys.readouterr().err


def test_a_command_is_required() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([])
    assert info.value.code == 2


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])
def test_help_mentions_every_serve_flag_and_env_name(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for flag in [*FLAGS, "--no-model"]:
        assert flag in out, flag
    for _, name, _ in SERVE_FLAGS:
        assert f"LOCALLAB_{name.upper()}" in out, name
    assert "LOCALLAB_NO_MODEL" in out
    assert "Default: 8000" in out and "Default: 127.0.0.1" in out


def test_python_dash_m_help() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALLAB_")}
    result = subprocess.run(
        [sys.executable, "-m", "locallab_cpp", "--help"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for flag in FLAGS:
        assert flag in result.stdout
    for env_name in [
        "LOCALLAB_HOST",
        "LOCALLAB_PORT",
        "LOCALLAB_MODEL",
        "LOCALLAB_N_CTX",
        "LOCALLAB_THREADS",
        "LOCALLAB_N_GPU_LAYERS",
    ]:
        assert env_name in result.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "locallab_cpp" in capsys.readouterr().out


def test_serve_with_a_bad_setting_exits_2_before_serving(
    models_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_serving(_settings: object) -> int:
        raise AssertionError("must not start serving")

    monkeypatch.setattr(cli, "_serve", no_serving)
    assert main(["serve", "--port", "70000", "--models-file", str(models_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid setting")


def test_serve_passes_merged_settings(models_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(cli, "_serve", lambda settings: seen.append(settings) or 0)
    monkeypatch.setenv("LOCALLAB_THREADS", "6")
    monkeypatch.setenv("LOCALLAB_PORT", "8500")
    assert main(["serve", "--port", "9100", "--models-file", str(models_file)]) == 0
    [settings] = seen
    assert settings.port == 9100  # the flag beats the environment
    assert settings.threads == 6
    assert settings.models_file == str(models_file)


def test_models_list(models_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--models-file", str(models_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert {"alpha", "beta", "gone"} <= set(rows)
    assert rows["alpha"].rstrip().endswith("yes")
    assert rows["gone"].rstrip().endswith("no")


def test_models_list_with_a_missing_registry_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--models-file", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.toml" in err
    assert str(tmp_path) not in err
