"""Copies of one prompt (GenerationInput.n): the expansion into sequences, the engine
thread's bookkeeping in engine/llama/copies.py (no model: llama.cpp calls are recorded),
and the fake engine's handles."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from fakes import FakeFactory
from helpers import make_settings

from locallab_cpp.engine.llama import copies
from locallab_cpp.engine.llama.copies import CopyGroups
from locallab_cpp.engine.llama.slots import Job, Slot
from locallab_cpp.engine.llama.windows import Windows
from locallab_cpp.engine.types import GenerationHandle, GenerationInput, SamplingParams
from locallab_cpp.errors import InvalidRequest
from locallab_cpp.models.registry import Registry

PROMPT = (1, 5, 6, 7)


_NO_WINDOWS = Windows(None, None, n_swa=0, windowed=False)
"""Cuts as for a model without sliding windows (copies.py cuts through windows.py)."""


def test_copies_get_seed_plus_index() -> None:
    inp = GenerationInput(PROMPT, SamplingParams(seed=10), 8, stop=("x",), n=3)
    out = inp.copies()
    assert [c.sampling.seed for c in out] == [10, 11, 12]
    assert all(c.n == 1 and c.prompt_tokens == PROMPT and c.stop == ("x",) for c in out)
    unseeded = GenerationInput(PROMPT, SamplingParams(), 8, n=2).copies()
    assert [c.sampling.seed for c in unseeded] == [None, None]
    single = GenerationInput(PROMPT, SamplingParams(seed=3), 8)
    assert single.copies() == [single]


def test_n_below_one_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        GenerationInput(PROMPT, SamplingParams(), 8, n=0).copies()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _jobs(loop: asyncio.AbstractEventLoop, count: int) -> list[Job]:
    inp = GenerationInput(PROMPT, SamplingParams(do_sample=False), 8)
    return [Job(handle=GenerationHandle(loop=loop), inp=inp, max_tokens=8) for _ in range(count)]


def _assign(slot: Slot, job: Job, keep: int = 0) -> None:
    """What DecodeLoop._assign leaves in a slot, as far as copies.py looks."""
    slot.job = job
    slot.prompt_pos = keep
    del slot.kv_tokens[keep:]
    job.cached_tokens = keep


def test_take_brings_copies_along_up_to_the_room(loop: asyncio.AbstractEventLoop) -> None:
    groups = CopyGroups(None, None, 0, _NO_WINDOWS)
    a0, a1, a2, a3 = group = _jobs(loop, 4)
    other = _jobs(loop, 1)[0]
    pending = deque([*group, other])
    groups.queue(group)
    assert pending.popleft() is a0
    assert groups.take(a0, pending, room=2) == [a1, a2]
    assert list(pending) == [a3, other]
    # The copy left over leads a group of its own (here of one: nothing comes along).
    assert pending.popleft() is a3
    assert groups.take(a3, pending, room=5) == []
    assert list(pending) == [other]


def test_cancelled_copies_are_skipped_and_a_cancelled_leader_passes_on(
    loop: asyncio.AbstractEventLoop,
) -> None:
    groups = CopyGroups(None, None, 0, _NO_WINDOWS)
    a0, a1, a2, a3 = group = _jobs(loop, 4)
    pending = deque(group)
    groups.queue(group)
    a0.handle.cancelled.set()
    a2.handle.cancelled.set()
    groups.drop_queued(pending.popleft())  # what _admit does with a cancelled job
    assert pending.popleft() is a1
    assert groups.take(a1, pending, room=3) == [a3]
    assert not pending


class _Llama:
    """Records seq_cp and seq_rm calls; the logits row is a numpy array."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.copied: list[tuple[int, int, int, int]] = []
        self.removed: list[tuple[int, int, int]] = []
        monkeypatch.setattr(
            llama_cpp,
            "llama_memory_seq_rm",
            lambda _mem, seq, p0, p1: self.removed.append((seq, p0, p1)) or True,
        )
        self.row = np.array([0.0, 3.0, 1.0, 2.0], dtype=np.float32)
        monkeypatch.setattr(
            llama_cpp,
            "llama_memory_seq_cp",
            lambda _mem, src, dst, p0, p1: self.copied.append((src, dst, p0, p1)),
        )
        monkeypatch.setattr(copies, "logits_row", lambda _ctx, _index, _n: self.row)


