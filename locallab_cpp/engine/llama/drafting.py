"""Prompt-lookup drafting: guess a greedy sequence's next tokens from its own history.

A decode step of a few sequences leaves the batch mostly empty, and on CPUs the logits of
8 rows cost little more than those of 4 (docs/benchmarks.md). Greedy sequences can fill the
spare rows with guesses: the tokens that followed the sequence's last two tokens the
previous time they occurred (text that repeats itself, code edits, quoted passages). The
step computes logits for every guess, and a guess is kept only while it equals the arg-max,
so the output is what plain greedy decoding gives.

Whether it pays depends on the machine and the text, so :class:`DraftController` measures
both ways for each number of sequences and keeps the faster one, trying the other now and
then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

LOOKBACK = 1024
"""Tokens of history searched for the last n-gram (bounds the cost per step)."""
ROWS = 8
"""Batch rows a drafting step fills: llama.cpp's CPU kernels are efficient from 8."""
EXPLORE_EVERY = 16
"""Every this many steps the slower way is tried again, as the text may have changed."""
EMA = 0.2


def propose(history: Sequence[int], count: int) -> list[int]:
    """Up to ``count`` tokens that followed the last bigram (else the last token) of
    ``history`` the most recent time it occurred before."""
    n = len(history)
    if n < 2 or count <= 0:
        return []
    last, prev = history[-1], history[-2]
    unigram = -1
    for j in range(n - 2, max(0, n - LOOKBACK) - 1, -1):
        if history[j] == last:
            if j >= 1 and history[j - 1] == prev:
                return list(history[j + 1 : j + 1 + count])
            if unigram < 0:
                unigram = j
    return list(history[unigram + 1 : unigram + 1 + count]) if unigram >= 0 else []


def drafts_per_sequence(n_sequences: int) -> int:
    """Guesses per sequence so that the step fills about ROWS rows (0: no drafting).

    A sequence decoding alone never drafts: its step is as cheap as a step gets, and it
    keeps greedy output reproducible (a batch's shape changes how llama.cpp rounds, and the
    controller's choice depends on timing). With company the output already depends on it.
    """
    if n_sequences < 2 or n_sequences > ROWS // 2:
        return 0
    return ROWS // n_sequences - 1


@dataclass
class _Rates:
    plain: float | None = None
    drafted: float | None = None
    steps: int = 0


@dataclass
class DraftController:
    """Chooses, per number of sequences in a step, whether drafting is faster."""

    _rates: dict[int, _Rates] = field(default_factory=dict)

    def should_draft(self, n_sequences: int) -> bool:
        """Draft in this step? Measures each way first, then mostly takes the faster."""
        rates = self._rates.setdefault(n_sequences, _Rates())
        rates.steps += 1
        if rates.drafted is None:
            return True
        if rates.plain is None:
            return False
        faster = rates.drafted > rates.plain
        explore = rates.steps % EXPLORE_EVERY == 0
        return faster != explore

    def record(self, n_sequences: int, drafted: bool, tokens: int, seconds: float) -> None:
        """Feed back a step's outcome: tokens produced in ``seconds``."""
        if seconds <= 0:
            return
        rates = self._rates.setdefault(n_sequences, _Rates())
        rate = tokens / seconds
        if drafted:
            rates.drafted = (
                rate if rates.drafted is None else rates.drafted + EMA * (rate - rates.drafted)
            )
        else:
            rates.plain = rate if rates.plain is None else rates.plain + EMA * (rate - rates.plain)
