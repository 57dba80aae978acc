"""The compatibility dataset: what an old version of bruno-memstore writes, and the dump of
everything it reads back.

Run as a script by the code under comparison (``python _dataset.py SPEC OUT``): it builds the
store that ``SPEC`` (JSON) describes, writes the dataset, and saves the manifest and the dump
to ``OUT`` (JSON). Imported, :func:`open_store` and :func:`dump` let other code read the same
store and compare. Only the public API is used, and nothing outside the installed packages is
imported, so that any version of the package can run this file.

The dataset: two users, two conversations each (roles, message types, nested metadata, parent
ids, non-ASCII text, a timestamp tie broken by arrival order, an offset time zone), messages
stored in batches and one by one, memory entries with tags, categories, custom fields and
expiry (one long expired, one expiring in 2100, one deleted), a saved session and a created
and ended one. Where the backend keeps vectors they come from :class:`HashEmbedding`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import json
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bruno_core.models.context import SessionContext
from bruno_core.models.memory import MemoryEntry, MemoryMetadata, MemoryQuery, MemoryType
from bruno_core.models.message import Message, MessageRole, MessageType

import bruno_memstore
from bruno_memstore import Capability

__all__ = ["HashEmbedding", "dump", "open_store", "write"]

NS = uuid.UUID("6f1d0c2e-1b7a-4c55-9a43-3c0f5e2b8d11")
BASE = datetime(2024, 3, 9, 8, 30, 0, 250001, tzinfo=UTC)
ALICE, BOB = "alice-compat", "bob-compat"
CONVERSATIONS = {ALICE: ("alice-lighthouse", "alice-kitchen"), BOB: ("bob-taxes", "bob-trip")}
QUERIES = ("lighthouse keeper", "café crème", "kitten", "tax return", "日本語")


def _id(name: str) -> uuid.UUID:
    return uuid.uuid5(NS, name)


def _at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


class HashEmbedding:
    """A tiny deterministic embedding: every word and every three-letter piece of a word adds
    ±1 to one of 32 dimensions, both chosen by a hash. Texts sharing words or parts of words
    are near; it needs no model files."""

    model_name = "compat-hash-32"
    dimension = 32

    async def embed_texts(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]

    @classmethod
    def vector(cls, text: str) -> list[float]:
        row = [0.0] * cls.dimension
        for word in re.findall(r"\w+", text.lower()):
            padded = f" {word} "
            for piece in [word, *(padded[i : i + 3] for i in range(len(padded) - 2))]:
                digest = hashlib.blake2b(piece.encode("utf-8"), digest_size=2).digest()
                row[digest[0] % cls.dimension] += 1.0 if digest[1] & 1 else -1.0
        if not any(row):
            row[0] = 1.0
        return row


def open_store(spec: dict[str, Any]) -> Any:
    """The memory ``spec`` describes: ``{"cls": "module:Class", "args": [...], "kwargs": {...},
    "vectors": bool}``; with ``vectors`` it embeds with :class:`HashEmbedding`, else not at all."""
    module, name = spec["cls"].split(":")
    cls = getattr(importlib.import_module(module), name)
    model = HashEmbedding() if spec["vectors"] else None
    return cls(*spec.get("args", ()), embedding_model=model, **spec.get("kwargs", {}))


def _messages() -> dict[str, list[Message]]:
    """Per conversation, its messages in arrival order."""
    plus5 = timezone(timedelta(hours=5))
    lighthouse, kitchen = CONVERSATIONS[ALICE]
    taxes, trip = CONVERSATIONS[BOB]

    def msg(key: str, content: str, seconds: float, **fields: Any) -> Message:
        fields.setdefault("role", MessageRole.USER)
        return Message(id=_id(key), content=content, timestamp=_at(seconds), **fields)

    first = msg("m1", "Tell me about the old lighthouse keeper", 0, role=MessageRole.USER)
    return {
        lighthouse: [
            msg("m0", "You are a helpful assistant.", -10, role=MessageRole.SYSTEM),
            first,
            msg(
                "m2",
                "The lighthouse keeper lit the lamp every night 🌊 «phare» — 灯台",
                1,
                role=MessageRole.ASSISTANT,
                parent_id=first.id,
                metadata={"model": "scripted", "tokens": {"in": 12, "out": 30}, "tags": ["sea"]},
            ),
            # A tie with m2's timestamp: arrival order decides.
            msg("m3", "And what did he eat? quotes ' \" ; -- {json}", 1, role=MessageRole.USER),
        ],
        kitchen: [
            msg("m4", "A café crème and a croissant, s'il vous plaît", 20),
            msg(
                "m5",
                "日本語のテキストも保存できます",
                21,
                role=MessageRole.ASSISTANT,
                message_type=MessageType.COMMAND,
                metadata={"lang": "ja", "nested": {"deep": [1, 2.5, None, True]}},
            ),
        ],
        taxes: [
            Message(
                id=_id("m6"),
                role=MessageRole.USER,
                content="When is the quarterly tax return due?",
                timestamp=datetime(2024, 3, 9, 14, 0, 0, 7, tzinfo=plus5),
            ),
            msg("m7", "At the end of the month; the kitten cannot file it", 31),
        ],
        trip: [
            msg("m8", "Our flight to Lisbon was delayed", 40),
            msg("m9", "Ask the crew about the lighthouse tour", 41, role=MessageRole.ASSISTANT),
        ],
    }


def _entries() -> list[MemoryEntry]:
    def entry(key: str, user: str, content: str, importance: float, **fields: Any) -> MemoryEntry:
        meta = {
            "source": "compat",
            "importance": importance,
            "confidence": fields.pop("confidence", 0.9),
            "category": fields.pop("category", None),
            "tags": fields.pop("tags", []),
            "custom_fields": fields.pop("custom_fields", {}),
        }
        created = fields.pop("created_at", _at(50))
        return MemoryEntry(
            id=_id(key),
            content=content,
            user_id=user,
            metadata=MemoryMetadata(**meta),
            created_at=created,
            updated_at=created,
            last_accessed=created,
            **fields,
        )

    return [
        entry(
            "e1",
            ALICE,
            "Alice loves the lighthouse on the northern cape",
            0.9,
            memory_type=MemoryType.LONG_TERM,
            category="places",
            tags=["sea", "light"],
            conversation_id=CONVERSATIONS[ALICE][0],
            custom_fields={"visits": 3, "with": ["Bob", "Zoë"]},
        ),
        entry(
            "e2",
            ALICE,
            "Prefers a café crème in the morning",
            0.6,
            memory_type=MemoryType.SEMANTIC,
            category="food",
            tags=["coffee"],
            expires_at=datetime(2100, 1, 1, tzinfo=UTC),
        ),
        entry(
            "e3",
            ALICE,
            "Was looking after a neighbour's kitten",
            0.4,
            memory_type=MemoryType.EPISODIC,
            created_at=datetime(2019, 6, 1, tzinfo=UTC),
            expires_at=datetime(2020, 1, 1, tzinfo=UTC),
        ),
        entry("e4", ALICE, "A note that is deleted again", 0.2, memory_type=MemoryType.SHORT_TERM),
        entry(
            "e5",
            BOB,
            "Bob files the quarterly tax return himself",
            0.7,
            memory_type=MemoryType.FACT,
            category="money",
            tags=["tax"],
            confidence=0.75,
        ),
    ]


async def write(memory: Any) -> dict[str, Any]:
    """Write the dataset into ``memory`` (a fresh store); return the ids the dump needs."""
    messages = _messages()
    lighthouse, kitchen = CONVERSATIONS[ALICE]
    taxes, trip = CONVERSATIONS[BOB]
    await memory.store_messages(messages[lighthouse], conversation_id=lighthouse, user_id=ALICE)
    for message in messages[kitchen]:
        await memory.store_message(message, ALICE, kitchen)  # the guide's form
    await memory.store_messages(messages[taxes], conversation_id=taxes, user_id=BOB)
    await memory.store_messages(messages[trip], conversation_id=trip, user_id=BOB)
    await memory.store_messages(messages[trip][:1], conversation_id=trip, user_id=BOB)  # again
    if memory.supports(Capability.MEMORIES):
        for item in _entries():
            await memory.store_memory(item)
        await memory.delete_memory(str(_id("e4")), user_id=ALICE)
    saved = SessionContext(
        session_id="alice-session",
        user_id=ALICE,
        conversation_id=kitchen,
        started_at=_at(19),
        last_activity=_at(21),
        state={"step": 2, "topic": "breakfast"},
        metadata={"device": "kitchen ☕"},
    )
    await memory.save_session(saved)
    created = await memory.create_session(BOB, {"device": "phone"})
    await memory.end_session(created.session_id)
    return {"sessions": [saved.session_id, created.session_id]}


ADDED_CAPABILITIES = frozenset({"PRUNING"})
"""Promises added since the old code: what it declares must still be declared."""
ADDED_STATISTICS = ("archived_conversations", "archived_messages")
"""Statistics added since the old code: every count it gave must stay the same."""


async def dump(memory: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Everything the public API reads back from the dataset's store, as plain JSON values.

    A read the backend refuses is dumped as its error class, so both versions must refuse
    the same reads.
    """
    await memory.initialize()  # some backends settle their capabilities when connecting
    declared = sorted(c.name for c in memory.capabilities if c.name not in ADDED_CAPABILITIES)
    out: dict[str, Any] = {"capabilities": declared}
    space = getattr(memory, "vector_space", None)
    out["vector_space"] = None if space is None else [space[0], space[1]]
    for user, conversations in CONVERSATIONS.items():
        mine: dict[str, Any] = out.setdefault(user, {})
        for conv in conversations:
            mine[f"window {conv}"] = await _read(
                memory.retrieve_context(user, conversation_id=conv, limit=50)
            )
            mine[f"newest {conv}"] = await _read(memory.retrieve_messages(conv, limit=3))
        mine["window"] = await _read(memory.retrieve_context(user, limit=4))
        stats = await _read(memory.get_statistics(user))
        if isinstance(stats, dict):
            for key in ADDED_STATISTICS:
                stats.pop(key, None)
        mine["statistics"] = stats
        for name, query in _memory_queries(user).items():
            mine[f"memories {name}"] = await _read(memory.retrieve_memories(query))
        # Hybrid search fuses these two with a ranking that changes between versions by
        # design (docs/search-quality.md); what it fuses is compared exactly here.
        modes = ["keyword"] if memory.supports(Capability.FULL_TEXT) else []
        modes += ["vector"] if memory.supports(Capability.VECTORS) else []
        for mode in modes:
            for text in QUERIES:
                found = await _read(memory.search(user, text, mode=mode))
                mine[f"search {mode} {text}"] = _hits(found)
        for kind in ("conversations", "messages", "memories", "sessions"):
            mine[f"export {kind}"] = await _read(_export(memory, kind, user))
    out["sessions"] = [await _read(memory.get_session(s)) for s in manifest["sessions"]]
    return json.loads(json.dumps(out, sort_keys=True))


