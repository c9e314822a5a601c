"""The model registry: parsing, the default entry, look-ups and where GGUF files are."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ALPHA_BYTES

from locallab_cpp.api.locallab.errors import status_of
from locallab_cpp.errors import ConfigError, ModelNotFound, ModelUnavailable, NotFound
from locallab_cpp.models.registry import ModelSpec, Registry


def test_from_file_parses_entries_in_order(models_file: Path) -> None:
    registry = Registry.from_file(models_file)
    assert [s.id for s in registry] == ["alpha", "beta", "gone"]
    assert len(registry) == 3
    alpha = registry.get("alpha")
    assert alpha.name == "Alpha Test Model"
    assert alpha.description == "The first entry: the default model."
    assert alpha.path == "alpha.gguf"
    assert alpha.chat_format == "chatml"
    assert alpha.parameters == "1M"
    assert alpha.quantization == "Q4_K_M"
    assert alpha.size_bytes == 1000
    assert alpha.context_length == 4096
    assert alpha.source == "file"
    assert registry.get("beta").chat_format is None
    assert "alpha" in registry and "nope" not in registry


def test_default_id_is_the_first_entry(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[models]]\nid = "zeta"\npath = "z.gguf"\n\n[[models]]\nid = "alpha"\npath = "a.gguf"\n'
    )
    assert Registry.from_file(path).default_id == "zeta"


def test_default_id_of_fixture(models_file: Path) -> None:
    assert Registry.from_file(models_file).default_id == "alpha"


def test_sources_and_display_name() -> None:
    assert ModelSpec(id="p", package="pkg").source == "package"
    assert ModelSpec(id="f", path="x.gguf").source == "file"
    assert ModelSpec(id="h", repo="o/r", file="x.gguf").source == "hub"
    assert ModelSpec(id="h", name="Nice").display_name == "Nice"
    assert ModelSpec(id="plain").display_name == "plain"


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[models]]\nid = "a"\npath = "1.gguf"\n\n[[models]]\nid = "a"\npath = "2.gguf"\n'
    )
    with pytest.raises(ConfigError, match="'a' appears twice"):
        Registry.from_file(path)


def test_empty_registry_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text("[server]\nport = 1\n")
    with pytest.raises(ConfigError, match="no models"):
        Registry.from_file(path)


def test_hub_entry_needs_repo_and_file() -> None:
    with pytest.raises(ConfigError, match="needs package, path, or repo and file"):
        Registry([ModelSpec(id="h", repo="owner/repo")], Path("."))


def test_unknown_entry_field_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[[models]]\nid = "a"\npath = "a.gguf"\nsize = 3\n')
    with pytest.raises(ConfigError, match="size"):
        Registry.from_file(path)


def test_missing_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Registry.from_file(tmp_path / "nope.toml")
    assert "nope.toml" in info.value.detail and str(tmp_path) not in info.value.detail
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]\n")
    with pytest.raises(ConfigError, match=r"Invalid model registry bad\.toml"):
        Registry.from_file(bad)


def test_unknown_id_is_model_not_found_404(models_file: Path) -> None:
    registry = Registry.from_file(models_file)
    with pytest.raises(ModelNotFound) as info:
        registry.get("no-such-model")
    assert isinstance(info.value, NotFound)
    assert status_of(info.value) == 404
    assert "no-such-model" in info.value.detail
    assert "/models/available" in info.value.detail


def test_model_not_found_detail_is_printable_and_bounded() -> None:
    detail = ModelNotFound("a\x00b\nc" + "x" * 500).detail
    assert "\x00" not in detail and "\n" not in detail
    assert len(detail) < 300


def test_local_path_of_file_entries(models_file: Path) -> None:
    registry = Registry.from_file(models_file)
    base = models_file.parent
    assert registry.local_path(registry.get("alpha")) == base / "alpha.gguf"
    assert registry.local_path(registry.get("beta")) == base / "models" / "beta.gguf"
    assert registry.local_path(registry.get("gone")) is None


def test_local_path_is_relative_to_the_registry_not_the_cwd(
    models_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    registry = Registry.from_file(Path("..") / models_file.name)
    assert registry.local_path(registry.get("alpha")) == (tmp_path / "alpha.gguf")
    assert registry.local_path(registry.get("alpha")).read_bytes() == ALPHA_BYTES  # type: ignore[union-attr]


def test_absolute_path_entry(tmp_path: Path) -> None:
    gguf = tmp_path / "abs.gguf"
    gguf.write_bytes(b"GGUF")
    sub = tmp_path / "sub"
    sub.mkdir()
    path = sub / "models.toml"
    path.write_text(f'[[models]]\nid = "abs"\npath = "{gguf.as_posix()}"\n')
    registry = Registry.from_file(path)
    assert registry.local_path(registry.get("abs")) == gguf


def test_ensure_local_for_file_entries(models_file: Path) -> None:
    registry = Registry.from_file(models_file)
    assert registry.ensure_local(registry.get("alpha")) == models_file.parent / "alpha.gguf"
    with pytest.raises(ModelUnavailable) as info:
        registry.ensure_local(registry.get("gone"))
    assert status_of(info.value) == 503
    assert "'gone'" in info.value.detail
    assert str(models_file.parent) not in info.value.detail


def test_path_like_ids_never_resolve_to_files(tmp_path: Path) -> None:
    # Files that an id used as a path would reach, next to and above the registry.
    (tmp_path / "x").write_bytes(b"GGUF")
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "a.gguf").write_bytes(b"GGUF")
    path = sub / "models.toml"
    path.write_text('[[models]]\nid = "a"\npath = "a.gguf"\n')
    registry = Registry.from_file(path)
    for model_id in [
        "../x",
        "../x.gguf",
        "./a.gguf",
        "a.gguf",
        str(tmp_path / "x.gguf"),
        str(sub / "a.gguf"),
        "/etc/passwd",
        "~/x",
        "..\\x",
    ]:
        assert model_id not in registry
        with pytest.raises(ModelNotFound):
            registry.get(model_id)


def test_relative_path_escaping_the_registry_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "inside.gguf").write_bytes(b"GGUF")
    (sub / "link.gguf").symlink_to(tmp_path / "outside.gguf")
    path = sub / "models.toml"
    path.write_text(
        '[[models]]\nid = "esc"\npath = "../outside.gguf"\n\n'
        '[[models]]\nid = "link"\npath = "link.gguf"\n\n'
        '[[models]]\nid = "ok"\npath = "inside.gguf"\n'
    )
    registry = Registry.from_file(path)
    assert registry.local_path(registry.get("ok")) == (sub / "inside.gguf").resolve()
    for model_id in ("esc", "link"):
        assert registry.local_path(registry.get(model_id)) is None
        with pytest.raises(ModelUnavailable) as info:
            registry.ensure_local(registry.get(model_id))
        assert str(tmp_path) not in info.value.detail


def test_path_must_name_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[[models]]\nid = "p"\npath = "/etc/passwd"\n')
    with pytest.raises(ConfigError, match=r"\.gguf"):
        Registry.from_file(path)


def test_user_file_overrides_and_adds(tmp_path: Path) -> None:
    base = tmp_path / "base.toml"
    base.write_text(
        '[[models]]\nid = "a"\nname = "A"\npath = "a.gguf"\nsize_bytes = 5\n\n'
        '[[models]]\nid = "b"\nname = "B"\npath = "b.gguf"\n'
    )
    user = tmp_path / "user.toml"
    user.write_text(
        '[[models]]\nid = "c"\npath = "c.gguf"\n\n[[models]]\nid = "a"\ndescription = "mine"\n'
    )
    registry = Registry.from_files([base, user])
    assert [s.id for s in registry] == ["a", "b", "c"]
    a = registry.get("a")
    assert (a.name, a.description, a.path, a.size_bytes) == ("A", "mine", "a.gguf", 5)
    assert registry.default_id == "c"  # the first entry of the last file with models
