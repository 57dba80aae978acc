"""Records, validation and conversions of the shared layer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryType
from bruno_core.models.message import Message, MessageRole, MessageType
from pydantic import ValidationError

from bruno_memstore import models
from bruno_memstore.errors import InvalidArgumentError
from bruno_memstore.models import (
    LIFECYCLE_KEY,
    MAX_ID_LENGTH,
    MemoryFilter,
    MessageRecord,
    SearchHit,
    SearchRequest,
    check_id,
    check_limit,
    dump_json,
    hit_order,
    load_json,
    memory_sort_key,
    memory_to_record,
    message_to_record,
    record_to_memory,
    record_to_message,
    record_to_session,
    records_to_messages,
    session_to_record,
    to_us,
    user_metadata,
    utcnow,
)
from bruno_memstore.testing import make_memory_entry, make_message

# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    "value",
    [
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": -float("inf")},
        {"a": {1, 2}},
        {"a": frozenset()},
        {"a": (1, 2)},
        {"a": [1, (2,)]},
        {1: "int key"},
        {"a": {None: 1}},
        {"a": b"bytes"},
        {"a": object()},
        {"a": datetime(2024, 1, 1)},
        {"a": uuid4()},
    ],
    # Stable names (no object address or random UUID), so every test process collects
    # the same ids.
    ids=lambda value: type(next(iter(value.values()))).__name__ + ":" + str(len(repr(value))),
)
def test_dump_json_refuses_what_would_change(value: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        dump_json(value, "message.metadata")
    assert info.value.argument == "message.metadata"


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"a": 1, "b": [1, 2.5, None, True, "x"], "c": {"d": {"e": []}}},
        {"quote": "'\"\\", "nul": "\x00", "emoji": "😀", "astral": "\U0001d518"},
        {"big": 2**63, "neg": -(2**53), "tiny": 5e-324, "zero": -0.0},
    ],
)
def test_dump_json_round_trips(value: object) -> None:
    text = dump_json(value, "metadata")
    assert json.loads(text) == value
    if "emoji" in value:  # type: ignore[operator]
        assert "😀" in text  # readable UTF-8, not \u escapes


# --------------------------------------------------------------------------- time


def test_to_us_reads_naive_as_utc() -> None:
    naive = datetime(2024, 5, 17, 12, 0, 0, 123456)
    assert to_us(naive) == to_us(naive.replace(tzinfo=UTC))
    assert to_us(datetime(1970, 1, 1)) == 0
    assert to_us(datetime(1970, 1, 1, 0, 0, 0, 1)) == 1
    assert to_us(datetime(1969, 12, 31, 23, 59, 59, 999999)) == -1


def test_to_us_uses_the_instant_of_aware_values() -> None:
    plus2 = datetime(2024, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    utc = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert to_us(plus2) == to_us(utc)
    assert to_us(utc + timedelta(microseconds=1)) - to_us(utc) == 1


def test_to_us_is_exact_far_from_the_epoch() -> None:
    # Floating-point seconds would lose microseconds here.
    far = datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert to_us(far) % 1_000_000 == 999999
    assert to_us(far) - to_us(far - timedelta(microseconds=1)) == 1


def test_utcnow_is_naive_utc() -> None:
    now = utcnow()
    assert now.tzinfo is None
    assert abs(to_us(now) - to_us(datetime.now(UTC))) < 5_000_000


# --------------------------------------------------------------------------- ids and limits


@pytest.mark.parametrize("value", ["a", "user-1", "ünïcødé", "x" * MAX_ID_LENGTH, " padded "])
def test_check_id_accepts(value: str) -> None:
    assert check_id(value, "user_id") == value


@pytest.mark.parametrize(
    "value", ["", "   ", "\t\n", None, 1, b"b", ["x"], "x" * (MAX_ID_LENGTH + 1), "a\x00b"]
)
def test_check_id_refuses(value: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_id(value, "conversation_id")
    assert info.value.argument == "conversation_id"


def test_check_limit() -> None:
    assert check_limit(1) == 1
    assert check_limit(None, allow_none=True) is None
    for bad in (0, -1, True, False, 1.0, "1", None):
        with pytest.raises(InvalidArgumentError) as info:
            check_limit(bad, "limit")
        assert info.value.argument == "limit"


# --------------------------------------------------------------------------- messages


def test_message_record_round_trip() -> None:
    parent = uuid4()
    msg = make_message(
        "hello 😀",
        role=MessageRole.TOOL,
        message_type=MessageType.COMMAND,
        timestamp=datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3))),
        metadata={"k": [1, {"n": None}]},
        parent_id=parent,
    )
    rec = message_to_record(msg, "conv-1")
    assert rec.id == str(msg.id)
    assert (rec.role, rec.message_type) == ("tool", "command")
    assert rec.ts_us == to_us(msg.timestamp)
    assert rec.parent_id == str(parent)
    back = record_to_message(rec)
    assert back == msg.model_copy(update={"conversation_id": "conv-1"})
    assert back.timestamp.utcoffset() == timedelta(hours=-3)


def test_message_record_keeps_naive_timestamps_naive() -> None:
    msg = make_message("naive", timestamp=datetime(2024, 1, 1, 0, 0, 0, 1))
    back = record_to_message(message_to_record(msg, "c"))
    assert back.timestamp.tzinfo is None
    assert back.timestamp == msg.timestamp


def _by_pydantic(rec: MessageRecord) -> Message:
    """The message ``Message``'s own validation makes of a record's fields."""
    return Message(
        id=rec.id,
        role=rec.role,
        content=rec.content,
        message_type=rec.message_type,
        timestamp=datetime.fromisoformat(rec.timestamp),
        metadata=user_metadata(rec.metadata),
        parent_id=rec.parent_id,
        conversation_id=rec.conversation_id,
    )


def test_records_to_messages_gives_what_pydantic_validation_gives() -> None:
    padded = make_message("padded")
    padded.content = "  padded, assigned after validation  "
    messages = [
        make_message(
            "hello 😀",
            role=role,
            message_type=mtype,
            timestamp=datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=h))),
            metadata={"k": [1, {"n": None}], "big": 2**70, LIFECYCLE_KEY: {"x": 1}},
            parent_id=uuid4() if h % 2 else None,
        )
        for h, (role, mtype) in enumerate(zip(MessageRole, MessageType, strict=False))
    ]
    messages += [make_message("naive", timestamp=datetime(2024, 1, 1)), padded]
    records = [message_to_record(m, "conv") for m in messages]
    records.append(
        MessageRecord(str(uuid4()).upper(), "c", "user", "x", "text", "2024-05-06", 0, "{}")
    )
    got = records_to_messages(records)
    want = [_by_pydantic(r) for r in records]
    assert got == want
    for a, b in zip(got, want, strict=True):
        assert a.__getstate__() == b.__getstate__()  # fields, fields set, extras, private
        assert type(a.timestamp.tzinfo) is type(b.timestamp.tzinfo)
        assert a.model_dump_json() == b.model_dump_json()
        assert type(a.role) is MessageRole and type(a.message_type) is MessageType
    assert LIFECYCLE_KEY not in got[0].metadata and got[0].metadata["big"] == 2**70
    assert got[-2].content == "padded, assigned after validation"
    assert [record_to_message(r) for r in records] == want
    again = records_to_messages(records)
    again[0].metadata["k"].append(2)  # each read's messages are its own
    assert got[0].metadata["k"] == [1, {"n": None}]


def test_records_to_messages_without_the_direct_fill_gives_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The installed ``Message`` is filled directly; a ``Message`` with other fields or
    validators would go through its own validation, with the same result here."""
    assert models._DIRECT
    records = [message_to_record(make_message(f"m{i}", metadata={"i": i}), "c") for i in range(3)]
    direct = records_to_messages(records)
    monkeypatch.setattr(models, "_DIRECT", False)
    assert records_to_messages(records) == direct == [_by_pydantic(r) for r in records]


