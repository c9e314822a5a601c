"""The engine interface the HTTP layer depends on.

Controllers (the LocalLab API today, an OpenAI-compatible API later) talk to this
interface only; llama-cpp-python stays behind it, and unit tests hand in a fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from locallab_cpp.engine.types import (
    ChatMessage,
    ChatPrompt,
    GenerationHandle,
    GenerationInput,
    ToolSpec,
)
from locallab_cpp.errors import LocalLabError


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What an open engine serves, for /models/current and /system/info."""

    model_id: str
    name: str
    description: str
    n_ctx: int
    """Context length of each slot, in tokens."""
    n_ctx_train: int
    n_gpu_layers: int
    parallel: int
    size_bytes: int
    chat_format: str | None
    loaded_at: float
    details: Mapping[str, Any] = field(default_factory=dict)
    max_token_bytes: int = 0
    """The longest text one token stands for, in UTF-8 bytes (0: unknown). A text of more
    bytes than this times the context cannot fit, which is known without tokenizing it:
    llama.cpp's special-token parsing takes minutes on megabytes of ``<``."""


@dataclass(frozen=True, slots=True)
class FimTokens:
    """A vocabulary's fill-in-the-middle token ids (serving/fim.py builds the prompt)."""

    pre: int
    suf: int
    mid: int
    rep: int | None = None
    """The repository-name token (Qwen2.5-Coder's ``<|repo_name|>``), if any."""
    sep: int | None = None
    """The file-separator token (``<|file_sep|>``), if any."""
    bos: int | None = None
    """The BOS token when the model wants one at the start of a prompt."""


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Live counters of an engine."""

    active: int
    """Sequences being decoded now."""
    queued: int
    """Sequences waiting for a free slot."""
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    drafted_tokens: int = 0
    """Generated tokens that came from verified prompt-lookup guesses (drafting.py)."""
    evicted_tokens: int = 0
    """Cached prompt tokens of idle slots dropped to make room in the shared KV pool."""
    prompt_cache: dict[str, int] | None = None
    """The prompt cache's figures (prompt_cache.PromptCache.stats); None when it is off."""
    kv_used_tokens: int = 0
    """KV pool cells in use now: running sequences and idle slots' cached prompts."""


class Engine(Protocol):
    """A loaded model that generates text for many sequences at once."""

    @property
    def info(self) -> EngineInfo:
        """Static facts about the loaded model."""
        ...

    @property
    def failed(self) -> bool:
        """Whether the engine broke for good (its decode thread died): it generates no
        more and must be closed (which still frees it) and opened again. The
        ModelManager does that at the next request or load; /health reports it."""
        ...

    def stats(self) -> EngineStats:
        """Live counters; cheap and safe to call from the event loop."""
        ...

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of ``text``: a BOS first when ``add_bos`` and the model wants one;
        control-token texts (``<|im_start|>``) parsed as control tokens only when
        ``special``, else tokenized as plain text (what a client wrote in a chat)."""
        ...

    def chat_prompt(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
    ) -> ChatPrompt:
        """Render a conversation with the model's chat template, ending with the assistant's
        turn opened.

        ``messages`` are :class:`ChatMessage` dicts (plain ``{"role", "content"}`` mappings
        are ones too); they may hold assistant turns with ``tool_calls`` (content None) and "tool"
        turns with results; ``tools`` are the functions the model may call. Both reach the
        template as Hugging Face templates expect them (tool-call arguments as objects).
        What a template cannot show, and everything for a model without a template, is
        written into the text turns instead: the tools into the system turn, calls as
        ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` and results as
        ``<tool_response>...</tool_response>`` in a user turn (chat_tools.py). Raises
        InvalidRequest when the template rejects the conversation.
        """
        ...

    def fim_tokens(self) -> FimTokens | None:
        """The vocabulary's fill-in-the-middle tokens (prefix, suffix, middle, and the
        repository and file separators where it has them); None when it lacks a prefix,
        suffix or middle token (the model was not trained for FIM)."""
        ...

    def submit(self, inputs: Sequence[GenerationInput]) -> list[GenerationHandle]:
        """Queue sequences for generation, all or none.

        An input with ``n`` > 1 stands for ``n`` copies of its prompt
        (:meth:`GenerationInput.copies`: copy i samples with seed + i when a seed is given):
        the handles come in input order, an input's ``n`` copies one after another, so
        OpenAI's ``choices[i]`` is ``handles[i]`` for a single input. Copies that get slots
        together share one computation of the prompt: each but the first reports the whole
        prompt in ``Finished.cached_tokens``. Copies that find no free slot wait at the head
        of the queue and compute the prompt again later (mostly from the cache the earlier
        copies left). Each copy is a sequence of its own: cancelling one leaves the others.

        Must be called on the event loop. Raises PayloadTooLarge when a prompt does not
        fit a slot's context, ServerBusy when the queue cannot take them all and
        InvalidRequest for an ``n`` below 1, a ``grammar`` llama.cpp cannot parse,
        ``logprobs`` outside 0..20 or a ``logit_bias`` on a token the model does not have.
        """
        ...

    def close(self, reason: LocalLabError | None = None) -> None:
        """Stop generating, end in-flight sequences with ``reason`` and free the model.

        Calls made after it begins raise GenerationAborted, and the model is freed only once
        the calls already inside (a tokenization in a worker thread) have returned: no
        thread ever reads a freed model. Blocking: call it from a worker thread.
        """
        ...


class EmbeddingEngine(Protocol):
    """A loaded embedding or rerank model (registry ``kind`` "embedding" or "rerank").

    The model manager holds it like a generating :class:`Engine` (``info``, ``failed``,
    ``stats``, ``close`` mean the same); one thread of its own owns the llama.cpp context
    and packs the inputs of all waiting requests into shared decode batches.
    """

    @property
    def info(self) -> EngineInfo:
        """Static facts about the loaded model."""
        ...

    @property
    def failed(self) -> bool:
        """Whether the engine broke for good (see :attr:`Engine.failed`)."""
        ...

    @property
    def pooling(self) -> str:
        """mean, cls, last, none, or rank (a reranker: each input gives its scores)."""
        ...

    @property
    def dimensions(self) -> int:
        """Length of one pooled vector (the number of scores for rank pooling)."""
        ...

    def stats(self) -> EngineStats:
        """Live counters; cheap and safe to call from the event loop."""
        ...

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of ``text`` (see :meth:`Engine.tokenize`)."""
        ...

    def rerank_tokens(self, query: str, document: str) -> list[int]:
        """The tokens a rerank model scores for ``document`` against ``query``, in the
        layout the model was trained with (its GGUF's rerank template where it has one).
        The query and the document are tokenized as plain text, control-token texts in
        them (``<|im_end|>``) not parsed, so a document cannot forge the layout (the
        template's own control tokens are parsed). Blocking: call it from a worker
        thread."""
        ...

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Pooled vectors (not normalized) of each token list, in input order, decoded
        with other requests' inputs in shared batches. Raises PayloadTooLarge for an input
        longer than the context and InvalidRequest for an empty one."""
        ...

    def close(self, reason: LocalLabError | None = None) -> None:
        """End waiting requests with ``reason`` and free the model (blocking)."""
        ...


Resident = Engine | EmbeddingEngine
"""Any engine the model manager holds: a generating or an embedding/rerank model."""
