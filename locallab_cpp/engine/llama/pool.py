"""The shared KV pool's accounts, on the engine thread.

Every slot's sequence lives in one KV cache of ``size`` cells (loading.py: kv_unified True,
n_ctx = the pool), so memory follows use: a slot takes cells only for the tokens it holds.
A request may use up to its per-request cap (n_ctx) while the pool has room. The rules:

- **Admission** (:meth:`KvPool.admits`): a queued job gets a slot only while the cells the
  busy slots hold or will hold (their cache or whole prompt, whichever is longer, plus one
  for the next token) and its own prompt fit the pool. Otherwise it stays queued, in order:
  busy sequences end within their token limit and free their cells.
- **Eviction** (:meth:`KvPool.make_room`): idle slots keep their cache for prefix reuse
  until the cells are wanted; then the least recently used idle slot's cache is cut from
  its end (a shared system prompt at its start is what is most worth keeping), then the
  next one's, and so on.
- **Full**: when growing sequences need more cells than eviction can give, the youngest
  busy sequence (least work lost) ends with ServerBusy, and the others continue
  (:func:`youngest`). The same happens when llama_decode finds no room (return code 1)
  after every idle cache was evicted (:func:`undo_step`).

Counting is by tokens each slot holds. Copies of one prompt (copies.py) share their cells in
llama.cpp, but are counted once per copy here: the pool errs towards evicting early, never
towards a failed llama_decode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp

from locallab_cpp.engine.llama.slots import Slot

POOL_FULL = (
    "The model's KV cache (--kv-pool-tokens) is full with other requests' tokens; "
    "retry shortly, or restart the server with a larger pool or fewer --parallel slots."
)


class KvPool:
    """Cells of the shared KV cache: who holds them, and eviction of idle slots' caches."""

    def __init__(self, size: int, truncate: Callable[[Slot, int], int]) -> None:
        self.size = size
        self._truncate = truncate
        """windows.Windows.truncate: cuts a slot's cache, returns the tokens it kept."""
        self.evicted_total = 0
        """Cached tokens of idle slots dropped to make room (a stats counter)."""
        self._clock = 0

    def touch(self, slot: Slot) -> None:
        """Mark ``slot``'s cache as just used (when its job ends), for LRU eviction."""
        self._clock += 1
        slot.last_used = self._clock

    @staticmethod
    def used(slots: Sequence[Slot]) -> int:
        """Cells the slots' caches hold now, idle ones included."""
        return sum(len(s.kv_tokens) for s in slots)

    @staticmethod
    def committed(slots: Sequence[Slot]) -> int:
        """Cells busy slots hold or will hold once their prompt is in: a waiting copy
        (copies.py) has only its own kept prefix but will get the whole prompt."""
        return sum(
            max(len(s.kv_tokens), len(s.job.inp.prompt_tokens)) + 1
            for s in slots
            if s.job is not None
        )

    def admits(self, slots: Sequence[Slot], prompt_len: int) -> bool:
        """Whether a job with a prompt of ``prompt_len`` tokens may take a slot now (idle
        caches do not count: they are evicted when their cells are wanted)."""
        return self.committed(slots) + prompt_len + 1 <= self.size

    def room_for(self, slots: Sequence[Slot], prompt_len: int) -> int:
        """How many more jobs with this prompt length the pool admits now."""
        return max(0, (self.size - self.committed(slots)) // (prompt_len + 1))

    def make_room(self, slots: Sequence[Slot], need: int) -> bool:
        """Evict idle slots' cached tokens, least recently used first, until ``need`` cells
        are free; whether they are."""
        short = self.used(slots) + need - self.size
        if short <= 0:
            return True
        idle = sorted((s for s in slots if s.job is None and s.kv_tokens), key=_last_used)
        for slot in idle:
            had = len(slot.kv_tokens)
            # A window checkpoint or a refused partial removal may keep less than asked.
            drop = had - self._truncate(slot, had - min(short, had))
            self.evicted_total += drop
            short -= drop
            if short <= 0:
                return True
        return False

    def prefill_budget(self, slots: Sequence[Slot], budget: int) -> tuple[int, int]:
        """Prompt tokens this step may compute (at most ``budget``), evicting idle caches
        for them, and the prompt tokens the prefilling slots have left in all."""
        remaining = sum(
            len(s.job.inp.prompt_tokens) - s.prompt_pos
            for s in slots
            if s.job is not None and s.prefilling
        )
        self.make_room(slots, min(budget, remaining))
        return max(0, min(budget, self.size - self.used(slots))), remaining

    def fit(
        self,
        slots: Sequence[Slot],
        generating: list[Slot],
        started: Sequence[float],
        end: Callable[[Slot], None],
        *,
        force: bool = False,
    ) -> list[Slot]:
        """End (``end``: fail and release) the youngest busy sequences until the pool has a
        cell for each generating one's next token; with ``force``, end one in any case.
        The generating slots left."""
        while force or not self.make_room(slots, len(generating)):
            force = False
            victim = youngest(slots, started)
            if victim is None:
                break
            victim.next_token = None
            end(victim)
            generating = [s for s in generating if s is not victim]
        return generating

    def evict_all_idle(self, slots: Sequence[Slot]) -> int:
        """Drop every idle slot's cache; the tokens dropped."""
        before = self.evicted_total
        self.make_room(slots, self.size + 1)
        return self.evicted_total - before


def youngest(slots: Sequence[Slot], started: Sequence[float]) -> Slot | None:
    """The busy slot whose job was admitted last: the one to end when the pool is full."""
    busy = [s for s in slots if s.job is not None]
    return max(busy, key=lambda s: started[s.seq_id]) if busy else None


Snapshot = dict[Slot, tuple[int, int, int | None]]
"""Per busy slot before a step: cached tokens, prompt position, next token."""


def snapshot(slots: Sequence[Slot]) -> Snapshot:
    """What :func:`undo_step` restores if llama_decode finds no room for the step."""
    return {s: (len(s.kv_tokens), s.prompt_pos, s.next_token) for s in slots if s.job is not None}


def undo_step(memory: Any, before: Snapshot, touched: Sequence[Slot]) -> None:
    """Put the slots in this step's batch back as they were before it, so that the step
    can be built again (llama_decode stores nothing when it finds no room for a batch; the
    removal is there should a partial store ever happen)."""
    for slot in touched:
        if slot not in before:
            continue
        n_kv, prompt_pos, next_token = before[slot]
        llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, n_kv, -1)
        del slot.kv_tokens[n_kv:]
        slot.prompt_pos = prompt_pos
        slot.next_token = next_token
        slot.out_index = -1
        slot.drafts.clear()
        slot.draft_rows.clear()


def _last_used(slot: Slot) -> int:
    return slot.last_used