@pytest.mark.parametrize(
    "change",
    [
        {"id": "not-a-uuid"},
        {"parent_id": "not-a-uuid"},
        {"role": "wizard"},
        {"message_type": "hologram"},
        {"content": " \t"},
        {"content": ""},
        {"metadata": "[1]"},
    ],
    ids=repr,
)
def test_records_to_messages_refuses_what_message_refuses(change: dict[str, str]) -> None:
    good = message_to_record(make_message("fine"), "c")
    bad = message_to_record(make_message("odd"), "c")
    for name, value in change.items():
        setattr(bad, name, value)
    with pytest.raises(ValidationError):
        _by_pydantic(bad)
    with pytest.raises(ValidationError):
        records_to_messages([good, bad])


@pytest.mark.parametrize(
    ("message", "argument"),
    [
        ("text", "message"),
        (Message.model_construct(role="wizard", content="x"), "message.role"),
        (Message.model_construct(role="user", content="x", message_type="x"), "message_type"),
        (Message.model_construct(role="user", content=" "), "message.content"),
        (Message.model_construct(role="user", content="x", id="1"), "message.id"),
        (Message.model_construct(role="user", content="x", timestamp=0), "message.timestamp"),
        (Message.model_construct(role="user", content="x", metadata="{}"), "message.metadata"),
        (make_message("x", metadata={"s": {1}}), "message.metadata"),
        (make_message("x", conversation_id="elsewhere"), "conversation_id"),
    ],
)
def test_message_to_record_refuses(message: object, argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        message_to_record(message, "conv")
    assert argument in info.value.argument


def test_message_roles_given_as_strings_are_accepted() -> None:
    msg = Message.model_construct(
        id=uuid4(), role="assistant", content="x", message_type="text", timestamp=utcnow()
    )
    msg.metadata = {}
    rec = message_to_record(msg, "c")
    assert (rec.role, rec.message_type) == ("assistant", "text")


# --------------------------------------------------------------------------- memories


def test_memory_record_round_trip() -> None:
    entry = make_memory_entry(
        "u1",
        "likes tea",
        memory_type=MemoryType.SEMANTIC,
        category="food",
        tags=["drink", "drink", "hot"],
        confidence=0.3,
        importance=0.7,
        expires_at=datetime(2030, 1, 1),
        custom_fields={"x": [1]},
    )
    rec = memory_to_record(entry)
    assert (rec.user_id, rec.memory_type, rec.category) == ("u1", "semantic", "food")
    assert rec.tags == ["drink", "hot"]
    assert (rec.confidence, rec.importance) == (0.3, 0.7)
    assert rec.expires_us == to_us(datetime(2030, 1, 1))
    assert record_to_memory(rec) == entry


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"content": "  "}, "memory_entry.content"),
        ({"user_id": ""}, "memory_entry.user_id"),
        ({"conversation_id": " "}, "memory_entry.conversation_id"),
        ({"memory_type": "dream"}, "memory_entry.memory_type"),
    ],
)
def test_memory_to_record_refuses(change: dict[str, object], argument: str) -> None:
    entry = make_memory_entry("u1").model_copy(update=change)
    with pytest.raises(InvalidArgumentError) as info:
        memory_to_record(entry)
    assert info.value.argument == argument


