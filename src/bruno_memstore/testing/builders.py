"""Data builders for tests: unique ids, messages, memory entries, a scripted LLM.

Every id is uuid-based, so tests isolate themselves without cleaning up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from bruno_core.interfaces.llm import LLMInterface
from bruno_core.models.memory import MemoryEntry, MemoryMetadata, MemoryType
from bruno_core.models.message import Message, MessageRole, MessageType

from ..base import MemoryBackend
from ..models import utcnow

__all__ = [
    "BASE_TIME",
    "ScriptedLLM",
    "at",
    "collect_export",
    "make_memory_entry",
    "make_message",
    "new_conversation_id",
    "new_session_id",
    "new_user_id",
]

BASE_TIME = datetime(2024, 5, 17, 12, 0, 0, 123456)
"""A fixed naive-UTC instant tests count from, so expected orders do not depend on the clock."""


def new_user_id() -> str:
    """A user id no other test uses."""
    return f"user-{uuid4().hex}"


def new_conversation_id() -> str:
    """A conversation id no other test uses."""
    return f"conv-{uuid4().hex}"


def new_session_id() -> str:
    """A session id no other test uses."""
    return f"sess-{uuid4().hex}"


def at(seconds: float = 0.0, *, base: datetime = BASE_TIME) -> datetime:
    """``base`` plus ``seconds`` (microsecond precision)."""
    return base + timedelta(seconds=seconds)


def make_message(
    content: str = "hello there",
    *,
    role: MessageRole | str = MessageRole.USER,
    timestamp: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    message_type: MessageType = MessageType.TEXT,
    parent_id: UUID | None = None,
    conversation_id: str | None = None,
    id: UUID | None = None,
) -> Message:
    """A validated bruno-core ``Message`` (content is stripped, as bruno-core does)."""
    fields: dict[str, Any] = {
        "role": MessageRole(role),
        "content": content,
        "message_type": message_type,
        "timestamp": timestamp if timestamp is not None else utcnow(),
        "metadata": dict(metadata or {}),
        "parent_id": parent_id,
        "conversation_id": conversation_id,
    }
    if id is not None:
        fields["id"] = id
    return Message(**fields)


def make_memory_entry(
    user_id: str,
    content: str = "the user likes green tea",
    *,
    memory_type: MemoryType = MemoryType.FACT,
    category: str | None = None,
    tags: Iterable[str] = (),
    confidence: float = 1.0,
    importance: float = 0.5,
    created_at: datetime | None = None,
    expires_at: datetime | None = None,
    conversation_id: str | None = None,
    custom_fields: dict[str, Any] | None = None,
    id: UUID | None = None,
) -> MemoryEntry:
    """A validated bruno-core ``MemoryEntry`` for ``user_id``."""
    created = created_at if created_at is not None else utcnow()
    fields: dict[str, Any] = {
        "content": content,
        "memory_type": memory_type,
        "user_id": user_id,
        "conversation_id": conversation_id,
        "metadata": MemoryMetadata(
            source="test",
            category=category,
            tags=list(tags),
            confidence=confidence,
            importance=importance,
            custom_fields=dict(custom_fields or {}),
        ),
        "created_at": created,
        "updated_at": created,
        "last_accessed": created,
        "expires_at": expires_at,
    }
    if id is not None:
        fields["id"] = id
    return MemoryEntry(**fields)


async def collect_export(memory: MemoryBackend, kind: str, user_id: str | None) -> list[Any]:
    """Every record ``memory.export_batches(kind, user_id)`` yields, flattened."""
    out: list[Any] = []
    async for batch in memory.export_batches(kind, user_id):
        out.extend(batch)
    return out


class ScriptedLLM(LLMInterface):
    """An LLM that answers from a script and records the context it was given.

    Args:
        replies: answers, in order; the last one repeats.
    """

    def __init__(self, replies: Sequence[str] = ("ok",)) -> None:
        self.replies = list(replies) or ["ok"]
        self.seen: list[list[Message]] = []

    async def generate(
        self,
        messages: list[Message],
        temperature: float | None = None,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> str:
        self.seen.append(list(messages))
        return self.replies[min(len(self.seen), len(self.replies)) - 1]

    async def stream(
        self,
        messages: list[Message],
        temperature: float | None = None,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[str]:
        yield await self.generate(messages)

    def get_token_count(self, text: str) -> int:
        return len(text.split())

    async def check_connection(self) -> bool:
        return True

    async def list_models(self) -> list[str]:
        return ["scripted"]

    def get_model_info(self) -> dict[str, Any]:
        return {"name": "scripted"}

    def set_system_prompt(self, prompt: str) -> None:
        self._system = prompt

    def get_system_prompt(self) -> str | None:
        return getattr(self, "_system", None)
