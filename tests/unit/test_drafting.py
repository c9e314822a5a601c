"""Prompt-lookup drafting: the guesses and the controller that decides when to draft."""

from __future__ import annotations

from locallab_cpp.engine.llama.drafting import (
    EXPLORE_EVERY,
    ROWS,
    DraftController,
    drafts_per_sequence,
    propose,
)


def test_propose_follows_the_last_bigram() -> None:
    assert propose([1, 2, 3, 4, 1, 2], 3) == [3, 4, 1]


def test_propose_takes_the_most_recent_match() -> None:
    assert propose([1, 2, 7, 1, 2, 9, 5, 1, 2], 1) == [9]


def test_propose_falls_back_to_the_last_token() -> None:
    assert propose([5, 6, 7, 6], 2) == [7, 6]


def test_propose_without_a_match_or_history_is_empty() -> None:
    assert propose([1, 2, 3], 2) == []
    assert propose([1], 2) == []
    assert propose([1, 2, 1, 2], 0) == []


def test_propose_may_return_fewer_than_asked() -> None:
    assert propose([1, 2, 3, 1, 2], 5) == [3, 1, 2]


def test_drafts_fill_the_rows_only_with_company() -> None:
    assert drafts_per_sequence(1) == 0  # alone: never, to stay reproducible and cheap
    assert drafts_per_sequence(2) == ROWS // 2 - 1
    assert drafts_per_sequence(4) == 1
    assert drafts_per_sequence(ROWS // 2 + 1) == 0
    assert drafts_per_sequence(ROWS) == 0


def test_controller_measures_both_ways_then_keeps_the_faster() -> None:
    ctl = DraftController()
    assert ctl.should_draft(4) is True  # nothing known: try drafting
    ctl.record(4, True, tokens=8, seconds=0.04)  # 200 tok/s
    assert ctl.should_draft(4) is False  # now measure the plain way
    ctl.record(4, False, tokens=4, seconds=0.032)  # 125 tok/s
    choices = [ctl.should_draft(4) for _ in range(EXPLORE_EVERY * 2)]
    assert choices.count(True) > choices.count(False)
    assert False in choices  # the slower way is re-tried now and then


def test_controller_stops_drafting_when_it_loses() -> None:
    ctl = DraftController()
    ctl.should_draft(2)
    ctl.record(2, True, tokens=2, seconds=0.04)  # guesses all wrong: 50 tok/s
    ctl.should_draft(2)
    ctl.record(2, False, tokens=2, seconds=0.023)  # 87 tok/s
    choices = [ctl.should_draft(2) for _ in range(EXPLORE_EVERY * 2)]
    assert choices.count(False) > choices.count(True)


def test_controller_keeps_numbers_of_sequences_apart() -> None:
    ctl = DraftController()
    ctl.should_draft(4)
    ctl.record(4, True, tokens=8, seconds=0.04)
    assert ctl.should_draft(3) is True  # 3 sequences have not been measured yet


def test_controller_ignores_empty_timings() -> None:
    ctl = DraftController()
    ctl.record(4, True, tokens=8, seconds=0.0)
    assert ctl.should_draft(4) is True
