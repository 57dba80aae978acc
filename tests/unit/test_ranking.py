"""Hybrid ranking (``bruno_memstore.ranking.fuse``): what each kind of evidence lifts."""

from __future__ import annotations

from bruno_memstore.models import MessageRecord, SearchHit
from bruno_memstore.ranking import DateSpec, asks_when, fuse, query_dates, speaks_of_time

MINUTE_US = 60_000_000


def _hit(
    mid: str, score: float, *, conv: str = "c", minute: int = 0, parent: str | None = None
) -> SearchHit:
    record = MessageRecord(
        mid, conv, "user", "", "text", "", minute * MINUTE_US, "{}", parent_id=parent
    )
    return SearchHit("message", score, record)


def _order(hits: list[SearchHit]) -> list[str]:
    return [h.message.id for h in hits if h.message is not None]


def test_scores_lie_in_zero_one_and_the_best_of_both_sides_wins() -> None:
    text = [_hit("a", 9.0), _hit("b", 3.0), _hit("c", 1.0)]
    vector = [_hit("a", 0.9), _hit("c", 0.5), _hit("d", 0.2)]
    fused = fuse(text, vector, conversation_weight=0.3, neighbour_weight=0.2, limit=10)
    assert _order(fused)[0] == "a"
    assert all(0.0 <= h.score <= 1.0 for h in fused)
    assert sorted(_order(fused)) == ["a", "b", "c", "d"]


def test_episode_evidence_comes_from_candidates_close_in_time_only() -> None:
    # One long conversation: "near" lies a minute from the strong match, "far" a week away.
    strong = _hit("strong", 10.0, minute=0)
    near = _hit("near", 2.0, minute=1)
    far = _hit("far", 2.0, minute=7 * 24 * 60)
    weak = _hit("weak", 1.0, minute=3 * 24 * 60)
    text = [strong, near, far, weak]
    whole = fuse(text, [], conversation_weight=0.3, session_gap_us=None, limit=10)
    split = fuse(text, [], conversation_weight=0.3, session_gap_us=30 * MINUTE_US, limit=10)
    score = {h.message.id: h.score for h in split if h.message is not None}
    assert score["near"] > score["far"]  # only "near" shares the strong match's episode
    # Without a gap the whole conversation is one episode: both gain alike, and the
    # tie between them breaks newest first.
    assert _order(whole)[1:3] == ["far", "near"]


def test_a_reply_gains_from_the_message_it_answers() -> None:
    question = _hit("q", 10.0, minute=0)
    reply = _hit("reply", 1.0, minute=1, parent="q")
    other = _hit("other", 1.5, conv="d", minute=1)
    text = [question, other, reply, _hit("floor", 0.5, conv="e")]
    without = fuse(text, [], conversation_weight=0.0, neighbour_weight=0.0, limit=10)
    with_nb = fuse(text, [], conversation_weight=0.0, neighbour_weight=0.3, limit=10)
    assert _order(without)[:3] == ["q", "other", "reply"]
    assert _order(with_nb)[:3] == ["q", "reply", "other"]


def test_a_question_gains_from_its_reply_too() -> None:
    ask = _hit("ask", 1.0, minute=0)
    answer = _hit("answer", 10.0, minute=1, parent="ask")
    rival = _hit("rival", 1.2, conv="d")
    text = [answer, rival, ask, _hit("floor", 0.5, conv="e")]
    fused = fuse(text, [], conversation_weight=0.0, neighbour_weight=0.3, limit=10)
    assert _order(fused)[:3] == ["answer", "ask", "rival"]


def test_query_dates_reads_the_common_english_forms() -> None:
    assert query_dates("What did we paint on October 13, 2023?") == [DateSpec(10, 13, 2023)]
    assert query_dates("dinner on 1 February, 2023") == [DateSpec(2, 1, 2023)]
    assert query_dates("on the 3rd of March") == [DateSpec(3, 3, None)]
    assert query_dates("When did she go camping in June?") == [DateSpec(6, None, None)]
    assert query_dates("a setback in October 2023") == [DateSpec(10, None, 2023)]
    assert query_dates("May 3, 2023") == [DateSpec(5, 3, 2023)]
    # "may" alone is the verb
    assert query_dates("What may I bring?") == []
    assert query_dates("nothing dated here") == []


