"""Engine features for the OpenAI/Ollama/Anthropic APIs, in-process with the real embedded
model: token log-probabilities aligned with the text, grammar-constrained (JSON schema)
output, logit bias, presence/frequency penalties, min-p."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from it_support import open_embedded_engine

from locallab_cpp.engine.llama.engine import LlamaEngine
from locallab_cpp.engine.schema import grammar_for_json_schema
from locallab_cpp.engine.types import (
    Completion,
    Finished,
    GenerationInput,
    SamplingParams,
    TextChunk,
    TokenLogprob,
)
from locallab_cpp.errors import InvalidRequest

pytestmark = pytest.mark.integration

GREEDY = SamplingParams(do_sample=False)
PROMPT = "The history of the printing press begins"

PET_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "kind": {"enum": ["cat", "dog", "bird"]},
        "owner": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 16},
                "verified": {"type": "boolean"},
                "plan": {"enum": ["free", "pro"]},
            },
            "required": ["city", "verified", "plan"],
        },
    },
    "required": ["name", "kind", "owner"],
}


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    engine = open_embedded_engine(parallel=2, n_ctx=512)
    yield engine
    engine.close()


def _input(engine: LlamaEngine, prompt: str, sampling: SamplingParams, n: int, **kw: Any) -> Any:
    return GenerationInput(tuple(engine.tokenize(prompt)), sampling, n, **kw)


def _complete(engine: LlamaEngine, *inputs: GenerationInput) -> list[Completion]:
    async def run() -> list[Completion]:
        handles = engine.submit(list(inputs))
        return list(await asyncio.gather(*(h.result() for h in handles)))

    return asyncio.run(run())


def _stream(engine: LlamaEngine, inp: GenerationInput) -> tuple[list[TextChunk], Finished]:
    async def run() -> tuple[list[TextChunk], Finished]:
        [handle] = engine.submit([inp])
        chunks: list[TextChunk] = []
        async for event in handle.events():
            if isinstance(event, TextChunk):
                chunks.append(event)
            else:
                return chunks, event
        raise AssertionError("no Finished")

    return asyncio.run(run())


def _joined(tokens: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> str:
    return "".join(t.text for t in tokens)


# ----- log-probabilities ----------------------------------------------------------------


def test_greedy_logprobs_are_aligned_and_top_one_is_the_choice(engine: LlamaEngine) -> None:
    [plain] = _complete(engine, _input(engine, PROMPT, GREEDY, 24))
    chunks, finished = _stream(engine, _input(engine, PROMPT, GREEDY, 24, logprobs=5))
    text = "".join(c.text for c in chunks)
    assert text == plain.text  # asking for logprobs does not change the output
    for chunk in chunks:
        assert _joined(chunk.logprobs) == chunk.text
    streamed = [t for c in chunks for t in c.logprobs]
    assert tuple(streamed) == finished.logprobs
    assert [t.id for t in streamed] == list(finished.token_ids) == list(plain.token_ids)
    assert _joined(streamed) == text
    assert b"".join(t.piece for t in streamed).decode() == text
    for token in streamed:
        assert token.logprob <= 0.0
        assert len(token.top) == 5
        values = [alt.logprob for alt in token.top]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0.0 for v in values)
        assert token.top[0].id == token.id  # greedy without a grammar picks the likeliest
        assert token.top[0].logprob == pytest.approx(token.logprob)
        assert token.top[0].piece == token.piece


def test_logprobs_stop_at_the_stop_string(engine: LlamaEngine) -> None:
    [ref] = _complete(engine, _input(engine, PROMPT, GREEDY, 24, logprobs=0))
    texts = [t.text for t in ref.logprobs]
    # A stop string that begins one character into a token of at least 3 characters, past
    # the first token, and does not occur earlier: that token is cut in two.
    start = 0
    stop_at = None
    for i, piece in enumerate(texts):
        if i > 0 and len(piece) >= 3:
            candidate = ref.text[start + 1 : start + 4]
            if ref.text.find(candidate) == start + 1:
                stop_at, stop = start + 1, candidate
                break
        start += len(piece)
    assert stop_at is not None, f"no token to cut in {texts}"
    chunks, finished = _stream(engine, _input(engine, PROMPT, GREEDY, 24, logprobs=0, stop=(stop,)))
    text = "".join(c.text for c in chunks)
    assert finished.finish_reason == "stop"
    assert finished.stop_sequence == stop and ref.stop_sequence is None  # which one matched
    assert text == ref.text[:stop_at]
    assert _joined(finished.logprobs) == text
    for chunk in chunks:
        assert _joined(chunk.logprobs) == chunk.text
    cut_index = len(finished.logprobs) - 1
    assert finished.logprobs[cut_index].text == texts[cut_index][:1]
    assert [t.id for t in finished.logprobs] == [t.id for t in ref.logprobs[: cut_index + 1]]
    assert all(t.top == () for t in finished.logprobs)  # logprobs=0: no alternatives


def test_sampled_logprobs_are_aligned(engine: LlamaEngine) -> None:
    sampled = SamplingParams(seed=11, temperature=0.9)
    [done] = _complete(engine, _input(engine, PROMPT, sampled, 20, logprobs=3))
    assert _joined(done.logprobs) == done.text
    assert [t.id for t in done.logprobs] == list(done.token_ids)
    assert all(t.logprob <= 0.0 and len(t.top) == 3 for t in done.logprobs)
    # A draw can miss the likeliest token, but never beats it.
    assert all(t.logprob <= t.top[0].logprob + 1e-6 for t in done.logprobs)


# ----- grammar --------------------------------------------------------------------------


def _check_pet(text: str) -> None:
    doc = json.loads(text)
    assert set(doc) == {"name", "kind", "owner"}
    assert isinstance(doc["name"], str) and len(doc["name"]) <= 16
    assert doc["kind"] in ("cat", "dog", "bird")
    owner = doc["owner"]
    assert set(owner) == {"city", "verified", "plan"}
    assert isinstance(owner["city"], str) and len(owner["city"]) <= 16
    assert isinstance(owner["verified"], bool)
    assert owner["plan"] in ("free", "pro")


@pytest.mark.parametrize(
    "sampling",
    [GREEDY, SamplingParams(seed=5), SamplingParams(seed=6, temperature=1.3, top_k=40)],
    ids=["greedy", "sampled", "sampled-hot"],
)
def test_json_schema_output_validates(engine: LlamaEngine, sampling: SamplingParams) -> None:
    grammar = grammar_for_json_schema(PET_SCHEMA)
    prompt = "A pet record, as JSON:\n"
    [done] = _complete(engine, _input(engine, prompt, sampling, 200, grammar=grammar))
    assert done.finish_reason == "stop", done.text
    _check_pet(done.text)


def test_constrained_greedy_pair_never_drafts(engine: LlamaEngine) -> None:
    """Two greedy sequences would draft (drafting.py); constrained ones must not, as
    drafted tokens skip the grammar."""
    grammar = grammar_for_json_schema(PET_SCHEMA)
    before = engine.stats().drafted_tokens
    done = _complete(
        engine,
        _input(engine, "Pet record in JSON:\n", GREEDY, 200, grammar=grammar),
        _input(engine, "Another pet, as JSON:\n", GREEDY, 200, grammar=grammar, logprobs=1),
    )
    assert engine.stats().drafted_tokens == before
    for completion in done:
        _check_pet(completion.text)
    assert _joined(done[1].logprobs) == done[1].text


def test_grammar_limits_the_alphabet(engine: LlamaEngine) -> None:
    grammar = 'root ::= [a-c]{3,8} "."'
    [done] = _complete(engine, _input(engine, PROMPT, GREEDY, 30, grammar=grammar, logprobs=2))
    assert done.finish_reason == "stop"
    assert done.text.endswith(".") and 3 <= len(done.text) - 1 <= 8
    assert set(done.text[:-1]) <= set("abc")
    assert _joined(done.logprobs) == done.text


@pytest.mark.parametrize("grammar", ['root ::= "a', "root ::= undefined-rule", 'x ::= "a"', " "])
def test_invalid_grammar_is_rejected_at_submit(engine: LlamaEngine, grammar: str) -> None:
    async def submit() -> None:
        engine.submit([_input(engine, PROMPT, GREEDY, 4, grammar=grammar)])

    with pytest.raises(InvalidRequest):
        asyncio.run(submit())
    [after] = _complete(engine, _input(engine, PROMPT, GREEDY, 4))  # the engine still works
    assert after.completion_tokens == 4


# ----- bias, penalties, min-p -----------------------------------------------------------


def test_logit_bias_bans_and_forces(engine: LlamaEngine) -> None:
    [plain] = _complete(engine, _input(engine, PROMPT, GREEDY, 4))
    first = plain.token_ids[0]
    banned = SamplingParams(do_sample=False, logit_bias=((first, -100.0),))
    [without] = _complete(engine, _input(engine, PROMPT, banned, 4))
    assert without.token_ids[0] != first
    assert first not in without.token_ids
    [forced_token] = engine.tokenize(" banana", add_bos=False)
    forcing = SamplingParams(seed=1, logit_bias=((forced_token, 100.0),))
    [forced] = _complete(engine, _input(engine, PROMPT, forcing, 4))
    assert forced.token_ids == (forced_token,) * 4
    assert forced.text == " banana" * 4


def _top_count(ids: tuple[int, ...]) -> int:
    return Counter(ids).most_common(1)[0][1]


def test_frequency_penalty_breaks_a_loop(engine: LlamaEngine) -> None:
    prompt = "yes yes yes yes yes yes yes yes yes yes"
    [plain] = _complete(engine, _input(engine, prompt, GREEDY, 32))
    freq = SamplingParams(do_sample=False, frequency_penalty=1.0)
    [with_freq] = _complete(engine, _input(engine, prompt, freq, 32))
    assert _top_count(plain.token_ids) >= 16, plain.text  # the base model loops here
    assert _top_count(with_freq.token_ids) < _top_count(plain.token_ids) / 2
    assert len(set(with_freq.token_ids)) > len(set(plain.token_ids))


def test_large_presence_penalty_never_repeats_a_token(engine: LlamaEngine) -> None:
    """A penalty far beyond the spread of the logits makes every used token lose to every
    unused one: no token comes twice, where the plain output repeats itself."""
    prompt = "1, 2, 3, 1, 2, 3, 1, 2, 3,"
    [plain] = _complete(engine, _input(engine, prompt, GREEDY, 24))
    presence = SamplingParams(do_sample=False, presence_penalty=100.0)
    [with_presence] = _complete(engine, _input(engine, prompt, presence, 24))
    assert len(set(plain.token_ids)) < len(plain.token_ids) / 2, plain.text
    assert len(set(with_presence.token_ids)) == len(with_presence.token_ids) == 24


def test_min_p_one_is_greedy(engine: LlamaEngine) -> None:
    [greedy] = _complete(engine, _input(engine, PROMPT, GREEDY, 16))
    [sampled] = _complete(engine, _input(engine, PROMPT, SamplingParams(seed=3, min_p=1.0), 16))
    assert sampled.token_ids == greedy.token_ids
    [free] = _complete(engine, _input(engine, PROMPT, SamplingParams(seed=3, temperature=1.5), 16))
    assert free.token_ids != greedy.token_ids  # a hot draw leaves the greedy path


# ----- control tokens kept as text ------------------------------------------------------


def test_keep_special_renders_the_named_control_token(engine: LlamaEngine) -> None:
    """Tool-call markers can be control tokens (Mistral's [TOOL_CALLS]): a sequence that
    names them gets their text; other sequences never see control tokens as text."""
    marker = "<start_of_turn>"  # a control token of Gemma's vocabulary that does not end
    [token] = engine.tokenize(marker, add_bos=False)
    forced = SamplingParams(do_sample=False, logit_bias=((token, 100.0),))
    plain, kept = _complete(
        engine,
        _input(engine, PROMPT, forced, 3),
        _input(engine, PROMPT, forced, 3, keep_special=(marker, "not a control token")),
    )
    assert plain.token_ids[:1] == (token,) and kept.token_ids[:1] == (token,)
    assert marker not in plain.text
    assert kept.text.startswith(marker), kept.text


def test_integer_bounds_hold_in_the_grammar(engine: LlamaEngine) -> None:
    """llama-cpp-python's converter ignores minimum/maximum; small ranges become enums."""
    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 99}},
        "required": ["count"],
    }
    grammar = grammar_for_json_schema(schema)
    for sampling in (GREEDY, SamplingParams(seed=3, temperature=1.5)):
        [done] = _complete(engine, _input(engine, "Count: ", sampling, 40, grammar=grammar))
        assert 1 <= json.loads(done.text)["count"] <= 99, done.text