def test_memory_to_record_refuses_bad_scores_and_fields() -> None:
    entry = make_memory_entry("u1")
    entry.metadata.confidence = 1.5  # pydantic validates on construction only
    with pytest.raises(InvalidArgumentError) as info:
        memory_to_record(entry)
    assert info.value.argument == "memory_entry.metadata.confidence"
    with pytest.raises(InvalidArgumentError) as info:
        memory_to_record(make_memory_entry("u1", custom_fields={"t": (1,)}))
    assert info.value.argument == "memory_entry.metadata.custom_fields"
    with pytest.raises(InvalidArgumentError):
        memory_to_record({"content": "dict"})


def test_memory_filter_matches_every_field() -> None:
    now = to_us(utcnow())
    rec = memory_to_record(
        make_memory_entry(
            "u1",
            memory_type=MemoryType.FACT,
            category="food",
            tags=["a", "b"],
            confidence=0.5,
            importance=0.5,
            expires_at=utcnow() - timedelta(seconds=1),
        )
    )
    base = {"user_id": "u1", "now_us": now, "include_expired": True}
    assert MemoryFilter(**base).matches(rec)
    assert not MemoryFilter(**{**base, "user_id": "u2"}).matches(rec)
    assert MemoryFilter(**base, memory_types=("fact", "episodic")).matches(rec)
    assert not MemoryFilter(**base, memory_types=("episodic",)).matches(rec)
    assert MemoryFilter(**base, categories=("food",)).matches(rec)
    assert not MemoryFilter(**base, categories=("music",)).matches(rec)
    assert MemoryFilter(**base, tags=("z", "b")).matches(rec)
    assert not MemoryFilter(**base, tags=("z",)).matches(rec)
    assert MemoryFilter(**base, min_confidence=0.5, min_importance=0.5).matches(rec)
    assert not MemoryFilter(**base, min_confidence=0.51).matches(rec)
    assert not MemoryFilter(**base, min_importance=0.51).matches(rec)
    assert not MemoryFilter(user_id="u1", now_us=now).matches(rec)  # expired
    # Any user's, and only given ids: what the shared layer reads one entry by.
    assert MemoryFilter(**{**base, "user_id": None}).matches(rec)
    assert MemoryFilter(**base, ids=(rec.id, "other")).matches(rec)
    assert not MemoryFilter(**base, ids=("other",)).matches(rec)