def test_fan_out_copies_cells_and_samples_each_copy_from_the_original_logits(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    llama = _Llama(monkeypatch)
    groups = CopyGroups(None, None, 4, _NO_WINDOWS)
    src, s1, s2 = Slot(seq_id=0), Slot(seq_id=1), Slot(seq_id=2, kv_tokens=[1, 5, 9])
    j0, j1, j2 = _jobs(loop, 3)
    _assign(src, j0)
    _assign(s1, j1)
    _assign(s2, j2, keep=2)  # a cached prefix of its own, kept: only the rest is copied
    groups.hold(src, [s1, s2])
    assert not s1.prefilling and not s2.prefilling and src.prefilling
    src.kv_tokens[:] = PROMPT  # the source's prefill step ran
    seen: list[tuple[int, list[float]]] = []
    tokens: list[tuple[Slot, int]] = []

    def sample(slot: Slot, _job: Job, _index: int) -> int:
        seen.append((slot.seq_id, llama.row.tolist()))
        token = int(llama.row.argmax())
        llama.row[token] -= 10.0  # sampling may change the row in place (penalties)
        return token

    copied = groups.fan_out(
        src, 3, sample, lambda slot, token, _out: tokens.append((slot, token)), []
    )
    # One shared KV cache: cells from the copy's own prefix on are shared with it.
    assert llama.copied == [(0, 1, 0, -1), (0, 2, 2, -1)]
    # Nothing past the kept prefix in either copy's cache: no cut needed (windows.py).
    assert llama.removed == []
    assert s1.kv_tokens == s2.kv_tokens == list(PROMPT)
    assert (j1.cached_tokens, j2.cached_tokens) == (4, 4)
    assert copied == 4 + 2  # what the cached counter lacked: s2 had counted its 2 already
    # Every copy saw the model's row, and the source will too.
    assert seen == [(1, [0.0, 3.0, 1.0, 2.0]), (2, [0.0, 3.0, 1.0, 2.0])]
    assert llama.row.tolist() == [0.0, 3.0, 1.0, 2.0]
    assert tokens == [(s1, 1), (s2, 1)]
    # Done once: the next step of the source is an ordinary one.
    assert groups.fan_out(src, 0, sample, lambda *_a: None, []) == 0


def test_a_cancelled_waiting_copy_is_left_out(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    llama = _Llama(monkeypatch)
    groups = CopyGroups(None, None, 4, _NO_WINDOWS)
    src, s1, s2 = Slot(seq_id=0), Slot(seq_id=1), Slot(seq_id=2)
    j0, j1, j2 = _jobs(loop, 3)
    for slot, job in ((src, j0), (s1, j1), (s2, j2)):
        _assign(slot, job)
    groups.hold(src, [s1, s2])
    s1.job = None  # released by _drop_cancelled
    src.kv_tokens[:] = PROMPT
    groups.fan_out(src, 0, lambda *_a: 2, lambda *_a: None, [])
    assert llama.copied == [(0, 2, 0, -1)]


def test_a_source_that_leaves_hands_the_prompt_to_its_first_live_copy(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    llama = _Llama(monkeypatch)
    groups = CopyGroups(None, None, 4, _NO_WINDOWS)
    src, s1, s2, s3 = (Slot(seq_id=i) for i in range(4))
    j0, j1, j2, j3 = _jobs(loop, 4)
    for slot, job in ((src, j0), (s1, j1), (s3, j3)):
        _assign(slot, job)
    s2.kv_tokens[:] = [1, 5]
    _assign(s2, j2, keep=2)
    groups.hold(src, [s1, s2, s3])
    src.job = None  # cancelled while prefilling
    s1.job = None  # and so was the first copy
    groups.adopt_orphans()
    assert s2.prefilling and s2.prompt_pos == 2  # computes from what its cache kept
    assert not s3.prefilling
    s2.kv_tokens[:] = PROMPT
    groups.fan_out(s2, 0, lambda *_a: 2, lambda *_a: None, [])
    assert llama.copied == [(2, 3, 0, -1)]
    # A new job in the old source's slot is not mistaken for the source.
    src.job = _jobs(loop, 1)[0]
    assert groups.fan_out(src, 0, lambda *_a: 2, lambda *_a: None, []) == 0


def test_fake_engine_returns_a_handle_per_copy(models_file: Path) -> None:
    registry = Registry.load(models_file)
    spec = registry.get(registry.default_id)
    engine = FakeFactory()(spec, models_file, make_settings(models_file))

    async def run() -> list[str]:
        prompt = tuple(engine.tokenize("hello there"))
        handles = engine.submit(
            [
                GenerationInput(prompt, SamplingParams(seed=1), 8, n=3),
                GenerationInput(prompt, SamplingParams(), 8),
            ]
        )
        return [(await h.result()).text for h in handles]

    assert len(asyncio.run(run())) == 4
    assert [s.sampling.seed for s in engine.seen] == [1, 2, 3, None]
