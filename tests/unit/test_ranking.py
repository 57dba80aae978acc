"""Hybrid ranking (``bruno_memstore.ranking.fuse``): what each kind of evidence lifts."""

from __future__ import annotations

from bruno_memstore.models import MessageRecord, SearchHit
from bruno_memstore.ranking import fuse

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
