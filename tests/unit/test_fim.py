"""serving/fim.py: the one FIM prompt builder, over a made-up vocabulary (a word, an id):
the token order, extra chunks with and without the repository tokens, and the budget."""

from __future__ import annotations

from locallab_cpp.engine.base import FimTokens
from locallab_cpp.serving.fim import CURSOR_CHECKPOINT_BACK, ExtraChunk, build

PRE, SUF, MID, REP, SEP, BOS = 1, 2, 3, 4, 5, 6
NAMES = {PRE: "<PRE>", SUF: "<SUF>", MID: "<MID>", REP: "<REP>", SEP: "<SEP>", BOS: "<BOS>"}
PLAIN = FimTokens(pre=PRE, suf=SUF, mid=MID)
REPO = FimTokens(pre=PRE, suf=SUF, mid=MID, rep=REP, sep=SEP, bos=BOS)


class Vocab:
    """One id per whitespace-separated word (from 100 on)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.words: dict[int, str] = dict(NAMES)

    def tokenize(self, text: str) -> list[int]:
        out = []
        for word in text.split():
            if word not in self.ids:
                self.ids[word] = 100 + len(self.ids)
                self.words[self.ids[word]] = word
            out.append(self.ids[word])
        return out

    def text(self, tokens: tuple[int, ...]) -> str:
        return " ".join(self.words[t] for t in tokens)


def words(n: int, stem: str) -> str:
    return " ".join(f"{stem}{i}" for i in range(n))


def test_order_is_prefix_then_prompt_then_suffix_then_middle() -> None:
    v = Vocab()
    got = build(PLAIN, v.tokenize, prefix="def f", suffix="return x", prompt="  y =", budget=100)
    assert v.text(got.tokens) == "<PRE> def f y = <SUF> return x <MID>"
    assert not got.truncated and got.extra_chunks == 0


def test_bos_comes_first_and_no_extra_means_no_repo_header() -> None:
    v = Vocab()
    got = build(REPO, v.tokenize, prefix="a", suffix="b", budget=100)
    assert v.text(got.tokens) == "<BOS> <PRE> a <SUF> b <MID>"


def test_extra_chunks_with_the_repository_tokens() -> None:
    v = Vocab()
    extra = [ExtraChunk("x.py", "one"), ExtraChunk("y.py", "two")]
    got = build(REPO, v.tokenize, prefix="a", suffix="b", extra=extra, budget=100)
    assert v.text(got.tokens) == (
        "<BOS> <REP> myproject <SEP> x.py one <SEP> y.py two <SEP> filename <PRE> a <SUF> b <MID>"
    )
    assert got.extra_chunks == 2


def test_extra_chunks_without_them_are_plain_text_before_the_prefix() -> None:
    v = Vocab()
    extra = [ExtraChunk("x.py", "one")]
    got = build(PLAIN, v.tokenize, prefix="a", suffix="b", extra=extra, budget=100)
    assert v.text(got.tokens) == "--- x.py --- one <PRE> a <SUF> b <MID>"


def test_a_sep_token_without_a_repo_token_still_names_the_files() -> None:
    v = Vocab()
    fim = FimTokens(pre=PRE, suf=SUF, mid=MID, sep=SEP)
    got = build(fim, v.tokenize, prefix="a", suffix="b", extra=[ExtraChunk("x", "t")], budget=50)
    assert v.text(got.tokens) == "<SEP> x t <SEP> filename <PRE> a <SUF> b <MID>"


def test_the_budget_drops_the_oldest_extra_chunks_first() -> None:
    v = Vocab()
    extra = [ExtraChunk("old", words(10, "o")), ExtraChunk("new", words(10, "n"))]
    # 3 FIM tokens + 2 local words + the new chunk (SEP, name, 10) + the closing (SEP, name)
    got = build(
        FimTokens(PRE, SUF, MID, sep=SEP),
        v.tokenize,
        prefix="a",
        suffix="b",
        extra=extra,
        budget=3 + 2 + 12 + 2,
    )
    text = v.text(got.tokens)
    assert "new n0" in text and "old" not in text
    assert got.truncated and got.extra_chunks == 1
    assert len(got.tokens) <= 19


def test_no_room_for_any_chunk_drops_the_whole_block() -> None:
    v = Vocab()
    got = build(
        REPO, v.tokenize, prefix="a", suffix="b", extra=[ExtraChunk("f", words(50, "w"))], budget=20
    )
    assert v.text(got.tokens) == "<BOS> <PRE> a <SUF> b <MID>"
    assert got.truncated


def test_a_long_prefix_keeps_its_end_and_a_long_suffix_its_start() -> None:
    v = Vocab()
    got = build(PLAIN, v.tokenize, prefix=words(100, "p"), suffix=words(100, "s"), budget=43)
    text = v.text(got.tokens)
    assert len(got.tokens) == 43 and got.truncated
    # 40 tokens of room: the suffix keeps a quarter (10), the prefix the rest (30)
    assert text.startswith("<PRE> p70 ") and " p99 <SUF> s0 " in text
    assert text.endswith(" s9 <MID>")


def test_a_short_suffix_leaves_its_share_to_the_prefix() -> None:
    v = Vocab()
    got = build(PLAIN, v.tokenize, prefix=words(100, "p"), suffix="s", budget=43)
    assert v.text(got.tokens).startswith("<PRE> p61 ")  # 39 of prefix, 1 of suffix
    assert len(got.tokens) == 43


def test_a_short_prefix_leaves_its_share_to_the_suffix() -> None:
    v = Vocab()
    got = build(PLAIN, v.tokenize, prefix="p", suffix=words(100, "s"), budget=43)
    assert v.text(got.tokens).endswith(" s38 <MID>")  # 1 of prefix, 39 of suffix


def test_the_prompt_is_kept_and_the_local_context_shares_what_is_left() -> None:
    v = Vocab()
    got = build(
        PLAIN, v.tokenize, prefix=words(100, "p"), suffix=words(100, "s"), prompt="x y", budget=23
    )
    text = v.text(got.tokens)
    assert " x y <SUF> " in text and len(got.tokens) == 23


def test_checkpoint_at_is_a_little_before_the_cursor() -> None:
    v = Vocab()
    back = CURSOR_CHECKPOINT_BACK
    got = build(REPO, v.tokenize, prefix=words(back + 50, "p"), suffix="s", budget=10_000)
    assert got.checkpoint_at == 2 + 50  # BOS, PRE, then the prefix's first 50 words
    assert got.tokens[got.checkpoint_at] == v.ids["p50"]
    extra = [ExtraChunk("x.py", "one")]
    got = build(REPO, v.tokenize, prefix="a b", suffix="s", extra=extra, budget=1000)
    pre = got.tokens.index(PRE)
    assert got.checkpoint_at == pre + 1  # a short prefix: right after PRE
    assert build(PLAIN, v.tokenize, prefix="", suffix="s", budget=100).checkpoint_at is None