def test_search_request_scopes_hits() -> None:
    now = utcnow()
    live = memory_to_record(make_memory_entry("u1", "kept", conversation_id="c1"))
    gone = memory_to_record(make_memory_entry("u1", "old", expires_at=now - timedelta(seconds=1)))
    request = SearchRequest("u1", "words", frozenset({"memory"}), limit=3)
    assert request.admits_memory(live) and not request.admits_memory(gone)  # unexpired only
    everything = MemoryFilter(user_id="u1", include_expired=True)
    assert request.admits_memory(gone, everything)
    in_c2 = SearchRequest("u1", "words", conversation_id="c2")
    assert not in_c2.admits_memory(live)
    assert not in_c2.admits_message(message_to_record(make_message("hi"), "c1"))
    assert in_c2.with_limit(50).limit == 50 and in_c2.limit == 10
    with pytest.raises(AttributeError):
        request.limit = 4  # type: ignore[misc]


def test_hit_order_is_best_then_newest_then_id() -> None:
    old = message_to_record(make_message("a", timestamp=datetime(2024, 1, 1)), "c")
    new = message_to_record(make_message("b", timestamp=datetime(2024, 1, 2)), "c")
    hits = [SearchHit("message", 1.0, message=old), SearchHit("message", 1.0, message=new)]
    hits.append(SearchHit("message", 2.0, message=old))
    assert [(h.score, h.message.ts_us) for h in sorted(hits, key=hit_order)] == [
        (2.0, old.ts_us),
        (1.0, new.ts_us),
        (1.0, old.ts_us),
    ]


def test_memory_sort_key_orders_by_importance_then_newest() -> None:
    recs = [
        memory_to_record(make_memory_entry("u", f"{i}", importance=imp, created_at=at))
        for i, (imp, at) in enumerate(
            [
                (0.1, datetime(2024, 1, 1)),
                (0.9, datetime(2024, 1, 1)),
                (0.9, datetime(2024, 1, 2)),
            ]
        )
    ]
    assert [r.content for r in sorted(recs, key=memory_sort_key)] == ["2", "1", "0"]


# --------------------------------------------------------------------------- sessions


def test_session_record_round_trip() -> None:
    session = SessionContext(user_id="u1", metadata={"device": "car"}, state={"topic": "x"})
    rec = session_to_record(session)
    assert (rec.session_id, rec.user_id, rec.is_active) == (session.session_id, "u1", True)
    assert rec.conversation_id == session.conversation_id
    assert record_to_session(rec) == session
    session.end_session()
    ended = record_to_session(session_to_record(session))
    assert not ended.is_active
    assert ended.ended_at == session.ended_at


def test_session_record_refuses_bad_metadata() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        session_to_record(SessionContext(user_id="u1", state={"s": {1}}))
    assert info.value.argument == "state"


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"b":"x","c":[1.5,null,true]}',
        '{"big":123456789012345678901234567890,"neg":-98765432109876543210}',
        '{"edge":9223372036854775807,"over":18446744073709551616}',
        '{"x":0.1234567890123456789}',
        "[NaN, Infinity, -Infinity]",
        '"\\ud800 lone"',
        '{"k":1,"k":2}',
        '{"deep":[[[[{"e":"é \\u2028"}]]]]}',
    ],
)
def test_load_json_reads_exactly_what_json_reads(text):
    """The fast JSON reader gives what the standard library gives, types included."""
    for given in (text, text.encode("utf-8", "surrogatepass")):
        got, want = load_json(given), json.loads(text)
        assert repr(got) == repr(want)  # nan, big integers and lone surrogates included
