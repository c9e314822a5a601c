"""The engine thread's side of prompt-lookup drafting (drafting.py): how many guesses a
step sends, and which of them the step's logits confirm."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp

from locallab_cpp.engine.llama import drafting, extras
from locallab_cpp.engine.llama.slots import Slot

logger = logging.getLogger("locallab_cpp.engine")


def plain_greedy(slot: Slot) -> bool:
    """Whether the slot's job is greedy with nothing beyond plain sampling (extras.py)."""
    job = slot.job
    return job is not None and slot.sampler is None and extras.plain_greedy(job.inp)


def drafts_this_step(
    controller: drafting.DraftController | None,
    generating: Sequence[Slot],
    decode_only: bool,
    n_ctx_slot: int,
) -> int:
    """Guesses per sequence for this step (0: plain step); see drafting.py.

    Only steps that decode and nothing else draft, so that the controller compares like
    with like.
    """
    if controller is None or not generating or not decode_only:
        return 0
    count = drafting.drafts_per_sequence(len(generating))
    if count == 0:
        return 0
    for slot in generating:
        if not plain_greedy(slot):
            return 0
        if len(slot.kv_tokens) + 1 + count >= n_ctx_slot:
            return 0
    return count if controller.should_draft(len(generating)) else 0


def verify(slot: Slot, index: int, argmax: Callable[[int], int], memory: Any) -> list[int] | None:
    """The tokens greedy decoding gives from this step's rows of ``slot``: its next token
    (arg-max of batch row ``index``), then one more for every guess that was right. Wrong
    guesses leave the KV cache.

    None if llama.cpp would not remove them: the slot's cache then no longer matches its
    tokens, so it is cleared, and the caller ends the sequence with an error rather than
    let it generate on from guesses it never made.
    """
    tokens = [argmax(index)]
    for guess, row in zip(slot.drafts, slot.draft_rows, strict=True):
        if guess != tokens[-1]:
            break
        tokens.append(argmax(row))
    wrong = len(slot.drafts) - (len(tokens) - 1)
    slot.drafts.clear()
    slot.draft_rows.clear()
    if wrong:
        keep = len(slot.kv_tokens) - wrong
        removed = llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, keep, -1)
        del slot.kv_tokens[keep:]
        if not removed:
            logger.error("could not roll back rejected guesses of slot %d", slot.seq_id)
            llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, -1, -1)
            slot.kv_tokens.clear()
            return None
    return tokens
