"""The prompt cache: KV states of long prompts, kept beyond the slots (and across restarts).

A slot keeps its own prefix while it is not evicted (pool.py). Agents need more: a second
session sends the same 16k-token system prompt to another slot, a busy server evicts an
idle session's cache, a restart loses every cache. So when a prompt of at least
``prompt_cache_min_tokens`` has been computed, the engine thread copies that sequence's
whole state (``llama_state_seq_get_data``: every layer's cells of the sequence) into an
:class:`Entry` here, with the sequence's window checkpoints (windows.py), and hands the
same bytes to the disk store (prompt_files.py) when there is one. A later request whose
prompt shares a long prefix with an entry gets the entry put into its slot
(prefix_reuse.py) and computes only the rest.

What an entry can give a prompt (:func:`usable`): the common prefix of the two, where
the model has no sliding-window layers (a cut is a plain ``seq_rm``); with them, the whole
entry when the prompt extends all of it, else only up to the entry's latest window
checkpoint at or before the point where they part. So for a windowed model the engine
checkpoints long prompts every :data:`CHECKPOINT_EVERY` tokens, and exactly where a prompt
parts from the entry it resumed from (the end of a shared system prompt): the next session
sharing it resumes there.

Memory is a hard budget: the entries' bytes (states, checkpoints, tokens) never exceed
it; the least recently used entry goes first, and one larger than the budget is not kept.
An entry whose tokens a new one extends is dropped (the new one holds its cells). With a
disk store, memory holds an entry only until its file is written: from then on it is read
from disk when a prompt wants it (a slot still holds those cells meanwhile, so a copy in
memory as well would be the same state twice). All of it runs on the engine thread.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from locallab_cpp.engine.llama.prompt_files import PromptFiles, StoredPrompt
from locallab_cpp.engine.llama.slots import common_prefix
from locallab_cpp.engine.llama.windows import Checkpoint, usable

logger = logging.getLogger("locallab_cpp.engine")

CHECKPOINT_EVERY = 4096
"""Prompt tokens between the window checkpoints a long prompt takes for the cache: a
request parting from a cached prompt inside it computes at most this many tokens of the
shared part again (and takes a checkpoint where it parts, for the next one)."""

CHECKPOINTS_BEFORE_END = (64, 256, 1024)
"""Also checkpointed for the cache: this many tokens before a long prompt's end. Another
session sharing an agent's system prompt parts from it where the first user message
begins, a short way before the end of the first prompt: it resumes a little before that
point instead of up to CHECKPOINT_EVERY tokens before it."""

MIN_GAIN = 256
"""An entry is restored only when it saves this many tokens more than the slot's own
cache: restoring costs a copy of the whole state."""

_HEAD = struct.Struct("<II")  # payload: version, number of checkpoints
_CHECKPOINT = struct.Struct("<IQ")  # n_tokens, bytes
_STATE = struct.Struct("<Q")
_VERSION = 1


@dataclass(eq=False)
class Entry:
    """One cached prompt: its tokens, the sequence's state after them, its checkpoints."""

    tokens: tuple[int, ...]
    state: bytes | bytearray | memoryview
    """The sequence's state: a bytearray llama.cpp wrote into, or a view of a file's
    payload (read from disk)."""
    checkpoints: tuple[Checkpoint, ...]
    last_used: int = 0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = (
            len(self.state) + sum(len(c.data) for c in self.checkpoints) + 4 * len(self.tokens)
        )


def encode_parts(entry: Entry) -> list[bytes | bytearray | memoryview]:
    """The payload the disk store keeps for ``entry`` (its tokens are the file's key), as
    parts written one after another: the state and checkpoints are not copied."""
    parts: list[bytes | bytearray | memoryview] = [_HEAD.pack(_VERSION, len(entry.checkpoints))]
    parts += [_CHECKPOINT.pack(c.n_tokens, len(c.data)) for c in entry.checkpoints]
    parts.append(_STATE.pack(len(entry.state)))
    parts.append(entry.state)
    parts += [c.data for c in entry.checkpoints]
    return parts


def encode(entry: Entry) -> bytes:
    """:func:`encode_parts` joined."""
    return b"".join(encode_parts(entry))


def decode(tokens: tuple[int, ...], payload: bytes | bytearray) -> Entry | None:
    """The entry a payload holds; None when it is not one this version wrote. Its state and
    checkpoints are views of ``payload``, not copies (a slot copies the few it keeps)."""
    view = memoryview(payload)
    try:
        version, count = _HEAD.unpack_from(payload, 0)
        if version != _VERSION:
            return None
        at = _HEAD.size
        sizes = []
        for _ in range(count):
            sizes.append(_CHECKPOINT.unpack_from(payload, at))
            at += _CHECKPOINT.size
        (n_state,) = _STATE.unpack_from(payload, at)
        at += _STATE.size
        state = view[at : at + n_state]
        at += n_state
        checkpoints = []
        for n_tokens, n_bytes in sizes:
            checkpoints.append(Checkpoint(n_tokens, view[at : at + n_bytes]))
            at += n_bytes
    except struct.error:
        return None
    if at != len(payload) or len(state) != n_state:
        return None
    return Entry(tokens, state, tuple(checkpoints))


