"""The LoCoMo benchmark's layouts: one function builds the conversations for all of them."""

from __future__ import annotations

from datetime import datetime, timedelta

from benchmarks.locomo import ContentOptions, Question, Sample, Turn, build_sessions
from benchmarks.locomo_layouts import Layout, layout_messages


def _sample() -> Sample:
    start = datetime(2023, 5, 1, 9, 0)
    turns = [
        Turn("D1:1", "Maya", "I fixed the bike", None, 1, start),
        Turn("D1:2", "Sam", "Nice!", "a photo of a bike", 1, start + timedelta(seconds=5)),
        Turn("D2:1", "Maya", "Rode it to work", None, 2, start + timedelta(days=3)),
    ]
    return Sample(0, "Maya", "Sam", turns, [Question("What did Maya fix?", 4, ("D1:1",))])


def test_sessions_as_conversations_link_turns_within_a_session() -> None:
    groups = build_sessions(_sample(), ContentOptions(), "u")
    assert [conv for conv, _ in groups] == ["u-session-1", "u-session-2"]
    first, second = groups[0][1], groups[1][1]
    assert first[1].parent_id == first[0].id
    assert second[0].parent_id is None
    assert first[1].content == "Sam: Nice! [image: a photo of a bike]"


def test_one_conversation_links_turns_across_sessions() -> None:
    groups = build_sessions(_sample(), ContentOptions(caption=False), "u", per_session=False)
    assert [conv for conv, _ in groups] == ["u-all"]
    msgs = groups[0][1]
    assert [m.parent_id for m in msgs] == [None, msgs[0].id, msgs[1].id]
    assert msgs[1].content == "Sam: Nice!"


def test_a_layout_builds_what_build_sessions_builds() -> None:
    layout = Layout(shared_store=True, per_session=False, captions=False)
    built = layout_messages(_sample(), layout, "u")
    direct = build_sessions(_sample(), ContentOptions(caption=False), "u", per_session=False)
    assert [(c, [m.model_dump() for m in ms]) for c, ms in built] == [
        (c, [m.model_dump() for m in ms]) for c, ms in direct
    ]
