"""One decode step's ``llama_batch``: sequences' next tokens, drafted guesses and prompt
chunks, each under its slot's ``seq_id``, with the rows whose logits are wanted."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import llama_cpp

from locallab_cpp.engine.llama.slots import Slot


class StepBatch:
    """The batch the engine thread fills and decodes, one step at a time."""

    def __init__(self, n_batch: int) -> None:
        self.capacity = n_batch
        self.raw = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.n = 0
        self.touched: list[Slot] = []
        """Slots with a token in this step, in the order they were added."""

    def reset(self) -> None:
        """Empty the batch for the next step."""
        self.n = 0
        self.touched.clear()

    def add(self, slot: Slot, token: int, want_logits: bool, draft: bool = False) -> None:
        """Append ``token`` at the end of ``slot``'s cache; remember the row whose logits the
        slot samples from (or, for a drafted guess, verifies with)."""
        if not self.touched or self.touched[-1] is not slot:
            self.touched.append(slot)
        n = self.n
        raw = self.raw
        raw.token[n] = token
        raw.pos[n] = len(slot.kv_tokens)
        raw.n_seq_id[n] = 1
        raw.seq_id[n][0] = slot.seq_id
        raw.logits[n] = want_logits
        slot.kv_tokens.append(token)
        if draft:
            slot.drafts.append(token)
            slot.draft_rows.append(n)
        elif want_logits:
            slot.out_index = n
        self.n = n + 1

    def add_prompt_chunks(
        self,
        slots: Sequence[Slot],
        budget: int,
        pause_at: Callable[[Slot], int | None] = lambda slot: None,
    ) -> None:
        """Fill up to ``budget`` rows with the next prompt tokens of prefilling slots, in slot
        order; the last token of a prompt asks for its logits (the first answer token). A
        slot's chunk ends early at ``pause_at(slot)`` (a window checkpoint, windows.py)."""
        for slot in slots:
            if budget <= 0:
                break
            if not slot.prefilling:
                continue
            assert slot.job is not None
            prompt = slot.job.inp.prompt_tokens
            end = min(len(prompt), slot.prompt_pos + budget)
            pause = pause_at(slot)
            if pause is not None and slot.prompt_pos < pause:
                end = min(end, pause)
            for i in range(slot.prompt_pos, end):
                self.add(slot, prompt[i], i == len(prompt) - 1)
            budget -= end - slot.prompt_pos
            slot.prompt_pos = end

    def drop_touched(self, clear: Callable[[Slot], int]) -> list[Slot]:
        """After a failed llama_decode: clear the caches of the busy slots in this batch
        (their state is unknown) with ``clear`` (windows.Windows.clear, which also drops
        their window checkpoints) and return those slots, for their jobs to be failed."""
        busy = []
        for slot in self.touched:
            slot.drafts.clear()
            slot.draft_rows.clear()
            if slot.job is not None:
                clear(slot)
                busy.append(slot)
        return busy

    def decode(self, ctx: object) -> int:
        """Run llama_decode on what was added; llama.cpp's return code (0: success)."""
        self.raw.n_tokens = self.n
        return int(llama_cpp.llama_decode(ctx, self.raw))

    def free(self) -> None:
        """Release the batch's C memory (after the engine thread has stopped)."""
        llama_cpp.llama_batch_free(self.raw)