def test_a_hit_written_on_the_named_date_gains() -> None:
    day_us = 24 * 60 * MINUTE_US
    march_3 = 19_419  # days from 1970-01-01 to 2023-03-03
    on_day = _hit("on-day", 1.0, conv="a", minute=march_3 * 24 * 60 + 600)
    other_day = _hit("other-day", 1.2, conv="b", minute=(march_3 + 40) * 24 * 60)
    text = [_hit("top", 5.0, conv="c"), other_day, on_day, _hit("floor", 0.5, conv="d")]
    assert on_day.message is not None and on_day.message.ts_us // day_us == march_3
    dates = query_dates("what did I say on 3 March 2023?")
    plain = fuse(text, [], conversation_weight=0.0, limit=10)
    dated = fuse(text, [], conversation_weight=0.0, dates=dates, date_weight=0.2, limit=10)
    assert _order(plain).index("on-day") > _order(plain).index("other-day")
    assert _order(dated).index("on-day") < _order(dated).index("other-day")
    assert all(0.0 <= h.score <= 1.0 for h in dated)


def _said(mid: str, score: float, content: str, *, conv: str = "c", minute: int = 0) -> SearchHit:
    record = MessageRecord(mid, conv, "user", content, "text", "", minute * MINUTE_US, "{}")
    return SearchHit("message", score, record)


def test_asks_when_recognises_questions_about_time() -> None:
    assert asks_when("When did Maya go to Lisbon?")
    assert asks_when("How long ago did he adopt the dog?")
    assert asks_when("what year did they move?")
    assert asks_when("Which month was the concert in?")
    assert not asks_when("Where does she work now?")
    assert not asks_when("What did Maya paint?")


def test_speaks_of_time_finds_relative_and_calendar_expressions() -> None:
    for text in (
        "I went there last Saturday",
        "We moved two years ago",
        "It was yesterday!",
        "Yes, last May!",
        "back in 2019",
        "see you next week",
        "in October",
    ):
        assert speaks_of_time(text), text
    for text in ("I may go", "I like the sea", "The weekday menu is good", "a year-round hobby"):
        assert not speaks_of_time(text), text


def test_a_message_speaking_of_a_time_gains_when_the_query_asks_when() -> None:
    text = [
        _said("top", 5.0, "Lisbon was lovely", conv="a"),
        _said("plain", 1.2, "I loved the trams", conv="b"),
        _said("timed", 1.0, "We flew out last May", conv="c"),
        _said("floor", 0.5, "ok", conv="d"),
    ]
    plain = fuse(text, [], conversation_weight=0.0, time_weight=0.3, limit=10)
    asked = fuse(text, [], conversation_weight=0.0, asks_time=True, time_weight=0.3, limit=10)
    assert _order(plain).index("timed") > _order(plain).index("plain")
    assert _order(asked).index("timed") < _order(asked).index("plain")
    assert all(0.0 <= h.score <= 1.0 for h in asked)


def test_time_evidence_out_of_reach_still_sets_the_scale() -> None:
    # Only the weakest candidate speaks of a time: it cannot reach the best two, yet the
    # bonus is present among the candidates, so the divisor counts it as it always does.
    text = [_said(f"m{i}", 10.0 - i, "plain words", conv=f"c{i}") for i in range(8)]
    text.append(_said("late", 0.0, "see you next week", conv="z"))
    fused = fuse(
        text,
        [],
        conversation_weight=0.0,
        neighbour_weight=0.0,
        asks_time=True,
        time_weight=0.3,
        limit=2,
    )
    assert _order(fused) == ["m0", "m1"]
    assert abs(fused[0].score - 0.6 / 1.3) < 1e-9  # keyword side only: base 0.6
    none = fuse(
        text[:-1],
        [],
        conversation_weight=0.0,
        neighbour_weight=0.0,
        asks_time=True,
        time_weight=0.3,
        limit=2,
    )
    assert abs(none[0].score - 0.6) < 1e-9
