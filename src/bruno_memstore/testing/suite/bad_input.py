"""Bad input: a ``ValueError``-family error naming the argument, and nothing written."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest
from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryEntry, MemoryQuery
from bruno_core.models.message import Message

from ...base import MemoryBackend
from ...capabilities import Capability
from ...errors import InvalidArgumentError
from ...models import MAX_JSON_DEPTH, MAX_LIMIT
from ..builders import make_memory_entry, make_message, new_conversation_id, new_user_id
from ..harness import ConformanceBase, requires

__all__ = ["BadInputSuite"]

_BAD_IDS: list[Any] = ["", "   ", None, 42, b"bytes", ["list"], "x" * 10_000]
_BAD_LIMITS: list[Any] = [0, -1, -100, True, False, 2.5, "10"]


async def _refused(call: Awaitable[Any], argument: str) -> InvalidArgumentError:
    what = _describe(call)  # before awaiting: the frame is gone afterwards
    try:
        await call
    except InvalidArgumentError as exc:
        info = exc
    else:
        pytest.fail(f"{what} did not raise InvalidArgumentError naming {argument!r}")
    assert argument in info.argument, (argument, info.argument)
    assert argument in str(info)
    assert isinstance(info, ValueError)
    return info


def _describe(call: Awaitable[Any]) -> str:
    frame = getattr(call, "cr_frame", None)
    if frame is None:
        return repr(call)
    args = {k: v for k, v in frame.f_locals.items() if k != "self"}
    shown = ", ".join(f"{k}={_safe_repr(v)}" for k, v in args.items())
    return f"{call.__qualname__}({shown})"  # type: ignore[attr-defined]


def _safe_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a malformed model may not even print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


class BadInputSuite(ConformanceBase):
    """Every public method validates its arguments before touching the engine."""

    async def _nothing_written(self, memory: MemoryBackend, uid: str, conv: str) -> None:
        assert await memory.retrieve_messages(conv) == []
        stats = await memory.get_statistics(uid)
        assert (stats["total_messages"], stats["conversations"], stats["sessions"]) == (0, 0, 0)

    async def test_bad_ids_when_storing(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        msg = make_message("valid message, invalid address")
        for bad in _BAD_IDS:
            await _refused(memory.store_message(msg, uid, bad), "conversation_id")
            await _refused(memory.store_message(msg, bad, conv), "user_id")
            await _refused(
                memory.store_messages([msg], conversation_id=bad, user_id=uid), "conversation_id"
            )
        await _refused(memory.store_message(msg), "conversation_id")
        await self._nothing_written(memory, uid, conv)

    async def test_bad_ids_when_reading(self, memory: MemoryBackend) -> None:
        for bad in _BAD_IDS:
            await _refused(memory.retrieve_messages(bad), "conversation_id")
            await _refused(memory.retrieve_context(bad), "user_id")
            if bad is not None:  # None is the default: every conversation of the user
                await _refused(
                    memory.retrieve_context(new_user_id(), conversation_id=bad), "conversation_id"
                )
            await _refused(memory.get_statistics(bad), "user_id")
            await _refused(memory.get_session(bad), "session_id")
            await _refused(memory.clear_history(bad), "conversation_id")
            await _refused(memory.clear_conversation(bad, new_conversation_id()), "user_id")
            await _refused(memory.clear_conversation(new_user_id(), bad), "conversation_id")

    async def test_bad_ids_for_sessions(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        for bad in _BAD_IDS:
            await _refused(memory.create_session(bad), "user_id")
            await _refused(memory.get_context(bad), "user_id")
            if bad is not None:
                await _refused(memory.get_context(uid, bad), "session_id")
            await _refused(memory.end_session(bad), "session_id")
        await _refused(memory.create_session(uid, metadata="not a dict"), "metadata")  # type: ignore[arg-type]
        await _refused(memory.create_session(uid, metadata={"s": {1, 2}}), "metadata")
        stats = await memory.get_statistics(uid)
        assert stats["sessions"] == 0

    async def test_bad_limits(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        await memory.store_message(make_message("one message"), uid, conv)
        for bad in _BAD_LIMITS:
            await _refused(memory.retrieve_messages(conv, limit=bad), "limit")
            await _refused(memory.retrieve_context(uid, limit=bad), "limit")
            await _refused(memory.retrieve_context(uid, limit=bad, conversation_id=conv), "limit")
        assert len(await memory.retrieve_messages(conv, limit=1)) == 1

    async def test_limits_have_a_maximum(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        await memory.store_message(make_message("one message"), uid, conv)
        for big in (MAX_LIMIT + 1, 10**9):
            info = await _refused(memory.retrieve_messages(conv, limit=big), "limit")
            assert f"{MAX_LIMIT:,}" in str(info)  # the message names the maximum
            await _refused(memory.retrieve_context(uid, limit=big), "limit")
            await _refused(memory.retrieve_context(uid, "x", big, strategy="hybrid"), "limit")
            if memory.supports(Capability.FULL_TEXT):
                await _refused(memory.search(uid, "x", limit=big), "limit")
                await _refused(memory.search_messages("x", user_id=uid, limit=big), "limit")
            if memory.supports(Capability.MEMORIES):
                query = MemoryQuery(user_id=uid)
                query.limit = big  # assignment is not validated by the model
                await _refused(memory.retrieve_memories(query), "query.limit")
        assert len(await memory.retrieve_messages(conv, limit=MAX_LIMIT)) == 1
        assert len(await memory.retrieve_context(uid, limit=MAX_LIMIT)) == 1
        assert len(await memory.retrieve_messages(conv, limit=None)) == 1  # None: all of it

    @requires(Capability.FULL_TEXT)
    async def test_bad_search_arguments(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        for bad in _BAD_LIMITS:
            await _refused(memory.search_messages("x", user_id=uid, limit=bad), "limit")
            await _refused(memory.search_memories(uid, "x", limit=bad), "limit")
        for bad in _BAD_IDS:
            if bad is not None:
                await _refused(memory.search_messages("x", user_id=bad), "user_id")
            await _refused(memory.search_memories(bad, "x"), "user_id")
        await _refused(memory.search_messages(None, user_id=uid), "query")  # type: ignore[arg-type]
        await _refused(memory.search(uid, 42), "query")  # type: ignore[arg-type]
        await _refused(memory.search(uid, "x", kinds=("files",)), "kinds")  # type: ignore[arg-type]
        await _refused(memory.retrieve_context(uid, 42), "query")  # type: ignore[arg-type]
        await _refused(memory.retrieve_context(uid, "x", strategy="best"), "strategy")  # type: ignore[arg-type]

    async def test_wrong_message_types(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        for bad in ("just a string", {"role": "user", "content": "a dict"}, None, 3):
            await _refused(memory.store_message(bad, uid, conv), "message")  # type: ignore[arg-type]
        await _refused(
            memory.store_messages("not a list", conversation_id=conv, user_id=uid),  # type: ignore[arg-type]
            "messages",
        )
        await self._nothing_written(memory, uid, conv)

    async def test_malformed_messages(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        good = make_message("fine")
        cases: list[tuple[Message, str]] = [
            (Message.model_construct(role="wizard", content="hi"), "message.role"),
            (Message.model_construct(role="user", content="hi", message_type="smell"), "type"),
            (Message.model_construct(role="user", content="   "), "message.content"),
            (Message.model_construct(role="user", content=""), "message.content"),
            (Message.model_construct(role="user", content=7), "message.content"),
            (Message.model_construct(role="user", content="hi", id="nope"), "message.id"),
            (Message.model_construct(role="user", content="hi", timestamp="now"), "timestamp"),
            (Message.model_construct(role="user", content="hi", metadata=[1]), "message.metadata"),
        ]
        for bad, argument in cases:
            await _refused(memory.store_message(bad, uid, conv), argument)
            # In a batch, a bad message stops the good ones too.
            await _refused(
                memory.store_messages([good, bad], conversation_id=conv, user_id=uid), argument
            )
        await self._nothing_written(memory, uid, conv)

    async def test_metadata_that_is_not_json(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        values: list[dict[str, Any]] = [
            {"tags": {"a", "b"}},
            {"score": float("nan")},
            {"score": float("inf")},
            {"pair": (1, 2)},
            {"nested": {"deep": [1, {2: "int key"}]}},
            {"obj": object()},
            {"raw": b"bytes"},
        ]
        for metadata in values:
            msg = make_message("metadata is wrong", metadata=metadata)
            await _refused(memory.store_message(msg, uid, conv), "message.metadata")
        await self._nothing_written(memory, uid, conv)

    async def test_other_arguments(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        await memory.store_message(make_message("survives"), uid, conv)
        await _refused(memory.clear_history(conv, keep_system_messages="no"), "keep_system")  # type: ignore[arg-type]
        await _refused(memory.clear_history(conv, keep_system_messages=None), "keep_system")  # type: ignore[arg-type]
        assert len(await memory.retrieve_messages(conv)) == 1

    @requires(Capability.MEMORIES)
    async def test_bad_memory_arguments(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        for bad in ("text", {"content": "x"}, None):
            await _refused(memory.store_memory(bad), "memory_entry")  # type: ignore[arg-type]
            await _refused(memory.retrieve_memories(bad), "query")  # type: ignore[arg-type]
        weird = make_memory_entry(uid, "has a set inside", custom_fields={"s": {1, 2}})
        await _refused(memory.store_memory(weird), "custom_fields")
        nan = make_memory_entry(uid, "has NaN inside", custom_fields={"x": float("nan")})
        await _refused(memory.store_memory(nan), "custom_fields")
        blank = make_memory_entry(uid, "fine").model_copy(update={"content": "  "})
        await _refused(memory.store_memory(blank), "content")
        for bad in ("", "  ", 42, None, "x" * 10_000):
            await _refused(memory.delete_memory(bad), "memory_id")  # type: ignore[arg-type]
        assert await memory.retrieve_memories(MemoryQuery(user_id=uid, include_expired=True)) == []
        assert (await memory.get_statistics(uid))["memories"] == 0

    async def test_json_nested_too_deep(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        for depth in (MAX_JSON_DEPTH + 1, 1_000, 5_000):
            deep = _nested(depth)
            msg = make_message("metadata nests too deep", metadata=deep)
            info = await _refused(memory.store_message(msg, uid, conv), "message.metadata")
            assert str(MAX_JSON_DEPTH) in str(info)
            await _refused(memory.create_session(uid, metadata=deep), "metadata")
            session = SessionContext(user_id=uid, conversation_id=conv, state=deep)
            await _refused(memory.save_session(session), "state")
            if Capability.MEMORIES in memory.capabilities:
                entry = make_memory_entry(uid, "too deep", custom_fields=deep)
                await _refused(memory.store_memory(entry), "custom_fields")
        await self._nothing_written(memory, uid, conv)
        # The documented maximum itself is stored and read back as it was.
        deepest = _nested(MAX_JSON_DEPTH)
        await memory.store_message(make_message("as deep as allowed", metadata=deepest), uid, conv)
        assert (await memory.retrieve_messages(conv))[0].metadata == deepest
        session = await memory.create_session(uid, metadata=deepest)
        again = await memory.get_session(session.session_id)
        assert again is not None and again.metadata == deepest

    async def test_session_metadata_that_cannot_be_stored(self, memory: MemoryBackend) -> None:
        uid = new_user_id()
        for metadata in ({"note": "lone \ud800 surrogate"}, {"list": ["\udfff"]}):
            await _refused(memory.create_session(uid, metadata=metadata), "metadata")
        assert (await memory.get_statistics(uid))["sessions"] == 0

    async def test_lone_surrogates_in_ids_and_text(self, memory: MemoryBackend) -> None:
        # A lone surrogate has no UTF-8 form: every backend refuses it in every id and string
        # field, up front, whatever its engine could have held.
        uid, conv = new_user_id(), new_conversation_id()
        bad = f"half {_SURROGATE} a pair"
        msg = make_message("valid message, invalid address")
        await _refused(memory.store_message(msg, bad, conv), "user_id")
        await _refused(memory.store_message(msg, uid, bad), "conversation_id")
        await _refused(memory.store_messages([msg], conversation_id=bad), "conversation_id")
        await _refused(memory.claim_conversation(conv, bad), "user_id")
        text = msg.model_copy(update={"content": bad})
        await _refused(memory.store_message(text, uid, conv), "message.content")
        for metadata in _surrogate_json(bad):
            tagged = make_message("metadata is not text", metadata=metadata)
            await _refused(memory.store_message(tagged, uid, conv), "message.metadata")
            await _refused(
                memory.store_messages([make_message("good"), tagged], conversation_id=conv),
                "message.metadata",
            )
            await _refused(memory.create_session(uid, metadata=metadata), "metadata")
            session = SessionContext(user_id=uid, conversation_id=conv, metadata=metadata)
            await _refused(memory.save_session(session), "metadata")
        await _refused(memory.create_session(bad), "user_id")
        await _refused(memory.get_context(bad), "user_id")
        await _refused(memory.get_context(uid, bad), "session_id")
        for field in ("session_id", "user_id", "conversation_id"):
            session = SessionContext(user_id=uid, conversation_id=conv)
            await _refused(memory.save_session(session.model_copy(update={field: bad})), field)
        await _refused(memory.retrieve_messages(bad), "conversation_id")
        await _refused(memory.get_session(bad), "session_id")
        await _refused(memory.get_statistics(bad), "user_id")
        await self._nothing_written(memory, uid, conv)

    @requires(Capability.MEMORIES)
    async def test_lone_surrogates_in_memory_entries(self, memory: MemoryBackend) -> None:
        uid, conv = new_user_id(), new_conversation_id()
        bad = f"half {_SURROGATE} a pair"
        entry = make_memory_entry(uid, "every field of this entry is fine")
        meta = entry.metadata
        cases: list[tuple[MemoryEntry, str]] = [
            (entry.model_copy(update={"user_id": bad}), "memory_entry.user_id"),
            (entry.model_copy(update={"conversation_id": bad}), "memory_entry.conversation_id"),
            (entry.model_copy(update={"content": bad}), "memory_entry.content"),
        ]
        for name, value in (("category", bad), ("tags", ["fine", bad]), ("source", bad)):
            changed = meta.model_copy(update={name: value})
            cases.append((entry.model_copy(update={"metadata": changed}), f"metadata.{name}"))
        for fields in _surrogate_json(bad):
            changed = meta.model_copy(update={"custom_fields": fields})
            cases.append((entry.model_copy(update={"metadata": changed}), "custom_fields"))
        for bad_entry, argument in cases:
            await _refused(memory.store_memory(bad_entry), argument)
        await _refused(memory.delete_memory(bad), "memory_id")
        await _refused(memory.delete_memory(str(entry.id), user_id=bad), "user_id")
        query = MemoryQuery.model_construct(user_id=bad)
        await _refused(memory.retrieve_memories(query), "query.user_id")
        assert await memory.retrieve_memories(MemoryQuery(user_id=uid, include_expired=True)) == []
        stats = await memory.get_statistics(uid)
        assert (stats["memories"], stats["conversations"]) == (0, 0)
        assert await memory.retrieve_messages(conv) == []


def _nested(depth: int) -> dict[str, Any]:
    """A JSON object nesting ``depth`` levels, objects and lists alternating."""
    value: Any = {"leaf": True}
    for outside in range(depth - 2, -1, -1):  # levels still to add around it
        value = [value] if outside % 2 else {"k": value}
    return value


_SURROGATE = "\udc80"


def _surrogate_json(bad: str) -> list[dict[str, Any]]:
    """JSON objects holding ``bad`` as a key or a value, at the top and deeper down."""
    return [
        {"note": bad},
        {bad: "value"},
        {"outer": {"inner": [1, {"deep": bad}]}},
        {"outer": [{bad: None}]},
    ]
