"""The prompt cache's side of the engine thread: restoring a cached state into a slot,
choosing where a long prompt takes checkpoints for it, saving a computed prompt.

The decode loop (scheduler.py) calls :meth:`PrefixReuse.restore` when it gives a job a
slot, before the slot's own cache is cut to the prompt; :meth:`targets` when the slot's
window checkpoints are chosen; :meth:`save` when the job's last prompt token has been
decoded. See prompt_cache.py for what is kept and when it is worth restoring.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from locallab_cpp.config import Settings, prompt_cache_folder
from locallab_cpp.engine.llama.loading import LoadedModel
from locallab_cpp.engine.llama.pool import KvPool
from locallab_cpp.engine.llama.prompt_cache import (
    CHECKPOINT_EVERY,
    CHECKPOINTS_BEFORE_END,
    PromptCache,
)
from locallab_cpp.engine.llama.prompt_files import CacheIdentity, PromptFiles, file_sha256
from locallab_cpp.engine.llama.slots import Slot
from locallab_cpp.engine.llama.windows import Windows
from locallab_cpp.models.registry import ModelSpec

logger = logging.getLogger("locallab_cpp.engine")


class PrefixReuse:
    """The prompt cache wired to one context's slots (engine thread only)."""

    def __init__(self, ctx: Any, cache: PromptCache, windows: Windows, pool: KvPool) -> None:
        self._ctx = ctx
        self.cache = cache
        self._windows = windows
        self._pool = pool

    def restore(self, slot: Slot, slots: Sequence[Slot], prompt: Sequence[int]) -> bool:
        """Put into ``slot`` the cached state that gives ``prompt`` the most tokens, when
        it beats what the slot's own cache gives; whether it did."""
        if len(prompt) < self.cache.min_tokens:
            return False
        found = self.cache.best(prompt, self._windows.reusable(slot, prompt))
        if found is None:
            return False
        entry, gain, from_disk = found
        self._windows.clear(slot)
        # The whole entry goes in before the cut to the prompt: room for all of its cells.
        if not self._pool.make_room(slots, len(entry.tokens)):
            return False
        state = entry.state
        # A writable buffer (a state this process saved, a file's payload) is read in place.
        writable = isinstance(state, bytearray) or (
            isinstance(state, memoryview) and not state.readonly
        )
        data = (
            (ctypes.c_uint8 * len(state)).from_buffer(state)
            if writable
            else (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        )
        if not llama_cpp.llama_state_seq_set_data(self._ctx, data, len(entry.state), slot.seq_id):
            logger.warning("could not restore a cached prompt into slot %d", slot.seq_id)
            self._windows.clear(slot)
            return False
        slot.kv_tokens[:] = entry.tokens
        self._windows.adopt(slot, entry.checkpoints, gain)
        self.cache.touch(entry)
        if from_disk:
            self.cache.hits_disk += 1
        else:
            self.cache.hits_memory += 1
        return True

    def targets(self, prompt: Sequence[int]) -> list[int]:
        """Prompt positions where a windowed model's slot checkpoints for the cache: every
        CHECKPOINT_EVERY tokens, CHECKPOINTS_BEFORE_END tokens before the end, and where
        the prompt parts from the cached prompt it shares most with."""
        if not self._windows.enabled or len(prompt) < self.cache.min_tokens:
            return []
        points = list(range(CHECKPOINT_EVERY, len(prompt), CHECKPOINT_EVERY))
        points += [len(prompt) - back for back in CHECKPOINTS_BEFORE_END if back < len(prompt)]
        parting = self.cache.parting(prompt)
        if parting >= self.cache.min_tokens:
            points.append(parting)
        return points

    def save(self, slot: Slot) -> None:
        """The slot's prompt has just been computed: keep its state when it is long
        enough and not cached already."""
        tokens = slot.kv_tokens
        if len(tokens) < self.cache.min_tokens:
            return
        key = tuple(tokens)
        for entry in self.cache.entries:
            if entry.tokens == key:
                self.cache.touch(entry)
                return
        size = int(llama_cpp.llama_state_seq_get_size(self._ctx, slot.seq_id))
        if size <= 0 or size > self.cache.budget:
            return
        # llama.cpp writes into the bytearray the entry keeps: no second copy of the state.
        state = bytearray(size)
        buf = (ctypes.c_uint8 * size).from_buffer(state)
        written = int(llama_cpp.llama_state_seq_get_data(self._ctx, buf, size, slot.seq_id))
        del buf  # a bytearray with an exported buffer cannot be resized or sliced away
        if not written:
            logger.warning("could not copy the state of slot %d for the prompt cache", slot.seq_id)
            return
        if written < size:
            del state[written:]
        self.cache.put(key, state, self._windows.harvest(slot))


def open_cache(
    spec: ModelSpec, path: Path, settings: Settings, loaded: LoadedModel
) -> PromptCache | None:
    """The prompt cache of a model just loaded: in memory with the plan's budget, and in
    ``prompt_cache_folder`` unless ``prompt_cache_disk`` is 0; None when it is off."""
    if loaded.prompt_cache_bytes <= 0:
        return None
    files = None
    if settings.prompt_cache_disk > 0:
        folder = prompt_cache_folder(settings)
        try:
            sha = spec.sha256 or file_sha256(path, memo_dir=folder)
        except OSError as exc:
            logger.warning("prompt cache kept in memory only: cannot hash %s (%s)", path, exc)
        else:
            info = llama_cpp.llama_print_system_info()
            digest = hashlib.sha256(info if isinstance(info, bytes) else str(info).encode())
            identity = CacheIdentity(
                model_sha256=sha.lower(),
                llama_build=f"llama-cpp-python {llama_cpp.__version__} {digest.hexdigest()[:16]}",
                cache_type_k=loaded.cache_types[0],
                cache_type_v=loaded.cache_types[1],
                extra=(("n_swa", str(loaded.n_swa)), ("windowed", str(loaded.windowed))),
            )
            files = PromptFiles(folder, settings.prompt_cache_disk, identity)
            files.start()
    return PromptCache(
        loaded.prompt_cache_bytes,
        settings.prompt_cache_min_tokens,
        windowed=loaded.windowed,
        files=files,
    )
