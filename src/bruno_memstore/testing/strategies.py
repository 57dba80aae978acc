"""Hypothesis strategies for messages that stress a backend's round trip.

Text mixes arbitrary Unicode (astral characters and emoji included) with the metacharacters
of the languages engines speak: SQL, JSON, Lua, LIKE patterns, FTS query syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from bruno_core.models.memory import MemoryEntry, MemoryMetadata, MemoryType
from bruno_core.models.message import Message, MessageRole, MessageType
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = [
    "NASTY_SNIPPETS",
    "PROPERTY_SETTINGS",
    "json_values",
    "memory_entries",
    "messages",
    "nasty_text",
    "timestamps",
]

# The memory fixture is shared by a test's examples, which is safe because each example uses
# fresh ids. The same test method runs once per backend class (differing executors): examples
# one backend saved in the Hypothesis database are merely replayed on the others.
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.differing_executors,
    ],
)
"""Settings of the suite's property tests."""

NASTY_SNIPPETS: tuple[str, ...] = (
    "'; DROP TABLE messages;--",
    "\"quoted\" and 'single'",
    '{"a":1}',
    "[[nested]]",
    "]]",
    "%",
    "_",
    "100% of_x",
    "\\",
    "C:\\path\\n",
    "\n",
    "\r\n",
    "\t",
    "$1 ?",
    "NEAR(a b) AND OR NOT *",
    "-- comment /* c */",
    "😀",
    "👩‍👩‍👧",
    "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522",  # Fraktur "Unicode"
    "𠜎",
    "\u200b",
    "مرحبا",
    "日本語",
    "e\u0301",
    "null",
    "true",
)


def nasty_text(forbidden: Sequence[str] = (), *, min_size: int = 0) -> st.SearchStrategy[str]:
    """Strings of arbitrary characters and :data:`NASTY_SNIPPETS`, avoiding ``forbidden``."""
    chars = st.characters(codec="utf-8", exclude_categories=("Cs",))
    piece = st.one_of(st.text(chars, max_size=12), st.sampled_from(NASTY_SNIPPETS))
    text = st.lists(piece, min_size=1, max_size=6).map("".join)
    if forbidden:
        text = text.filter(lambda s: not any(f in s for f in forbidden))
    return text.filter(lambda s: len(s) >= min_size)


def json_values(forbidden: Sequence[str] = ()) -> st.SearchStrategy[Any]:
    """Nested JSON values that survive a JSON round trip unchanged."""
    strings = nasty_text(forbidden)
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**53), max_value=2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        strings,
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
        ),
        max_leaves=12,
    )


_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def timestamps(min_year: int = 1900) -> st.SearchStrategy[datetime]:
    """Naive (UTC by convention) or offset-aware datetimes, to the microsecond."""
    naive = st.datetimes(min_value=datetime(min_year, 1, 2), max_value=datetime(2200, 12, 30))
    return st.one_of(naive, st.tuples(naive, _OFFSETS).map(lambda p: p[0].replace(tzinfo=p[1])))


@st.composite
def messages(
    draw: st.DrawFn,
    forbidden: Sequence[str] = (),
    forbidden_metadata: Sequence[str] = (),
) -> Message:
    """A ``Message`` with every field drawn: role, type, text, timestamp, metadata, parent."""
    content = draw(nasty_text(forbidden).filter(lambda s: bool(s.strip())))
    metadata = draw(
        st.dictionaries(nasty_text(forbidden_metadata), json_values(forbidden_metadata), max_size=4)
    )
    return Message(
        role=draw(st.sampled_from(list(MessageRole))),
        content=content,
        message_type=draw(st.sampled_from(list(MessageType))),
        timestamp=draw(timestamps()),
        metadata=metadata,
        parent_id=draw(st.none() | st.uuids()),
    )


@st.composite
def memory_entries(draw: st.DrawFn, user_id: str, forbidden: Sequence[str] = ()) -> MemoryEntry:
    """A ``MemoryEntry`` of ``user_id`` with every field drawn (fresh id)."""
    text = nasty_text(forbidden).filter(lambda s: bool(s.strip()))
    scores = st.floats(min_value=0.0, max_value=1.0)
    created = draw(timestamps())
    return MemoryEntry(
        content=draw(text),
        memory_type=draw(st.sampled_from(list(MemoryType))),
        user_id=user_id,
        conversation_id=draw(st.none() | st.just("conv-" + "x" * 8)),
        metadata=MemoryMetadata(
            source=draw(nasty_text(forbidden)),
            category=draw(st.none() | text),
            tags=draw(st.lists(text, max_size=4, unique=True)),
            confidence=draw(scores),
            importance=draw(scores),
            custom_fields=draw(
                st.dictionaries(nasty_text(forbidden), json_values(forbidden), max_size=3)
            ),
        ),
        created_at=created,
        updated_at=created,
        last_accessed=created,
        # Never already expired: purge_expired() is store-wide, and another test run sharing
        # the database may purge at any moment.
        expires_at=draw(st.none() | timestamps(min_year=2100)),
    )
