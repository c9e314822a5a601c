"""The prompt cache's disk store: files checked before a load, a private directory, a
background writer that never blocks the engine thread, a size cap by least recent use."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from locallab_cpp.engine.llama import prompt_files
from locallab_cpp.engine.llama.prompt_files import (
    CacheIdentity,
    PromptFiles,
    StoredPrompt,
    file_sha256,
)
from locallab_cpp.engine.llama.prompt_format import encode_head

IDENTITY = CacheIdentity(
    "ab" * 32, "llama-cpp-python 0.3.36 test", "f16", "f16", (("n_swa", "512"),)
)
TOKENS = tuple(range(1000, 1100))
LOGGER = "locallab_cpp.engine"


@pytest.fixture
def opened() -> Iterator[list[PromptFiles]]:
    """Every store a test starts, closed after it."""
    stores: list[PromptFiles] = []
    yield stores
    for store in stores:
        store.close(timeout=5)


def _start(
    stores: list[PromptFiles],
    directory: Path,
    cap: int = 1 << 20,
    identity: CacheIdentity = IDENTITY,
    **kwargs: int,
) -> PromptFiles:
    store = PromptFiles(directory, cap, identity, **kwargs)
    stores.append(store)
    store.start()
    assert store.wait_ready(10)
    return store


def _file_size(tokens: tuple[int, ...], payload: bytes) -> int:
    return len(encode_head(IDENTITY, tokens, payload)) + len(payload)


def _only(store: PromptFiles) -> StoredPrompt:
    entries = store.entries()
    assert len(entries) == 1
    return entries[0]


def test_round_trip_across_a_restart(tmp_path: Path, opened: list[PromptFiles]) -> None:
    payload = os.urandom(5000)
    first = _start(opened, tmp_path / "cache")
    first.save(list(TOKENS), payload)
    assert first.flush(10)
    assert first.stats["written"] == 1
    first.close()

    second = _start(opened, tmp_path / "cache")
    entry = _only(second)
    assert entry.tokens == TOKENS
    assert entry.size == len(payload)
    assert second.load(entry) == payload
    assert second.stats["loaded"] == 1
    assert second.stats["files"] == 1
    assert second.stats["bytes"] == _file_size(TOKENS, payload)


def test_the_same_prefix_replaces_its_file(tmp_path: Path, opened: list[PromptFiles]) -> None:
    store = _start(opened, tmp_path)
    store.save(TOKENS, b"a" * 100)
    store.save(TOKENS, b"b" * 120)
    store.save(TOKENS[:50], b"c" * 100)
    assert store.flush(10)
    assert len(list(tmp_path.glob("*.lpc"))) == 2
    by_tokens = {e.tokens: e for e in store.entries()}
    assert store.load(by_tokens[TOKENS]) == b"b" * 120
    assert store.load(by_tokens[TOKENS[:50]]) == b"c" * 100


@pytest.mark.parametrize(
    "changed",
    [
        {"model_sha256": "cd" * 32},
        {"llama_build": "llama-cpp-python 0.3.37 test"},
        {"cache_type_k": "q8_0"},
        {"cache_type_v": "q4_0"},
        {"extra": (("n_swa", "1024"),)},
    ],
)
def test_another_identity_is_stale(
    tmp_path: Path,
    opened: list[PromptFiles],
    caplog: pytest.LogCaptureFixture,
    changed: dict[str, object],
) -> None:
    first = _start(opened, tmp_path)
    first.save(TOKENS, b"x" * 100)
    assert first.flush(10)
    first.close()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        other = _start(opened, tmp_path, identity=dataclasses.replace(IDENTITY, **changed))
    assert other.entries() == []
    stale = [r for r in caplog.records if "stale" in r.getMessage()]
    assert len(stale) == 1
    assert stale[0].levelno == logging.INFO
    # Left for the model it belongs to; still counted against the cap.
    assert len(list(tmp_path.glob("*.lpc"))) == 1
    assert other.stats["other_bytes"] > 0


def test_a_corrupted_payload_is_never_returned(
    tmp_path: Path, opened: list[PromptFiles], caplog: pytest.LogCaptureFixture
) -> None:
    first = _start(opened, tmp_path)
    first.save(TOKENS, bytes(range(256)) * 4)
    assert first.flush(10)
    first.close()
    (path,) = tmp_path.glob("*.lpc")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))

    second = _start(opened, tmp_path)
    entry = _only(second)  # the header is whole: the scan cannot tell
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert second.load(entry) is None
    assert any("checksum" in r.getMessage() for r in caplog.records)
    assert not path.exists()
    assert second.entries() == []
    assert second.stats["rejected"] == 1


def test_a_file_truncated_before_the_scan_is_ignored(
    tmp_path: Path, opened: list[PromptFiles], caplog: pytest.LogCaptureFixture
) -> None:
    first = _start(opened, tmp_path)
    first.save(TOKENS, b"y" * 1000)
    assert first.flush(10)
    first.close()
    (path,) = tmp_path.glob("*.lpc")
    os.truncate(path, path.stat().st_size - 1)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        second = _start(opened, tmp_path)
    assert second.entries() == []
    assert any(path.name in r.getMessage() for r in caplog.records)


def test_a_file_truncated_after_the_scan_is_rejected_on_load(
    tmp_path: Path, opened: list[PromptFiles]
) -> None:
    store = _start(opened, tmp_path)
    store.save(TOKENS, b"y" * 1000)
    assert store.flush(10)
    entry = _only(store)
    os.truncate(entry.path, 200)
    assert store.load(entry) is None
    assert not entry.path.exists()
    assert store.entries() == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not a cache file at all",
        b"LLPCACHE\x01\x00\xff\xff\xff\x00",
        b"LLPCACHE" + os.urandom(64),
    ],
)
def test_garbage_files_are_ignored(
    tmp_path: Path, opened: list[PromptFiles], caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    (tmp_path / ("0" * 40 + ".lpc")).write_bytes(garbage)
    (tmp_path / "notes.txt").write_bytes(b"someone else's")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store = _start(opened, tmp_path)
    assert store.entries() == []
    assert any("ignored" in r.getMessage() for r in caplog.records)
    store.save(TOKENS, b"z" * 10)
    assert store.flush(10)
    assert store.load(_only(store)) == b"z" * 10
    assert (tmp_path / "notes.txt").exists()


def test_the_directory_is_created_private(tmp_path: Path, opened: list[PromptFiles]) -> None:
    directory = tmp_path / "a" / "prompts"
    store = _start(opened, directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    store.save(TOKENS, b"p" * 10)
    assert store.flush(10)
    (path,) = directory.glob("*.lpc")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_wider_directory_is_tightened(
    tmp_path: Path, opened: list[PromptFiles], caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "prompts"
    directory.mkdir()
    directory.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store = _start(opened, directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert any("0700" in r.getMessage() for r in caplog.records)
    assert store.enabled


def _assert_off(store: PromptFiles, directory: Path) -> None:
    assert not store.enabled
    assert store.ready()
    store.save(TOKENS, b"q" * 10)
    assert store.flush(1)
    assert store.entries() == []
    assert not list(directory.glob("*.lpc"))


def test_a_symlinked_directory_is_refused(
    tmp_path: Path, opened: list[PromptFiles], caplog: pytest.LogCaptureFixture
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        store = _start(opened, link)
    assert any("link" in r.getMessage() for r in caplog.records)
    _assert_off(store, real)


def test_another_users_directory_is_refused(
    tmp_path: Path,
    opened: list[PromptFiles],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = tmp_path / "prompts"
    directory.mkdir(mode=0o700)
    monkeypatch.setattr(prompt_files.os, "getuid", lambda: directory.stat().st_uid + 1)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        store = _start(opened, directory)
    assert any("another user" in r.getMessage() for r in caplog.records)
    _assert_off(store, directory)


def test_a_zero_cap_turns_it_off(tmp_path: Path, opened: list[PromptFiles]) -> None:
    directory = tmp_path / "prompts"
    store = _start(opened, directory, cap=0)
    assert not directory.exists()
    _assert_off(store, tmp_path)


def test_the_cap_removes_the_least_recently_used(tmp_path: Path, opened: list[PromptFiles]) -> None:
    a, b, c = (tuple(range(n, n + 100)) for n in (0, 1000, 2000))
    payload = b"s" * 4000
    size = _file_size(a, payload)
    first = _start(opened, tmp_path, cap=2 * size + size // 2)
    first.save(a, payload)
    assert first.flush(10)
    time.sleep(0.02)
    first.save(b, payload)
    assert first.flush(10)
    time.sleep(0.02)
    by_tokens = {e.tokens: e for e in first.entries()}
    assert first.load(by_tokens[a]) == payload  # a is now more recent than b
    first.close()
    time.sleep(0.02)

    # Use times are the files' mtimes: the order survives a restart.
    second = _start(opened, tmp_path, cap=2 * size + size // 2)
    second.save(c, payload)
    assert second.flush(10)
    assert {e.tokens for e in second.entries()} == {a, c}
    assert len(list(tmp_path.glob("*.lpc"))) == 2
    assert second.stats["bytes"] <= 2 * size + size // 2


def test_an_oversize_payload_is_not_written(tmp_path: Path, opened: list[PromptFiles]) -> None:
    store = _start(opened, tmp_path, cap=1000)
    store.save(TOKENS, b"o" * 2000)  # the payload alone is over the cap
    store.save(TOKENS[:10], b"o" * 990)  # with its header it is
    assert store.flush(10)
    assert store.entries() == []
    assert not list(tmp_path.glob("*.lpc"))
    assert store.stats["written"] == 0


def test_save_never_blocks_when_the_writer_is_behind(
    tmp_path: Path, opened: list[PromptFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    writing = threading.Event()
    original = PromptFiles._write

    def slow_write(self: PromptFiles, tokens: tuple[int, ...], payload: bytes) -> None:
        writing.set()
        release.wait(30)
        original(self, tokens, payload)

    monkeypatch.setattr(PromptFiles, "_write", slow_write)
    store = _start(opened, tmp_path, max_pending=2)
    store.save((1,) * 40, b"first")
    assert writing.wait(10)  # the writer holds the first write
    started = time.monotonic()
    for n in range(2, 12):
        store.save((n,) * 40, b"later")
    assert time.monotonic() - started < 2.0
    assert store.stats["dropped"] == 8
    assert store.stats["pending"] == 2
    release.set()
    assert store.flush(10)
    # The first (in progress) and the two newest are written; the oldest pending gave way.
    assert {e.tokens[0] for e in store.entries()} == {1, 10, 11}


def test_close_stops_the_thread(tmp_path: Path, opened: list[PromptFiles]) -> None:
    store = _start(opened, tmp_path)
    store.save(TOKENS, b"c" * 10)
    store.close()
    assert not any(t.name == "prompt-files" and t.is_alive() for t in threading.enumerate())
    assert len(list(tmp_path.glob("*.lpc"))) == 1  # queued writes finished first
    store.save(TOKENS[:50], b"d" * 10)  # after close: nothing, and no error
    assert len(list(tmp_path.glob("*.lpc"))) == 1


def test_file_sha256_streams_and_remembers(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    content = os.urandom(3 * (1 << 20) + 123)
    model.write_bytes(content)
    memo_dir = tmp_path / "memo"
    assert file_sha256(model) == hashlib.sha256(content).hexdigest()
    assert file_sha256(model, memo_dir) == hashlib.sha256(content).hexdigest()

    # Unchanged (same size and mtime): the memo's answer, without reading the file.
    (memo_file,) = memo_dir.glob("*.json")
    memo = json.loads(memo_file.read_text())
    (key,) = memo
    assert key == str(model.resolve())
    memo[key]["sha256"] = "remembered"
    memo_file.write_text(json.dumps(memo))
    assert file_sha256(model, memo_dir) == "remembered"

    # Rewritten in place with the same size: a new mtime, hashed again.
    changed = os.urandom(len(content))
    model.write_bytes(changed)
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert file_sha256(model, memo_dir) == hashlib.sha256(changed).hexdigest()
    assert json.loads(memo_file.read_text())[key]["sha256"] == hashlib.sha256(changed).hexdigest()


def test_a_damaged_memo_costs_only_a_rehash(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights")
    memo_dir = tmp_path / "memo"
    memo_dir.mkdir()
    (memo_dir / "model-sha256.json").write_text("{not json")
    assert file_sha256(model, memo_dir) == hashlib.sha256(b"weights").hexdigest()


def test_loads_while_the_writer_replaces_the_file(
    tmp_path: Path, opened: list[PromptFiles]
) -> None:
    versions = (b"1" * 3000, b"2" * 3100)
    store = _start(opened, tmp_path, max_pending=64)
    store.save(TOKENS, versions[0])
    assert store.flush(10)
    entry = _only(store)
    for n in range(40):
        store.save(TOKENS, versions[(n + 1) % 2])
    loaded = [store.load(entry) for _ in range(100)]
    assert store.flush(10)
    # Each load saw one whole version; a file replaced under a reader is never rejected.
    assert all(payload in versions for payload in loaded)
    assert store.stats["rejected"] == 0
    assert store.stats["written"] > 1


def test_a_symlinked_file_is_not_followed(
    tmp_path: Path, opened: list[PromptFiles], caplog: pytest.LogCaptureFixture
) -> None:
    first = _start(opened, tmp_path / "a")
    first.save(TOKENS, b"l" * 100)
    assert first.flush(10)
    first.close()
    (real,) = (tmp_path / "a").glob("*.lpc")
    (tmp_path / "b").mkdir(mode=0o700)
    (tmp_path / "b" / real.name).symlink_to(real)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        second = _start(opened, tmp_path / "b")
    assert second.entries() == []
    assert any("ignored" in r.getMessage() for r in caplog.records)


def test_saving_a_stored_prefix_again_only_marks_it_used(
    tmp_path: Path, opened: list[PromptFiles]
) -> None:
    store = _start(opened, tmp_path)
    store.save(TOKENS, b"k" * 500)
    assert store.flush(10)
    entry = _only(store)
    os.utime(entry.path, (1_000_000, 1_000_000))
    store.save(TOKENS, b"k" * 500)
    assert store.flush(10)
    assert store.stats["written"] == 1
    assert entry.path.stat().st_mtime > time.time() - 600
