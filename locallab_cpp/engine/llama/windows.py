"""Cutting a slot's KV cache back, and the checkpoints that make it possible for
sliding-window models.

A sliding-window model (Gemma 2/3, and others llama.cpp runs with an ``iswa`` cache) keeps,
in most of its layers, only the last ``n_swa`` positions of each sequence: the context is
opened with ``swa_full`` off (loading.py), so those layers hold a window-sized cache instead
of the whole pool. llama.cpp reuses a sequence's cell as soon as it falls out of that
sequence's window (``llama_kv_cache::find_slot``: a cell held by one sequence and masked for
it is free), so after a sequence has grown past a position, its window *at* that position
is gone: cutting the cache back to it with ``llama_memory_seq_rm`` alone would leave
attention with missing cells. That is what prefix reuse does (a follow-up turn that
diverges, a repeated prompt, eviction from the end of an idle cache).

So every cut goes through :meth:`Windows.truncate`. Without a window it is a plain
``seq_rm``. With one, a cut to the very end is free, and any other cut goes back to the
latest checkpoint at or before the cut: the sliding-window layers' cells of the sequence at
that point, saved with ``llama_state_seq_get_data_ext(..., PARTIAL_ONLY)`` (llama.cpp leaves
out cells outside the window) and put back with ``..._set_data_ext``, while the
full-attention layers are cut with ``seq_rm`` as usual. The tokens between the checkpoint
and the cut are computed again; without a checkpoint the cache starts over.

Checkpoints are taken CHECKPOINT_BEFORE_END tokens before the end of each prompt of at least
MIN_CHECKPOINT_TOKENS tokens (prefill stops there for a step), or where a job resumes when
its cached prefix reaches past that point, and also at the prompt's ``checkpoint_at`` if it
sets one (a FIM prompt: before the cursor, where a typing user's next prompt parts from
this one, which the end checkpoint comes after). A follow-up turn extends the
previous prompt, so it resumes there and recomputes only the previous answer and the new
turn; a repeated prompt resumes a few tokens before its end. At most
:data:`~locallab_cpp.models.sizing.CHECKPOINTS_PER_SLOT` are kept per slot (the earliest
dropped), each at most one window of the sliding-window layers (the estimate counts them).

Rejected drafted guesses (guesses.py) are cut with a plain ``seq_rm``, and safely so: a
drafting step is one micro-batch (at most drafting.ROWS rows), and llama.cpp picks the
cells it may reuse by the sequence's last position *before* that micro-batch, so the cells
the guesses took were already outside the window of every position the cut keeps.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp

from locallab_cpp.engine.llama.slots import Slot, common_prefix
from locallab_cpp.models.sizing import CHECKPOINTS_PER_SLOT

logger = logging.getLogger("locallab_cpp.engine")

_PARTIAL = llama_cpp.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY

MIN_CHECKPOINT_TOKENS = 64
"""Shorter prompts are cheaper to compute again than to checkpoint (and reuse of a prefix
needs PREFIX_REUSE_MIN_TOKENS anyway)."""

CHECKPOINT_BEFORE_END = 4
"""A checkpoint is taken this many tokens before the end of a prompt (llama-server's
offset too): a template that renders the last turn differently once it is history can
still resume there, and the prompt's tail goes to llama.cpp as one multi-token chunk."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The sliding-window layers' cells of one sequence after its first ``n_tokens``."""

    n_tokens: int
    data: bytes | memoryview
    """The cells' bytes, or a view of a cached state's payload (prompt_cache.decode)."""


def usable(tokens: Sequence[int], checkpoints: Sequence[int], prompt: Sequence[int],
           windowed: bool) -> int:  # fmt: skip
    """Prompt tokens a cache holding ``tokens`` (window checkpoints at ``checkpoints``) keeps
    for ``prompt`` once cut to it: the common prefix; with windows, when the prompt parts
    inside the cache, only the latest checkpoint before that point (0 without one). A
    slot's cache and a cached prompt state (prompt_cache.py) follow the same rule."""
    shared = common_prefix(tokens, prompt)
    if not windowed or shared >= len(tokens):
        return shared
    return max((n for n in checkpoints if n <= shared), default=0)


