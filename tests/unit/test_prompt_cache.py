"""PromptCache's bookkeeping (engine/llama/prompt_cache.py) with made-up states: what an
entry gives a prompt with and without sliding windows, the hard budget under churn, and
the payload the disk store keeps."""

from __future__ import annotations

import random
from pathlib import Path

from locallab_cpp.engine.llama.prompt_cache import (
    MIN_GAIN,
    Entry,
    PromptCache,
    common_prefix,
    decode,
    encode,
)
from locallab_cpp.engine.llama.prompt_files import CacheIdentity, PromptFiles
from locallab_cpp.engine.llama.windows import Checkpoint, usable

MIN = 64


def _tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def test_common_prefix_across_chunk_edges() -> None:
    a = _tokens(2000)
    for cut in (0, 1, 511, 512, 513, 1999):
        b = [*a[:cut], -1, *a[cut + 1 :]]
        assert common_prefix(a, b) == cut
    assert common_prefix(a, a[:700]) == 700
    assert common_prefix([], a) == 0


def test_what_an_entry_gives_with_and_without_windows() -> None:
    entry = _tokens(1000)
    prompt = entry[:800] + [-5] * 50
    assert usable(entry, [256, 512, 996], prompt, windowed=False) == 800
    # With windows: only the latest checkpoint before the parting point...
    assert usable(entry, [256, 512, 996], prompt, windowed=True) == 512
    assert usable(entry, [], prompt, windowed=True) == 0
    # ...or the whole entry when the prompt extends all of it.
    assert usable(entry, [], [*entry, 7, 8], windowed=True) == 1000


def test_best_needs_a_gain_over_the_slot_and_min_tokens() -> None:
    cache = PromptCache(1 << 20, MIN, windowed=False)
    cache.put(_tokens(600), b"s" * 100, ())
    prompt = [*_tokens(600), 9]
    found = cache.best(prompt, floor=0)
    assert found is not None and found[1] == 600 and found[2] is False
    assert cache.best(prompt, floor=600 - MIN_GAIN + 1) is None  # the slot has nearly all
    assert cache.best([*_tokens(MIN - 1), -1], floor=0) is None  # too short a share


def test_the_budget_holds_under_churn_least_recently_used_out() -> None:
    rng = random.Random(7)
    budget = 50_000
    cache = PromptCache(budget, MIN, windowed=True)
    for i in range(300):
        n = rng.randrange(MIN, 400)
        state = b"x" * rng.randrange(1_000, 20_000)
        points = [Checkpoint(k, b"c" * 500) for k in range(MIN, n, 128)]
        cache.put(_tokens(n, start=10_000 * i), state, points)
        assert cache.bytes == sum(e.size for e in cache.entries) <= budget
        if i % 7 == 0 and cache.entries:
            cache.touch(cache.entries[0])  # used: no longer the least recent
    assert cache.dropped > 0 and cache.entries
    cache.put(_tokens(100, start=-1_000), b"y" * (budget + 1), ())  # larger than the budget
    assert all(len(e.state) <= budget for e in cache.entries)


def test_an_extended_prompt_replaces_its_prefix_and_inherits_its_checkpoints() -> None:
    cache = PromptCache(1 << 20, MIN, windowed=True)
    first = _tokens(1000)
    cache.put(first, b"a" * 10, [Checkpoint(512, b"p"), Checkpoint(996, b"q")])
    longer = first + _tokens(300, start=50_000)
    cache.put(longer, b"b" * 10, [Checkpoint(1296, b"r")])
    (entry,) = cache.entries
    assert entry.tokens == tuple(longer)
    assert [c.n_tokens for c in entry.checkpoints] == [512, 996, 1296]
    # A prompt parting inside the first part resumes at the inherited checkpoint.
    found = cache.best([*first[:700], -1], floor=0)
    assert found is not None and found[1] == 512


def test_payload_round_trip_and_rejects() -> None:
    entry = Entry((1, 2, 3), b"state-bytes", (Checkpoint(2, b"cp-a"), Checkpoint(3, b"cp-bb")))
    back = decode(entry.tokens, encode(entry))
    assert back is not None
    assert (back.state, back.checkpoints) == (entry.state, entry.checkpoints)
    payload = encode(entry)
    assert decode(entry.tokens, payload[:-1]) is None  # cut short
    assert decode(entry.tokens, payload + b"x") is None  # trailing bytes
    assert decode(entry.tokens, b"\x02\x00\x00\x00" + payload[4:]) is None  # other version


def test_an_entry_on_disk_is_read_when_it_wins(tmp_path: Path) -> None:
    identity = CacheIdentity("ab" * 32, "build", "f16", "f16")
    files = PromptFiles(tmp_path / "p", 1 << 20, identity)
    files.start()
    try:
        writer = PromptCache(1 << 20, MIN, windowed=False, files=files)
        writer.put(_tokens(500), b"s" * 64, ())
        assert writer.entries  # in memory until its file is written
        assert files.flush(10)
        assert files.has(_tokens(500))
        writer.best(_tokens(400), floor=0)
        assert not writer.entries and writer.stats()["spilled"] == 1  # on disk: memory freed
    finally:
        files.close()
    files = PromptFiles(tmp_path / "p", 1 << 20, identity)
    files.start()
    try:
        assert files.wait_ready(10)
        reader = PromptCache(1 << 20, MIN, windowed=False, files=files)
        assert reader.parting([*_tokens(300), -1]) == 300
        found = reader.best([*_tokens(500), 1], floor=0)
        assert found is not None and found[1] == 500 and found[2] is True
        assert found[0].state == b"s" * 64
        assert not reader.entries  # read from disk again when wanted, not kept twice
    finally:
        files.close()


def test_common_prefix_of_a_list_and_a_tuple() -> None:
    a = _tokens(1500)
    assert common_prefix(a, tuple(a)) == 1500
    assert common_prefix((*tuple(a[:900]), -1), a) == 900


def test_a_queued_disk_write_encodes_the_entry_itself(tmp_path: Path) -> None:
    identity = CacheIdentity("cd" * 32, "build", "f16", "f16")
    files = PromptFiles(tmp_path / "q", 1 << 20, identity)
    files.start()
    try:
        cache = PromptCache(1 << 20, MIN, windowed=True, files=files)
        cache.put(_tokens(300), b"t" * 32, [Checkpoint(100, b"w" * 8)])
        assert files.flush(10)
        (stored,) = files.entries()
        payload = files.load(stored)
        assert payload is not None
        back = decode(stored.tokens, payload)
        assert back is not None and back.state == b"t" * 32
        assert [(c.n_tokens, c.data) for c in back.checkpoints] == [(100, b"w" * 8)]
    finally:
        files.close()


def test_without_a_disk_store_entries_stay_in_memory() -> None:
    cache = PromptCache(1 << 20, MIN, windowed=False)
    cache.put(_tokens(500), b"s" * 64, ())
    assert cache.best([*_tokens(500), 1], floor=0) is not None
    assert len(cache.entries) == 1 and cache.stats()["spilled"] == 0
