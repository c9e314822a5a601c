"""Token-level results: each generated token's log-probability and likeliest alternatives,
delivered with the chunk whose text the token produced.

Text reaches the client in chunks that stop strings hold back (text.stop_hold). With
logprobs on, a chunk also ends at a token boundary, so that every chunk's text is exactly
the join of its tokens' texts; a token's text is what it added to the decoded output (the
UTF-8 decoder may hold a partial character back until the next token). See
:class:`locallab_cpp.engine.types.TokenLogprob`.
"""

from __future__ import annotations

from dataclasses import dataclass

from locallab_cpp.engine.llama.sampling import Logits, logsumexp, top_logprobs
from locallab_cpp.engine.llama.text import Pieces
from locallab_cpp.engine.types import TokenAlternative, TokenLogprob

MAX_TOP_LOGPROBS = 20
"""The most alternatives a request may ask for per token (OpenAI's limit)."""


@dataclass(slots=True)
class _Pending:
    token: TokenLogprob
    start: int
    end: int
    """The token's text is ``text[start:end]`` of the job's output."""


class TokenTrack:
    """One sequence's generated tokens with their log-probabilities (engine thread only).

    Per token: :meth:`observe` the logits row before the choice, :meth:`add` once the
    token's text is decoded; :meth:`release` hands over the tokens an emitted chunk holds.
    """

    def __init__(self, n_top: int, pieces: Pieces) -> None:
        self._n_top = n_top
        self._pieces = pieces
        self._lse = 0.0
        self._logit = 0.0
        self._top: tuple[TokenAlternative, ...] = ()
        self._pending: list[_Pending] = []
        self.reported: list[TokenLogprob] = []
        """Every token released so far, in order."""

    def observe(self, logits: Logits) -> None:
        """Read the distribution the next token is chosen from (penalties and bias applied,
        grammar not yet: its mask would renormalize over the allowed tokens only)."""
        self._lse = logsumexp(logits)
        self._top = tuple(
            self._alternative(token, logprob)
            for token, logprob in top_logprobs(logits, self._n_top, self._lse)
        )

    def chosen(self, logits: Logits, token: int) -> None:
        """Note the chosen token's logit (a grammar mask leaves allowed tokens' logits)."""
        self._logit = float(logits[token])

    def _alternative(self, token: int, logprob: float) -> TokenAlternative:
        piece = self._pieces.piece(token)
        return TokenAlternative(token, piece.decode("utf-8", errors="replace"), piece, logprob)

    def add(self, token: int, piece: bytes, start: int, end: int) -> None:
        """The chosen ``token`` added ``text[start:end]`` to the output."""
        entry = TokenLogprob(token, "", piece, self._logit - self._lse, self._top)
        self._pending.append(_Pending(entry, start, end))

    def cut(self, at: int) -> None:
        """A stop string cut the output at ``at``: tokens whose text starts there or later
        are dropped, the one that straddles it keeps the part before."""
        while self._pending and self._pending[-1].start >= at:
            self._pending.pop()
        if self._pending and self._pending[-1].end > at:
            self._pending[-1].end = at

    def release(self, text: str, upto: int, *, final: bool) -> tuple[int, tuple[TokenLogprob, ...]]:
        """The tokens of the chunk ending at ``upto`` (moved back to the last token boundary
        at or before it) and that boundary. ``final``: the output ends; text decoded after
        the last token (the U+FFFD of an incomplete UTF-8 tail) goes to the last token."""
        pending = self._pending
        if final:
            if pending and pending[-1].end < len(text):
                pending[-1].end = len(text)
            count = len(pending)
        else:
            count = 0
            for i, entry in enumerate(pending):
                if entry.end > upto:
                    break
                if entry.end > entry.start:  # an empty token waits for the one completing it
                    count = i + 1
        if count == 0:
            return (upto if final else (pending[0].start if pending else upto)), ()
        out = tuple(
            TokenLogprob(
                e.token.id, text[e.start : e.end], e.token.piece, e.token.logprob, e.token.top
            )
            for e in pending[:count]
        )
        boundary = pending[count - 1].end
        del pending[:count]
        self.reported.extend(out)
        return boundary, out