class PromptCache:
    """Cached prompt states in host memory under ``budget`` bytes, and on disk (``files``)."""

    def __init__(
        self, budget: int, min_tokens: int, *, windowed: bool, files: PromptFiles | None = None
    ) -> None:
        self.budget = budget
        self.min_tokens = min_tokens
        self.windowed = windowed
        self.files = files
        self._entries: list[Entry] = []
        self._clock = 0
        self.bytes = 0
        self.hits_memory = 0
        self.hits_disk = 0
        self.restored_tokens = 0
        self.saved = 0
        self.dropped = 0
        self.spilled = 0

    @property
    def entries(self) -> list[Entry]:
        """The entries in memory, least recently used first."""
        return sorted(self._entries, key=lambda e: e.last_used)

    def touch(self, entry: Entry) -> None:
        """Mark ``entry`` as just used (restored or saved)."""
        self._clock += 1
        entry.last_used = self._clock

    def best(self, prompt: Sequence[int], floor: int) -> tuple[Entry, int, bool] | None:
        """The entry that gives ``prompt`` the most tokens, how many, and whether it came
        from disk, when that beats ``floor`` (what the slot's own cache gives) by MIN_GAIN
        and reaches min_tokens. A file is read (and kept in memory) only when it would win."""
        self._spill()
        need = max(floor + MIN_GAIN, self.min_tokens)
        found: tuple[Entry, int, bool] | None = None
        for entry in self._entries:
            gain = self._gain(entry, prompt)
            if gain >= need and (found is None or gain > found[1]):
                found = (entry, gain, False)
        if self.files is not None:
            beat = found[1] if found is not None else need - 1
            for stored in self._disk_candidates(prompt, beat):
                read = self._read(stored)
                if read is not None and (gain := self._gain(read, prompt)) > beat:
                    return read, gain, True
        return found

    def _gain(self, entry: Entry, prompt: Sequence[int]) -> int:
        positions = [c.n_tokens for c in entry.checkpoints]
        return usable(entry.tokens, positions, prompt, self.windowed)

    def parting(self, prompt: Sequence[int]) -> int:
        """The longest prefix ``prompt`` shares with any entry (memory or disk): where a
        window checkpoint lets the next prompt like it resume."""
        shared = max((common_prefix(e.tokens, prompt) for e in self._entries), default=0)
        if self.files is not None:
            for stored in self.files.entries():
                shared = max(shared, common_prefix(stored.tokens, prompt))
        return shared

    def put(
        self,
        tokens: Sequence[int],
        state: bytes | bytearray | memoryview,
        checkpoints: Sequence[Checkpoint],
    ) -> None:
        """Keep the state after ``tokens`` (and write it to disk when there is a store).
        Checkpoints of an entry it extends are inherited, and that entry dropped."""
        self._spill()
        key = tuple(tokens)
        own = {c.n_tokens: c for c in checkpoints if c.n_tokens <= len(key)}
        for old in list(self._entries):
            shared = common_prefix(old.tokens, key)
            if shared < self.min_tokens:
                continue
            for c in old.checkpoints:
                if c.n_tokens <= shared:
                    own.setdefault(c.n_tokens, c)
            if shared == len(old.tokens):
                self._remove(old)  # the new entry holds every cell it had
        entry = Entry(key, state, tuple(own[n] for n in sorted(own)))
        if entry.size > self.budget:
            logger.info("prompt of %d tokens not cached: %d bytes exceed the budget",
                        len(key), entry.size)  # fmt: skip
            return
        self._keep(entry)
        self.touch(entry)
        self.saved += 1
        if self.files is not None:
            # Encoded by the writer thread: the queue holds the entry's bytes, not a copy.
            self.files.save(key, lambda: encode_parts(entry), size=entry.size + 64)

    def stats(self) -> dict[str, int]:
        """Figures for /system/info."""
        figures = {
            "entries": len(self._entries),
            "bytes": self.bytes,
            "budget_bytes": self.budget,
            "hits_memory": self.hits_memory,
            "hits_disk": self.hits_disk,
            "restored_tokens": self.restored_tokens,
            "saved": self.saved,
            "dropped": self.dropped,
            "spilled": self.spilled,
        }
        if self.files is not None:
            disk = self.files.stats
            figures["disk_files"] = disk.get("files", 0)
            figures["disk_bytes"] = disk.get("bytes", 0)
        return figures

    def _keep(self, entry: Entry) -> None:
        """Hold ``entry`` (no larger than the budget), the least recently used out first."""
        while self._entries and self.bytes + entry.size > self.budget:
            self._remove(min(self._entries, key=lambda e: e.last_used))
            self.dropped += 1
        self._entries.append(entry)
        self.bytes += entry.size

    def _spill(self) -> None:
        """Drop from memory the entries whose files are written: they load from disk."""
        if self.files is None or not self.files.enabled:
            return
        for entry in [e for e in self._entries if self.files.has(e.tokens)]:
            self._remove(entry)
            self.spilled += 1

    def _remove(self, entry: Entry) -> None:
        self._entries.remove(entry)
        self.bytes -= entry.size

    def _disk_candidates(self, prompt: Sequence[int], beat: int) -> list[StoredPrompt]:
        """Files not in memory whose common prefix with ``prompt`` could beat ``beat``,
        the longest first."""
        assert self.files is not None
        have = {e.tokens for e in self._entries}
        scored = [
            (common_prefix(s.tokens, prompt), s)
            for s in self.files.entries()
            if s.tokens not in have
        ]
        return [s for shared, s in sorted(scored, key=lambda x: -x[0]) if shared > beat]

    def _read(self, stored: StoredPrompt) -> Entry | None:
        assert self.files is not None
        payload = self.files.load(stored)
        if payload is None:
            return None
        entry = decode(stored.tokens, payload)
        if entry is None:
            logger.warning("prompt cache file %s holds no entry of this version", stored.path.name)
            return None
        if entry.size <= self.budget and not self.files.enabled:
            self._keep(entry)
        self.touch(entry)
        return entry
