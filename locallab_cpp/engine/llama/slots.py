"""What the engine thread keeps per sequence (a job) and per slot of the context."""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from llama_cpp import _internals

from locallab_cpp.engine.llama.extras import Extras
from locallab_cpp.engine.llama.logprobs import TokenTrack
from locallab_cpp.engine.types import GenerationHandle, GenerationInput

PENALTY_LAST_N = 64
"""Tokens the repetition penalty looks back over (llama.cpp's default)."""


@dataclass(eq=False)
class Job:
    """A sequence inside the engine thread."""

    handle: GenerationHandle
    inp: GenerationInput
    max_tokens: int
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    text: str = ""
    emitted: int = 0
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    cached_tokens: int = 0
    extras: Extras | None = None
    """Penalties, bias, grammar, logprobs (extras.py); set when the job gets a slot."""
    keep_ids: frozenset[int] = frozenset()
    """Control tokens rendered as text (GenerationInput.keep_special)."""
    admitted_at: float = 0.0
    """time.monotonic() when the job got a slot; ``first_token_at`` when its first token
    was sampled (the prompt computed): Finished.prompt_seconds / generation_seconds."""
    first_token_at: float = 0.0

    @property
    def track(self) -> TokenTrack | None:
        """The tokens' log-probabilities (logprobs.py); None unless the input asks for them."""
        return self.extras.track if self.extras is not None else None


@dataclass(eq=False)
class Slot:
    """One parallel sequence of the context: its seq_id and what its KV cache holds."""

    seq_id: int
    kv_tokens: list[int] = field(default_factory=list)
    job: Job | None = None
    sampler: _internals.LlamaSampler | None = None
    """llama.cpp sampler chain for sampled decoding; None for greedy decoding."""
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=PENALTY_LAST_N))
    """The last tokens (prompt included) that the repetition penalty applies to."""
    prompt_pos: int = 0
    next_token: int | None = None
    """Sampled but not yet decoded; fed at the next step."""
    out_index: int = -1
    """Index in the current batch whose logits this slot samples from, or -1."""
    drafts: list[int] = field(default_factory=list)
    """Guessed next tokens sent in the current batch after ``out_index`` (drafting.py)."""
    draft_rows: list[int] = field(default_factory=list)
    """Batch indices of ``drafts``, whose logits verify them."""
    last_used: int = 0
    """When its last job ended (pool.py's clock): idle caches are evicted oldest first."""

    @property
    def prefilling(self) -> bool:
        """Whether the slot still has prompt tokens to compute."""
        return self.job is not None and self.prompt_pos < len(self.job.inp.prompt_tokens)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token sequences, compared a chunk at a time (the
    engine thread scans every entry at each admission)."""
    n = min(len(a), len(b))
    i, step = 0, 512
    while i < n:
        j = min(n, i + step)
        # tuple(): a list's slice never equals a tuple's, whatever they hold.
        if tuple(a[i:j]) == tuple(b[i:j]):
            i = j
            continue
        while i < j and a[i] == b[i]:
            i += 1
        return i
    return n
