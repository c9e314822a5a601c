"""Copies of one prompt (GenerationInput.n > 1) in the engine thread: the prompt is computed
once, by one copy, and its KV cells are copied to the others.

The copies of a submitted input are queued together. When the first is admitted, the others
take free slots at the same time (as many as are free) and wait there without computing
anything; the first one, the *source*, prefills the prompt. Right after the step that
decoded the source's last prompt token, each waiting copy gets the source's KV cells
(``llama_memory_seq_cp``) and samples its first token, with its own sampler, from the
source's logits row of that step; only then does the source sample its own. From there on
every copy is an ordinary generating sequence. No copy decodes the last prompt token again,
so greedy copies start from the very logits a single run would have.

Every slot shares one KV cache (loading.py: kv_unified True), so llama.cpp's
``llama_memory_seq_cp`` copies no data: it adds the destination's seq_id to the source's
cells in the position range [p0, p1) (llama_kv_cache::seq_cp within one stream, for both
caches of a sliding-window model). It does not clear the destination first, so the
destination keeps the prefix of the prompt its own cache already held (``keep`` at
admission), loses anything after it (llama_memory_seq_rm), and gets the source's cells from
there on. Afterwards its ``kv_tokens`` equal the source's. The copy costs no memory and
next to no time; pool.py still counts the shared cells once per copy (it errs towards
evicting early).

Copies that find no free slot when their group is admitted stay at the head of the queue as
a group of their own and compute the prompt again when they get slots, which usually costs
one token: by then the earlier copies' slots hold the prompt in their cache, and admission
prefers the slot with the longest cached prefix (scheduler.DecodeLoop._admit).

If the source leaves before the copy (cancelled, or its llama_decode failed), its first
waiting copy becomes the source and computes the prompt itself; a waiting copy that is
cancelled just leaves its slot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from locallab_cpp.engine.llama.outbox import Outbox
from locallab_cpp.engine.llama.sampling import logits_row
from locallab_cpp.engine.llama.slots import Job, Slot, common_prefix
from locallab_cpp.engine.llama.windows import Windows

SampleFn = Callable[[Slot, Job, int], int]
"""DecodeLoop._sample: the next token of a slot's job from a batch row's logits."""
OnTokenFn = Callable[[Slot, int, Outbox], None]
"""DecodeLoop._on_token: hand a sampled token to a slot's job."""


@dataclass(eq=False)
class _Waiting:
    slot: Slot
    job: Job
    keep: int
    """Prompt tokens the slot's own cache kept at admission: where it starts should it have
    to compute the prompt itself."""


@dataclass(eq=False)
class _Group:
    source: Slot
    job: Job
    """The source's job (the slot may pass to another job if this one leaves)."""
    waiting: list[_Waiting] = field(default_factory=list)


class CopyGroups:
    """Which queued jobs are copies of one prompt, and which slots wait for a source.

    The queue side (:meth:`queue`, :meth:`drop_queued`, :meth:`take`) is called with the
    decode loop's condition held; the rest on the engine thread only.
    """

    def __init__(self, ctx: Any, memory: Any, n_vocab: int, windows: Windows) -> None:
        self._ctx = ctx
        self._memory = memory
        self._windows = windows
        self._n_vocab = n_vocab
        self._queued: dict[Job, list[Job]] = {}
        """First queued copy -> the other copies, queued right behind it in this order."""
        self._groups: dict[Slot, _Group] = {}
        """Source slot -> its group, until the copy is made."""

    # ----- the queue --------------------------------------------------------------------

    def queue(self, jobs: Sequence[Job]) -> None:
        """Mark ``jobs``, just queued together in this order, as copies of one prompt."""
        if len(jobs) > 1:
            self._queued[jobs[0]] = list(jobs[1:])

    def drop_queued(self, job: Job) -> None:
        """``job`` left the queue without a slot (cancelled): the next copy leads the rest."""
        rest = self._queued.pop(job, None)
        if rest and len(rest) > 1:
            self._queued[rest[0]] = rest[1:]

    def take(self, job: Job, pending: deque[Job], room: int) -> list[Job]:
        """The copies of ``job`` (just taken off the queue) that come along now: up to
        ``room`` live ones, taken off ``pending`` (cancelled ones are dropped on the way).
        Copies beyond ``room`` stay queued, as a group of their own."""
        rest = self._queued.pop(job, None)
        if not rest:
            return []
        taken: list[Job] = []
        used = 0
        for copy in rest:
            if len(taken) >= room:
                break
            pending.remove(copy)  # at the head: the copies were queued right behind ``job``
            used += 1
            if not copy.handle.cancelled.is_set():
                taken.append(copy)
        left = rest[used:]
        if len(left) > 1:
            self._queued[left[0]] = left[1:]
        return taken

    # ----- the slots ----------------------------------------------------------------------

    def hold(self, source: Slot, waiting: Sequence[Slot]) -> None:
        """``source`` computes the prompt for the copies just assigned to ``waiting``, which
        compute nothing until :meth:`fan_out` (they are neither prefilling nor generating)."""
        assert source.job is not None
        group = _Group(source=source, job=source.job)
        for slot in waiting:
            job = slot.job
            assert job is not None
            group.waiting.append(_Waiting(slot=slot, job=job, keep=slot.prompt_pos))
            slot.prompt_pos = len(job.inp.prompt_tokens)
        if group.waiting:
            self._groups[source] = group

    def adopt_orphans(self) -> None:
        """Give each group whose source left before the copy a new source: its first live
        waiting copy, which computes the prompt from what its own slot kept."""
        for slot, group in list(self._groups.items()):
            if slot.job is group.job:
                continue
            del self._groups[slot]
            live = [w for w in group.waiting if w.slot.job is w.job]
            if not live:
                continue
            first, *others = live
            first.slot.prompt_pos = first.keep
            if others:
                self._groups[first.slot] = _Group(first.slot, first.job, others)

    def fan_out(
        self, source: Slot, index: int, sample: SampleFn, on_token: OnTokenFn, outbox: Outbox
    ) -> int:
        """Make the copy, if ``source`` is a source whose last prompt token this step decoded
        (its logits at batch row ``index``): every live waiting copy gets the source's KV
        cells and its first token. Call before the source samples. Returns the prompt
        tokens the copies got without computing them, for the cached-tokens counter."""
        group = self._groups.pop(source, None)
        if group is None or group.job is not source.job:
            return 0
        prompt_len = len(group.job.inp.prompt_tokens)
        row = logits_row(self._ctx, index, self._n_vocab)
        # Sampling may change the row in place (penalties, bias): every copy, and the
        # source after them, starts from the logits the model produced.
        original = row.copy()
        copied = 0
        for w in group.waiting:
            slot, job = w.slot, w.job
            if slot.job is not job:  # cancelled while waiting
                continue
            # The destination's own cells up to the common prefix stay (with a sliding
            # window: up to a point whose window it has, windows.py); the source's cells
            # from there on are shared with it (no stale cell may sit at their positions).
            keep = self._windows.truncate(slot, common_prefix(slot.kv_tokens, source.kv_tokens))
            llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, slot.seq_id, keep, -1)
            slot.kv_tokens[:] = source.kv_tokens
            copied += prompt_len - job.cached_tokens
            job.cached_tokens = prompt_len
            row[:] = original
            on_token(slot, sample(slot, job, index), outbox)
        row[:] = original
        return copied
