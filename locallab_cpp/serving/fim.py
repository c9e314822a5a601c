"""The one fill-in-the-middle prompt builder: /infill, /v1/completions ``suffix`` and
Ollama's /api/generate ``suffix`` all ask it for their tokens.

Layout (prefix-suffix-middle, the order llama-server's ``format_infill`` uses)::

    [BOS] [extra] <PRE> prefix prompt <SUF> suffix <MID>

``prompt`` is the start of the current line (llama.vim's "middle"): it is written right
after the prefix, so the model continues it. ``extra`` holds other files' chunks
(llama.vim's ``input_extra``). Where the vocabulary has the repository-level tokens
(Qwen2.5-Coder's ``<|repo_name|>`` / ``<|file_sep|>``), it is::

    <REP>myproject\\n <SEP>name\\n text ... <SEP>filename\\n

(the project name and the current file's name are the placeholders llama-server writes:
clients do not send them); otherwise each chunk goes in as plain text after a
``--- name ---`` line. With no chunks there is no extra block at all, so a plain
``suffix`` request gets the classic three-token prompt. Unlike llama-server, BOS (for
models that want one) comes first, before the extra block, where a sequence starts.

A typing user's next request shares this one's tokens up to the edit, which is near the
cursor: the extra block and the prefix come first, so all of them but the last lines are
the same (Qwen's prefix-suffix-middle order puts nothing that changes before the prefix).
A model with full attention reuses its cache up to the first changed token as it is. A
sliding-window model (Gemma 3) can only resume at a window checkpoint, which the engine
takes a few tokens before a prompt's end, after the suffix, past any edit; so the prompt
also names ``checkpoint_at``: CURSOR_CHECKPOINT_BACK tokens before the end of the prefix,
where the engine takes one more checkpoint. An edit in the last lines before the cursor
then computes those lines, the current line and the suffix again, not the whole prompt.

Client text is tokenized with control-token parsing off: code that contains
``<|fim_prefix|>`` cannot forge the layout.

Budget (ours, not llama-server's batch-sized 3:1 cut): the prompt may take
``n_ctx - reserve`` tokens, ``reserve`` being the generation's room (its token limit,
at most half the context). The local context has priority: when prefix + prompt +
suffix do not fit, the suffix keeps at least a quarter of the room (its start: the
text right after the cursor), the prefix the rest (its end: the text right before
it), either taking what the other leaves unused. The extra chunks get what is left,
the latest ones first (llama.vim sends its newest chunks last); a chunk that does not fit
whole is dropped. ``truncated`` says whether anything was cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from locallab_cpp.engine.base import Engine, FimTokens
from locallab_cpp.serving.generation import OFFLOOP_TOKENIZE_CHARS

Tokenize = Callable[[str], list[int]]

CURSOR_CHECKPOINT_BACK = 128
"""Tokens of the prefix before the cursor that a window checkpoint leaves out (about ten
lines of code): an edit within them still resumes from the checkpoint."""

PROJECT_HEADER = "myproject\n"
CURRENT_FILE = "filename"
"""Placeholders of the repository-level layout (clients send neither name)."""


@dataclass(frozen=True, slots=True)
class ExtraChunk:
    """A piece of another file, context for the completion."""

    filename: str
    text: str


@dataclass(frozen=True, slots=True)
class FimPrompt:
    """A built FIM prompt."""

    tokens: tuple[int, ...]
    truncated: bool
    """Whether the budget cut the prefix, the suffix, the prompt or extra chunks."""
    extra_chunks: int
    """How many extra chunks it holds."""
    checkpoint_at: int | None = None
    """Where a typing user's next prompt likely parts from this one, a little before the
    cursor (GenerationInput.checkpoint_at); None for a prompt with no prefix."""


def build(
    fim: FimTokens,
    tokenize: Tokenize,
    *,
    prefix: str,
    suffix: str,
    prompt: str = "",
    extra: Sequence[ExtraChunk] = (),
    budget: int,
) -> FimPrompt:
    """The FIM prompt within ``budget`` tokens (see the module docstring); ``tokenize``
    gives a text's ids without BOS and without control-token parsing."""
    head = [fim.bos] if fim.bos is not None else []
    fixed = len(head) + 3  # PRE, SUF, MID
    room = max(0, budget - fixed)
    prompt_ids = tokenize(prompt) if prompt else []
    prefix_ids = tokenize(prefix) if prefix else []
    suffix_ids = tokenize(suffix) if suffix else []
    truncated = False
    if len(prompt_ids) > room:  # the current line alone overflows: keep its end
        prompt_ids, truncated = prompt_ids[len(prompt_ids) - room :], True
    room -= len(prompt_ids)
    if len(prefix_ids) + len(suffix_ids) > room:
        truncated = True
        suffix_take = min(len(suffix_ids), max(room // 4, room - len(prefix_ids)))
        prefix_take = min(len(prefix_ids), room - suffix_take)
        prefix_ids = prefix_ids[len(prefix_ids) - prefix_take :]
        suffix_ids = suffix_ids[:suffix_take]
    room -= len(prefix_ids) + len(suffix_ids)
    extra_ids, kept = _extra(fim, tokenize, extra, room)
    truncated = truncated or kept < len(extra)
    tokens = (
        *head,
        *extra_ids,
        fim.pre,
        *prefix_ids,
        *prompt_ids,
        fim.suf,
        *suffix_ids,
        fim.mid,
    )
    prefix_start = len(head) + len(extra_ids) + 1  # after PRE
    at = prefix_start + max(0, len(prefix_ids) - CURSOR_CHECKPOINT_BACK) if prefix_ids else None
    return FimPrompt(tokens=tokens, truncated=truncated, extra_chunks=kept, checkpoint_at=at)


def _extra(
    fim: FimTokens, tokenize: Tokenize, extra: Sequence[ExtraChunk], room: int
) -> tuple[list[int], int]:
    """The extra block within ``room`` tokens and how many chunks it holds."""
    if not extra:
        return [], 0
    sep = fim.sep
    opening: list[int] = []
    closing: list[int] = []
    if sep is not None:
        if fim.rep is not None:
            opening = [fim.rep, *tokenize(PROJECT_HEADER)]
        closing = [sep, *tokenize(CURRENT_FILE + "\n")]
    room -= len(opening) + len(closing)
    chunks: list[list[int]] = []
    for chunk in reversed(extra):  # the latest first: they are the ones kept
        if sep is not None:
            ids = [sep, *tokenize(chunk.filename + "\n"), *tokenize(chunk.text)]
        else:
            ids = tokenize(f"--- {chunk.filename} ---\n{chunk.text}\n\n")
        if len(ids) > room:
            break
        room -= len(ids)
        chunks.append(ids)
    if not chunks:
        return [], 0
    body = [token for ids in reversed(chunks) for token in ids]
    return [*opening, *body, *closing], len(chunks)


def budget_of(engine: Engine, max_tokens: int | None) -> int:
    """The prompt's token budget: the slot's context less the generation's room
    (``max_tokens``, at most half the context; a quarter when not given)."""
    n_ctx = engine.info.n_ctx
    reserve = n_ctx // 4 if max_tokens is None else min(max_tokens, n_ctx // 2)
    return max(0, n_ctx - reserve)


def _pre_cut(engine: Engine, text: str, budget: int, *, keep_end: bool) -> str:
    """``text`` cut by characters to what ``budget`` tokens could possibly hold, so a
    megabyte prefix is not tokenized whole only to be trimmed (a token stands for at most
    ``max_token_bytes`` bytes, and a character is at least one byte)."""
    limit = budget * engine.info.max_token_bytes
    if engine.info.max_token_bytes <= 0 or len(text) <= limit:
        return text
    return text[len(text) - limit :] if keep_end else text[:limit]


async def fim_prompt(
    engine: Engine,
    *,
    prefix: str,
    suffix: str,
    prompt: str = "",
    extra: Sequence[ExtraChunk] = (),
    max_tokens: int | None = None,
) -> FimPrompt | None:
    """The FIM prompt for ``engine``'s model, trimmed to its context; None when the model
    has no FIM tokens (the caller answers with its API's 400). Long texts are tokenized
    in a worker thread."""
    fim = engine.fim_tokens()
    if fim is None:
        return None
    budget = budget_of(engine, max_tokens)
    prefix = _pre_cut(engine, prefix, budget, keep_end=True)
    suffix = _pre_cut(engine, suffix, budget, keep_end=False)
    prompt = _pre_cut(engine, prompt, budget, keep_end=True)

    def tokenize(text: str) -> list[int]:
        return engine.tokenize(text, add_bos=False, special=False)

    def run() -> FimPrompt:
        return build(
            fim,
            tokenize,
            prefix=prefix,
            suffix=suffix,
            prompt=prompt,
            extra=extra,
            budget=budget,
        )

    size = len(prefix) + len(suffix) + len(prompt) + sum(len(c.text) for c in extra)
    if size > OFFLOOP_TOKENIZE_CHARS:
        return await asyncio.to_thread(run)
    return run()
