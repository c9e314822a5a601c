"""Engine sampling extras without a model: penalty and bias math on numpy rows,
log-probabilities, the token/text alignment of logprobs, JSON schema to GBNF, validation."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import pytest

from locallab_cpp.engine.llama import extras
from locallab_cpp.engine.llama.logprobs import TokenTrack
from locallab_cpp.engine.llama.sampling import (
    apply_logit_bias,
    apply_presence_frequency,
    logsumexp,
    top_logprobs,
)
from locallab_cpp.engine.llama.text import Pieces
from locallab_cpp.engine.schema import grammar_for_json_schema
from locallab_cpp.engine.types import GenerationInput, SamplingParams
from locallab_cpp.errors import InvalidRequest


def _row(*values: float) -> Any:
    return np.array(values, dtype=np.float32)


# ----- penalties and bias ---------------------------------------------------------------


def test_presence_and_frequency_follow_openai_formula() -> None:
    logits = _row(1.0, 2.0, 3.0, 4.0)
    apply_presence_frequency(logits, [1, 3, 3, 3], presence=0.5, frequency=0.25)
    # token 1: once -> 0.25 + 0.5; token 3: three times -> 0.75 + 0.5; others untouched.
    np.testing.assert_allclose(logits, [1.0, 1.25, 3.0, 2.75])


def test_penalties_off_or_nothing_generated_leave_the_row() -> None:
    logits = _row(1.0, -2.0)
    apply_presence_frequency(logits, [0, 0, 1], presence=0.0, frequency=0.0)
    apply_presence_frequency(logits, [], presence=1.0, frequency=1.0)
    np.testing.assert_array_equal(logits, [1.0, -2.0])


def test_negative_penalties_encourage_repeats() -> None:
    logits = _row(0.0, 0.0)
    apply_presence_frequency(logits, [1, 1], presence=-1.0, frequency=-0.5)
    np.testing.assert_allclose(logits, [0.0, 2.0])


def test_logit_bias_adds_per_token() -> None:
    logits = _row(5.0, 1.0, 0.0)
    apply_logit_bias(logits, ((0, -100.0), (2, 100.0), (1, 0.5)))
    np.testing.assert_allclose(logits, [-95.0, 1.5, 100.0])
    assert int(logits.argmax()) == 2


# ----- log-probabilities ----------------------------------------------------------------


def test_logsumexp_matches_the_definition_and_is_stable() -> None:
    logits = _row(1.0, 2.0, 3.0)
    assert logsumexp(logits) == pytest.approx(math.log(sum(math.exp(v) for v in (1, 2, 3))))
    big = _row(1000.0, 1000.0)
    assert logsumexp(big) == pytest.approx(1000.0 + math.log(2.0))
    masked = _row(-math.inf, 0.0)
    assert logsumexp(masked) == pytest.approx(0.0)


def test_top_logprobs_sorted_normalized_and_bounded() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=1000).astype(np.float32)
    lse = logsumexp(logits)
    top = top_logprobs(logits, 5, lse)
    assert [t for t, _ in top] == [int(i) for i in np.argsort(-logits)[:5]]
    values = [lp for _, lp in top]
    assert values == sorted(values, reverse=True)
    assert all(lp <= 0 for lp in values)
    assert top[0][0] == int(logits.argmax())
    full = np.exp(logits.astype(np.float64) - lse)
    assert full.sum() == pytest.approx(1.0, rel=1e-5)


def test_top_logprobs_edge_sizes_and_ties() -> None:
    logits = _row(0.0, 2.0, 2.0)
    assert top_logprobs(logits, 0, logsumexp(logits)) == []
    top = top_logprobs(logits, 10, logsumexp(logits))
    assert [t for t, _ in top] == [1, 2, 0]  # ties: lower id first, as argmax picks


# ----- logprobs alignment with the emitted text -------------------------------------------


class _Pieces:
    def piece(self, token: int, special: bool = False) -> bytes:
        return f"<{token}>".encode()


def _track(n_top: int = 2) -> TokenTrack:
    return TokenTrack(n_top, cast(Pieces, _Pieces()))


def _feed(track: TokenTrack, text: str, token: int, added: str) -> str:
    logits = _row(0.0, 1.0, 2.0, 3.0)
    track.observe(logits)
    track.chosen(logits, token)
    track.add(token, added.encode(), len(text), len(text) + len(added))
    return text + added


def test_release_ends_chunks_at_token_boundaries() -> None:
    track = _track()
    text = _feed(track, "", 3, "Hel")
    text = _feed(track, text, 2, "lo")
    # A stop string holds back the last two characters: the chunk ends where "Hel" ends.
    upto, tokens = track.release(text, len(text) - 2, final=False)
    assert upto == 3
    assert [(t.id, t.text) for t in tokens] == [(3, "Hel")]
    upto, tokens = track.release(text, len(text), final=True)
    assert upto == 5
    assert [(t.id, t.text) for t in tokens] == [(2, "lo")]
    assert "".join(t.text for t in track.reported) == text


def test_release_reports_logprobs_and_alternatives() -> None:
    track = _track(n_top=2)
    _feed(track, "", 1, "x")
    _, [token] = track.release("x", 1, final=True)
    lse = math.log(sum(math.exp(v) for v in range(4)))
    assert token.logprob == pytest.approx(1.0 - lse)
    assert [(a.id, a.text, a.piece) for a in token.top] == [(3, "<3>", b"<3>"), (2, "<2>", b"<2>")]
    assert token.top[0].logprob == pytest.approx(3.0 - lse)


def test_partial_utf8_token_travels_with_the_token_completing_it() -> None:
    track = _track()
    text = _feed(track, "", 1, "")  # first byte of a two-byte character: decodes to nothing
    upto, tokens = track.release(text, len(text), final=False)
    assert (upto, tokens) == (0, ())
    text = _feed(track, text, 2, "é")
    upto, tokens = track.release(text, len(text), final=False)
    assert upto == 1
    assert [(t.id, t.text) for t in tokens] == [(1, ""), (2, "é")]


def test_final_flush_text_goes_to_the_last_token() -> None:
    track = _track()
    text = _feed(track, "", 1, "a")
    text = _feed(track, text, 2, "")  # an incomplete character at the end...
    text += "\ufffd"  # ...that the decoder's final flush turns into U+FFFD
    _, tokens = track.release(text, len(text), final=True)
    assert [(t.id, t.text) for t in tokens] == [(1, "a"), (2, "\ufffd")]


def test_stop_cut_drops_later_tokens_and_truncates_the_straddling_one() -> None:
    track = _track()
    text = _feed(track, "", 1, "ab")
    text = _feed(track, text, 2, "cX")
    text = _feed(track, text, 3, "YZ")
    cut = text.index("X")  # the stop string "XYZ" starts inside token 2
    text = text[:cut]
    track.cut(cut)
    upto, tokens = track.release(text, len(text), final=True)
    assert upto == cut
    assert [(t.id, t.text) for t in tokens] == [(1, "ab"), (2, "c")]
    assert "".join(t.text for t in track.reported) == "abc"


# ----- JSON schema to GBNF ----------------------------------------------------------------


def test_schema_becomes_gbnf_with_enums_and_bounded_strings() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["cat", "dog"]},
            "name": {"type": "string", "maxLength": 3},
        },
        "required": ["kind", "name"],
    }
    gbnf = grammar_for_json_schema(schema)
    assert "root ::=" in gbnf
    assert '"\\"cat\\""' in gbnf and '"\\"dog\\""' in gbnf
    assert "char*" not in gbnf  # maxLength bounds the string
    assert grammar_for_json_schema('{"type": "integer"}') == grammar_for_json_schema(
        {"type": "integer"}
    )


@pytest.mark.parametrize(
    "schema",
    [{"type": "no-such-type"}, "{not json", False, 5, {"$ref": "https://example.com/s.json"}],
)
def test_unsupported_schema_is_invalid_request(schema: Any) -> None:
    with pytest.raises(InvalidRequest):
        grammar_for_json_schema(schema)


# ----- what a sequence asks for -----------------------------------------------------------


def test_sampling_defaults_are_neutral() -> None:
    params = SamplingParams()
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (1.0, 1.0, 0, 0.0)
    assert (params.repetition_penalty, params.presence_penalty, params.frequency_penalty) == (
        1.0,
        0.0,
        0.0,
    )
    assert params.logit_bias == ()
    assert params.do_sample and not params.greedy


GREEDY = SamplingParams(do_sample=False)


@pytest.mark.parametrize(
    ("inp", "wanted", "plain"),
    [
        (GenerationInput((1,), GREEDY, 4), False, True),
        (GenerationInput((1,), SamplingParams(), 4), False, False),
        (
            GenerationInput((1,), SamplingParams(do_sample=False, repetition_penalty=1.1), 4),
            False,
            False,
        ),
        (GenerationInput((1,), GREEDY, 4, logprobs=0), True, False),
        (GenerationInput((1,), GREEDY, 4, grammar='root ::= "a"'), True, False),
        (
            GenerationInput((1,), SamplingParams(do_sample=False, presence_penalty=0.1), 4),
            True,
            False,
        ),
        (
            GenerationInput((1,), SamplingParams(do_sample=False, frequency_penalty=0.1), 4),
            True,
            False,
        ),
        (
            GenerationInput((1,), SamplingParams(do_sample=False, logit_bias=((3, 1.0),)), 4),
            True,
            False,
        ),
    ],
)
def test_extras_wanted_and_drafting(inp: GenerationInput, wanted: bool, plain: bool) -> None:
    assert extras.wanted(inp) is wanted
    assert extras.plain_greedy(inp) is plain


@pytest.mark.parametrize(
    ("inp", "needle"),
    [
        (GenerationInput((1,), GREEDY, 4, logprobs=21), "logprobs"),
        (GenerationInput((1,), GREEDY, 4, logprobs=-1), "logprobs"),
        (GenerationInput((1,), SamplingParams(logit_bias=((100, 1.0),)), 4), "token 100"),
        (GenerationInput((1,), SamplingParams(logit_bias=((-1, 1.0),)), 4), "token -1"),
        (GenerationInput((1,), SamplingParams(logit_bias=((1, math.nan),)), 4), "finite"),
    ],
)
def test_validate_rejects_out_of_range(inp: GenerationInput, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        extras.validate(inp, vocab=None, n_vocab=100)


def test_validate_accepts_the_limits() -> None:
    inp = GenerationInput(
        (1,), SamplingParams(logit_bias=((0, -100.0), (99, 100.0))), 4, logprobs=20
    )
    extras.validate(inp, vocab=None, n_vocab=100)