def _memory_queries(user: str) -> dict[str, MemoryQuery]:
    return {
        "all": MemoryQuery(user_id=user),
        "with expired": MemoryQuery(user_id=user, include_expired=True),
        "tag sea": MemoryQuery(user_id=user, tags=["sea"]),
        "types": MemoryQuery(user_id=user, memory_types=[MemoryType.SEMANTIC, MemoryType.FACT]),
        "important": MemoryQuery(user_id=user, min_importance=0.65, min_confidence=0.8),
        "category": MemoryQuery(user_id=user, categories=["food", "money"], limit=1),
        "text": MemoryQuery(user_id=user, query_text="lighthouse"),
    }


async def _read(call: Any) -> Any:
    try:
        return _plain(await call)
    except Exception as exc:  # the dump records refusals; both versions must agree
        return {"error": type(exc).__name__}


async def _export(memory: Any, kind: str, user: str) -> list[Any]:
    records: list[Any] = []
    async for batch in memory.export_batches(kind, user):
        records.extend(batch)
    return records


def _hits(found: Any) -> Any:
    """Search results as groups of equal score, best first, each a sorted list of
    ``[kind, id]`` pairs (an engine may return equal scores in any order)."""
    if isinstance(found, dict):
        return found  # a refusal
    groups: list[list[list[str]]] = []
    last: float | None = None
    for hit in found:
        pair = [hit["kind"], (hit["message"] or hit["memory"])["id"]]
        if last is None or abs(hit["score"] - last) > 1e-6:
            groups.append([])
        groups[-1].append(pair)
        last = hit["score"]
    return [sorted(group) for group in groups]


def _plain(value: Any) -> Any:
    """``value`` as JSON values: models and records field by field, vectors rounded."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "tolist"):  # a numpy vector
        return [round(float(x), 5) for x in value.tolist()]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        if items and all(isinstance(x, float) for x in items):
            return [round(x, 5) for x in items]
        return items
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


async def _main(spec_json: str) -> dict[str, Any]:
    memory = open_store(json.loads(spec_json))
    try:
        await memory.initialize()
        manifest = await write(memory)
        result = {
            "code": bruno_memstore.__file__,
            "manifest": manifest,
            "dump": await dump(memory, manifest),
        }
    finally:
        await memory.shutdown()
    return result


if __name__ == "__main__":
    found = asyncio.run(_main(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps(found, ensure_ascii=False), encoding="utf-8")