class Windows:
    """Cuts of slots' caches, and their window checkpoints (on the engine thread)."""

    def __init__(self, ctx: Any, memory: Any, *, n_swa: int, windowed: bool) -> None:
        self._ctx = ctx
        self._memory = memory
        self.n_swa = n_swa
        self.enabled = windowed and n_swa > 0
        """Whether the sliding-window layers hold only a window (checkpoints needed)."""
        self._saved: dict[int, list[Checkpoint]] = {}
        self._target: dict[int, list[int]] = {}
        """Per slot: the prompt positions of the checkpoints its job still has to take, in
        order."""
        self.restored = 0
        """Checkpoints put back (a stats counter for tests and logs)."""
        self._for_cache: dict[int, set[int]] = {}
        """Per slot: positions checkpointed for the prompt cache (prompt_cache.py)."""
        self._harvest_too: dict[int, set[int]] = {}
        """Per slot: positions both the slot and the prompt cache wanted."""
        self._harvest: dict[int, list[Checkpoint]] = {}
        """Per slot: the checkpoints taken for the cache, beyond the slot's own few."""

    def checkpoints(self, slot: Slot) -> list[Checkpoint]:
        """The slot's checkpoints, earliest first."""
        return self._saved.get(slot.seq_id, [])

    def begin(self, slot: Slot, for_cache: Sequence[int] = ()) -> None:
        """A job took the slot (its cache already cut): choose where its prefill stops for
        checkpoints, CHECKPOINT_BEFORE_END tokens before the end of a prompt that is long
        enough, or where it resumes if that is later, and at the prompt's ``checkpoint_at``
        when that is still ahead, and at the ``for_cache`` positions still ahead (kept
        for the prompt cache: :meth:`harvest`); take one now if it is here."""
        self._target.pop(slot.seq_id, None)
        self._harvest.pop(slot.seq_id, None)
        self._for_cache.pop(slot.seq_id, None)
        self._harvest_too.pop(slot.seq_id, None)
        if not self.enabled or slot.job is None:
            return
        inp = slot.job.inp
        end = len(inp.prompt_tokens) - CHECKPOINT_BEFORE_END
        if end < MIN_CHECKPOINT_TOKENS:
            return
        wanted = {max(end, slot.prompt_pos)}
        hint = inp.checkpoint_at
        if hint is not None and MIN_CHECKPOINT_TOKENS <= hint < end and hint > slot.prompt_pos:
            wanted.add(hint)
        # The cache's own positions are kept apart (harvest), so that they do not push the
        # slot's few checkpoints out; a position wanted by both goes to both.
        cache = {n for n in for_cache if MIN_CHECKPOINT_TOKENS <= n < end and n > slot.prompt_pos}
        if cache:
            self._for_cache[slot.seq_id] = cache - wanted
            self._harvest_too[slot.seq_id] = cache & wanted
            wanted |= cache
        wanted -= {c.n_tokens for c in self.checkpoints(slot)}
        if not wanted:
            return
        self._target[slot.seq_id] = sorted(wanted)
        self.after_step([slot])

    def pause_at(self, slot: Slot) -> int | None:
        """Prompt position where the slot's prefill stops for a checkpoint (None: none)."""
        targets = self._target.get(slot.seq_id)
        return targets[0] if targets else None

    def after_step(self, slots: list[Slot]) -> None:
        """Take the checkpoints that this step's prefill stopped for."""
        for slot in slots:
            targets = self._target.get(slot.seq_id)
            if not targets:
                continue
            at = targets[0]
            if slot.prompt_pos == at and len(slot.kv_tokens) == at:
                targets.pop(0)
                if not targets:
                    del self._target[slot.seq_id]
                self._save(slot)

    def _save(self, slot: Slot) -> None:
        size = llama_cpp.llama_state_seq_get_size_ext(self._ctx, slot.seq_id, _PARTIAL)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data_ext(
            self._ctx, buf, size, slot.seq_id, _PARTIAL
        )
        if not written:
            logger.warning("could not checkpoint the window of slot %d", slot.seq_id)
            return
        point = Checkpoint(len(slot.kv_tokens), bytes(memoryview(buf)[:written]))
        if point.n_tokens in self._for_cache.get(slot.seq_id, ()):
            self._harvest.setdefault(slot.seq_id, []).append(point)
            return  # the cache's alone
        if point.n_tokens in self._harvest_too.get(slot.seq_id, ()):
            self._harvest.setdefault(slot.seq_id, []).append(point)
        kept = self._saved.setdefault(slot.seq_id, [])
        kept.append(point)
        kept.sort(key=lambda c: c.n_tokens)
        while len(kept) > CHECKPOINTS_PER_SLOT:
            kept.pop(0)

    def reusable(self, slot: Slot, prompt: Sequence[int]) -> int:
        """Prompt tokens the slot's cache would keep for ``prompt``: the common prefix, or
        with windows, when the prompt parts inside the cache, the latest checkpoint before
        that point (0 without one)."""
        positions = [c.n_tokens for c in self.checkpoints(slot)]
        return usable(slot.kv_tokens, positions, prompt, self.enabled)

    def choose(self, free: Sequence[Slot], prompt: Sequence[int], at_least: int) -> Slot:
        """The free slot a job with ``prompt`` takes: the one whose cache keeps the most of
        it (:meth:`reusable`, when at least ``at_least``), else an empty one, else the
        least recently used. By what a cache keeps once cut, not by the raw common prefix:
        a slot sharing only a system prompt it cannot cut back to is no better than an
        empty one, and taking it would throw its own conversation away."""
        reuse = {s.seq_id: self.reusable(s, prompt) for s in free}
        best = max(free, key=lambda s: reuse[s.seq_id])
        if reuse[best.seq_id] >= at_least:
            return best
        return min(free, key=lambda s: (len(s.kv_tokens) > 0, s.last_used))

    def truncate(self, slot: Slot, keep: int) -> int:
        """Cut the slot's cache to at most its first ``keep`` tokens; how many it keeps
        (``keep`` itself without windows, else the latest checkpoint at or before it, or 0)."""
        have = len(slot.kv_tokens)
        keep = max(0, min(keep, have))
        if keep == have:
            return keep
        if not self.enabled:
            if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1):
                keep = self.clear(slot)  # a partial removal can be refused (recurrent caches)
            del slot.kv_tokens[keep:]
            return keep
        usable = [c for c in self.checkpoints(slot) if 0 < c.n_tokens <= keep]
        if not usable:
            return self.clear(slot)
        point = usable[-1]
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, point.n_tokens, -1)
        data = (ctypes.c_uint8 * len(point.data)).from_buffer_copy(point.data)
        if not llama_cpp.llama_state_seq_set_data_ext(
            self._ctx, data, len(point.data), slot.seq_id, _PARTIAL
        ):
            logger.warning("could not restore the window checkpoint of slot %d", slot.seq_id)
            return self.clear(slot)
        self.restored += 1
        del slot.kv_tokens[point.n_tokens :]
        self._saved[slot.seq_id] = usable[-CHECKPOINTS_PER_SLOT:]
        return point.n_tokens

    def harvest(self, slot: Slot) -> list[Checkpoint]:
        """The slot's checkpoints for the prompt cache: those taken for it, and the slot's
        own, earliest first (call when its prompt is computed)."""
        points = {c.n_tokens: c for c in self._harvest.pop(slot.seq_id, [])}
        for c in self.checkpoints(slot):
            points.setdefault(c.n_tokens, c)
        return [points[n] for n in sorted(points)]

    def adopt(self, slot: Slot, checkpoints: Sequence[Checkpoint], upto: int) -> None:
        """The slot's cache was just restored from a cached state that came with these
        checkpoints, and is about to be cut to ``upto`` tokens: the latest few at or
        before that point are the slot's now (the others could serve no cut of it)."""
        if self.enabled:
            kept = sorted((c for c in checkpoints if c.n_tokens <= upto), key=lambda c: c.n_tokens)
            # A view would keep a whole file's payload alive: the slot keeps its own copy.
            self._saved[slot.seq_id] = [
                c if isinstance(c.data, bytes) else Checkpoint(c.n_tokens, bytes(c.data))
                for c in kept[-CHECKPOINTS_PER_SLOT:]
            ]

    def clear(self, slot: Slot) -> int:
        """Empty the slot's cache and drop its checkpoints; 0 (the tokens kept)."""
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.kv_tokens.clear()
        self._saved.pop(slot.seq_id, None)
        self._harvest.pop(slot.seq_id, None)
        return 0
