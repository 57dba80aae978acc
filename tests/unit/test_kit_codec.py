"""The kit's record codec: one field order, rows and documents, formats already on disk."""

from __future__ import annotations

import pytest

from bruno_memstore.backends.kit.codec import (
    MEMORIES,
    MESSAGE_FIELDS,
    MESSAGES,
    SESSIONS,
    Codec,
    codec_for,
)
from bruno_memstore.models import MemoryRecord, MessageRecord, SessionRecord

MESSAGE = MessageRecord(
    "m1", "c1", "user", "hi", "text", "2021-03-03T10:00:00", 7, "{}", None, "u", 3
)
MEMORY = MemoryRecord(
    "e1", "u", "likes tea", "fact", None, ["a", "b"], 0.5, 0.25, 10, None, None, "{}"
)
SESSION = SessionRecord("s1", "u", "c1", True, 5, "{}")


@pytest.mark.parametrize("record", [MESSAGE, MEMORY, SESSION])
def test_rows_and_documents_round_trip(record) -> None:
    codec = codec_for(type(record).__name__.removesuffix("Record").lower())
    assert codec.from_row(codec.row(record)) == record
    assert codec.from_row(["x", *codec.row(record)], 1) == record
    assert codec.from_document(codec.document(record)) == record
    assert codec.from_document(codec.document(record, drop_none=True)) == record


def test_the_field_order_is_the_records_own() -> None:
    assert MESSAGE_FIELDS[:4] == ("id", "conversation_id", "role", "content")
    assert MESSAGES.row(MESSAGE) == [
        "m1",
        "c1",
        "user",
        "hi",
        "text",
        "2021-03-03T10:00:00",
        7,
        "{}",
        None,
        "u",
        3,
    ]


def test_values_are_converted_to_their_fields_types() -> None:
    row = MEMORIES.row(MEMORY)
    row[5], row[6], row[8] = '["a","b"]', "0.5", 10.0  # JSON tags, text and float numbers
    assert MEMORIES.from_row(row) == MEMORY
    assert SESSIONS.from_row(["s1", "u", "c1", 1, 5, "{}"]).is_active is True
    doc = MEMORIES.document(MEMORY, drop_none=True)
    del doc["tags"]
    assert MEMORIES.from_document(doc).tags == []


def test_other_orders_and_names_describe_stored_formats() -> None:
    stored = MESSAGES.ordered(
        ("role", "content", "message_type", "timestamp", "ts_us", "metadata", "parent_id")
    )
    assert (
        stored.from_row(stored.row(MESSAGE), id="m1", conversation_id="c1", user_id="u", seq=3)
        == MESSAGE
    )
    short = MESSAGES.renamed({"conversation_id": "conv", "user_id": "user"})
    doc = short.document(MESSAGE, omit=("id", "content"))
    assert doc["conv"] == "c1" and "id" not in doc and "content" not in doc
    assert short.from_document(doc, id="m1", content="hi") == MESSAGE
    with pytest.raises(KeyError):
        short.from_document({}, id="m1")
    with pytest.raises(ValueError, match="no field"):
        Codec(MessageRecord, ("id", "nope"))


def test_an_untyped_codec_trusts_the_driver() -> None:
    raw = Codec(MessageRecord, typed=False)
    assert raw.from_row(MESSAGES.row(MESSAGE)) == MESSAGE
