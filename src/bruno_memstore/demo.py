"""A scripted, offline run of bruno-core's ``BaseAssistant`` over a memory store.

:class:`ScriptedLLM` is an ``LLMInterface`` that answers from a list of replies and keeps a
copy of every message list it is given, so examples and tests can see exactly what context
the assistant built. :func:`run_demo` plays a user planning a trip over three sessions on
different days, stores the facts worth remembering as memory entries, recalls them into the
last session, and reports what the memory holds. ``bruno-memstore demo`` renders that report.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bruno_core.base import BaseAssistant
from bruno_core.interfaces.llm import LLMInterface
from bruno_core.models.memory import MemoryEntry, MemoryMetadata, MemoryQuery, MemoryType
from bruno_core.models.message import Message, MessageRole

from .base import MemoryBackend
from .models import SearchResult, utcnow

__all__ = [
    "DEMO_USER",
    "DemoReport",
    "DemoSession",
    "Fact",
    "ScriptedLLM",
    "run_demo",
    "script",
]

DEMO_USER = "maya"


class ScriptedLLM(LLMInterface):
    """An offline ``LLMInterface`` with deterministic replies.

    Args:
        replies: answers returned in order; once used up, each answer quotes the last user
            message.
        model: the name reported by ``get_model_info``.

    Attributes:
        calls: a copy of the messages passed to each ``generate`` call, in call order.
    """

    def __init__(self, replies: Iterable[str] = (), *, model: str = "scripted") -> None:
        self._replies = deque(replies)
        self._model = model
        self._system_prompt: str | None = None
        self.calls: list[list[Message]] = []

    async def generate(
        self,
        messages: list[Message],
        temperature: float | None = None,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> str:
        # Copy: BaseAssistant appends its reply to the very list it passes in.
        self.calls.append([m.model_copy(deep=True) for m in messages])
        if self._replies:
            return self._replies.popleft()
        last = next((m for m in reversed(messages) if m.role == MessageRole.USER), None)
        return f"You said: {last.content}" if last is not None else "Hello!"

    async def stream(
        self,
        messages: list[Message],
        temperature: float | None = None,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[str]:
        text = await self.generate(messages, temperature, max_tokens, **kwargs)
        words = text.split(" ")
        for i, word in enumerate(words):
            yield word if i == len(words) - 1 else word + " "

    def get_token_count(self, text: str) -> int:
        return len(text.split())

    async def check_connection(self) -> bool:
        return True

    async def list_models(self) -> list[str]:
        return [self._model]

    def get_model_info(self) -> dict[str, Any]:
        return {"model": self._model, "provider": "scripted", "offline": True}

    def set_system_prompt(self, prompt: str) -> None:
        self._system_prompt = prompt

    def get_system_prompt(self) -> str | None:
        return self._system_prompt


# ==================================================================== the script


@dataclass(frozen=True)
class Fact:
    """A memory entry the application stores after a session."""

    content: str
    memory_type: MemoryType
    category: str
    tags: tuple[str, ...]
    importance: float
    expired: bool = False  # already past its expiry when the last session runs


@dataclass(frozen=True)
class DemoSession:
    """One session of the scripted conversation: a day, its turns and what to remember."""

    day: str
    topic: str
    conversation_id: str
    turns: tuple[tuple[str, str], ...]  # (user says, assistant replies)
    facts: tuple[Fact, ...] = ()


def script() -> tuple[DemoSession, ...]:
    """The three sessions the demo plays, oldest first."""
    return (
        DemoSession(
            day="Monday",
            topic="dates, budget, food needs",
            conversation_id="japan-trip-monday",
            turns=(
                (
                    "Hi! My partner Sam and I are planning two weeks in Japan this April. "
                    "We'd love to catch the cherry blossoms.",
                    "What a lovely plan! Early April is usually peak cherry-blossom season in "
                    "Tokyo and Kyoto. Do you have your dates yet?",
                ),
                (
                    "We land in Tokyo on April 3 and fly home from Osaka on April 17. Our budget "
                    "is about 4,000 euros for the two of us, flights already paid.",
                    "Got it: Tokyo on 3 April, home from Osaka on 17 April, about 4,000 euros on "
                    "the ground for two. That leaves room for one night in a ryokan.",
                ),
                (
                    "Two things about food: I'm vegetarian, and Sam has a severe peanut allergy.",
                    "Thanks for telling me. Every food suggestion will be vegetarian and "
                    "peanut-free, and I'd carry an allergy card written in Japanese.",
                ),
            ),
            facts=(
                Fact(
                    "Lands in Tokyo on 3 April and flies home from Osaka on 17 April.",
                    MemoryType.FACT,
                    "itinerary",
                    ("japan", "dates"),
                    0.9,
                ),
                Fact("Maya is vegetarian.", MemoryType.LONG_TERM, "diet", ("food",), 1.0),
                Fact(
                    "Sam, Maya's partner, has a severe peanut allergy.",
                    MemoryType.LONG_TERM,
                    "health",
                    ("food", "allergy"),
                    1.0,
                ),
                Fact(
                    "Budget: about 4,000 euros on the ground for two; flights already paid.",
                    MemoryType.FACT,
                    "budget",
                    ("money",),
                    0.7,
                ),
                Fact(
                    "Check this week whether the Hakone ropeway is running.",
                    MemoryType.SHORT_TERM,
                    "todo",
                    ("hakone",),
                    0.4,
                    expired=True,
                ),
            ),
        ),
        DemoSession(
            day="Wednesday",
            topic="a ryokan in Kyoto, a day in Nara",
            conversation_id="japan-trip-wednesday",
            turns=(
                (
                    "Back again! Where should we stay in Kyoto? We'd like a traditional ryokan "
                    "for two nights.",
                    "Higashiyama is a good base: you can walk to Kiyomizu-dera and the "
                    "Philosopher's Path, and many ryokan there serve shojin ryori, the Buddhist "
                    "vegetarian cuisine.",
                ),
                (
                    "Perfect. We booked Ryokan Sakura in Higashiyama for the nights of April 8 "
                    "and 9.",
                    "Lovely choice. Ryokan Sakura in Higashiyama, 8 and 9 April. Mention Sam's "
                    "peanut allergy when you confirm dinner.",
                ),
                (
                    "Could we fit in a day trip to Nara to see the deer?",
                    "Easily: Nara is about 45 minutes from Kyoto by train. 10 April works well, "
                    "before you move on to Osaka.",
                ),
            ),
            facts=(
                Fact(
                    "Booked Ryokan Sakura in Higashiyama, Kyoto, for the nights of 8 and 9 April.",
                    MemoryType.FACT,
                    "itinerary",
                    ("kyoto", "lodging"),
                    0.9,
                ),
                Fact(
                    "Day trip to Nara to see the deer on 10 April.",
                    MemoryType.FACT,
                    "itinerary",
                    ("nara", "day-trip"),
                    0.6,
                ),
            ),
        ),
        DemoSession(
            day="Saturday",
            topic="final recap before leaving",
            conversation_id="japan-trip-saturday",
            turns=(
                (
                    "We leave on Thursday! Can you recap our Kyoto plans?",
                    "Of course: two nights at Ryokan Sakura in Higashiyama on 8 and 9 April, "
                    "then a day trip to Nara on the 10th before you head to Osaka.",
                ),
                (
                    "And what should we say at restaurants?",
                    "Say you are vegetarian ('bejitarian desu') and show Sam's card for the "
                    "peanut allergy ('pinattsu arerugii'). Shojin ryori restaurants near the "
                    "ryokan are a safe choice.",
                ),
            ),
        ),
    )


# ==================================================================== the run


@dataclass
class DemoReport:
    """What :func:`run_demo` did and found, ready to print."""

    user_id: str
    sessions: tuple[DemoSession, ...]
    recalled_note: str
    last_context: list[Message]
    searches: list[tuple[str, list[SearchResult]]]
    stored: list[MemoryEntry]
    recalls: list[tuple[str, list[MemoryEntry]]]
    visible_memories: int
    all_memories: int
    purged: int
    statistics: dict[str, Any]
    llm_calls: int
    seconds: float = 0.0
    search_mode: str = "keyword"


# The last shares no word with what it should find: hybrid search finds it by meaning.
SEARCH_QUERIES = ("where are we staying in Kyoto", "peanut allergy", "which hotel did we reserve")


async def run_demo(memory: MemoryBackend, *, user_id: str = DEMO_USER) -> DemoReport:
    """Play :func:`script` through a real ``BaseAssistant`` on ``memory`` and report.

    The memory is used as an application would: the assistant stores every message and asks
    for context; the application stores facts after each session, ends the session, and
    opens the last session with a note recalled from memory.
    """
    started = time.perf_counter()
    sessions = script()
    llm = ScriptedLLM(reply for s in sessions for _, reply in s.turns)
    assistant = BaseAssistant(llm=llm, memory=memory)
    await assistant.initialize()
    stored: list[MemoryEntry] = []
    note = ""
    try:
        for index, session in enumerate(sessions):
            conv = session.conversation_id
            if index == len(sessions) - 1:
                note = await _recall_note(memory, user_id)
                system = Message(
                    role=MessageRole.SYSTEM, content=note, metadata={"day": session.day}
                )
                await memory.store_message(system, user_id, conv)
            for user_text, _ in session.turns:
                message = Message(
                    role=MessageRole.USER, content=user_text, metadata={"day": session.day}
                )
                await assistant.process_message(message, user_id=user_id, conversation_id=conv)
            for fact in session.facts:
                entry = _entry(fact, user_id, conv)
                await memory.store_memory(entry)
                stored.append(entry)
            if index < len(sessions) - 1:
                await memory.end_session(conv)  # BaseAssistant's session id is its conversation id
    finally:
        await assistant.shutdown()

    searches = [(q, await memory.search(user_id, q, limit=5)) for q in SEARCH_QUERIES]
    recalls = [
        (
            "MemoryQuery(tags=['food'])",
            await memory.retrieve_memories(MemoryQuery(user_id=user_id, tags=["food"])),
        ),
        (
            "MemoryQuery(query_text='ryokan booking in Kyoto', memory_types=[FACT], limit=2)",
            await memory.retrieve_memories(
                MemoryQuery(
                    user_id=user_id,
                    query_text="ryokan booking in Kyoto",
                    memory_types=[MemoryType.FACT],
                    limit=2,
                )
            ),
        ),
    ]
    visible = await memory.retrieve_memories(MemoryQuery(user_id=user_id, limit=100))
    everything = await memory.retrieve_memories(
        MemoryQuery(user_id=user_id, limit=100, include_expired=True)
    )
    purged = await memory.purge_expired()
    statistics = await memory.get_statistics(user_id)
    return DemoReport(
        user_id=user_id,
        sessions=sessions,
        recalled_note=note,
        last_context=llm.calls[-1],
        searches=searches,
        search_mode=memory.search_mode,
        stored=stored,
        recalls=recalls,
        visible_memories=len(visible),
        all_memories=len(everything),
        purged=purged,
        statistics=statistics,
        llm_calls=len(llm.calls),
        seconds=time.perf_counter() - started,
    )


async def _recall_note(memory: MemoryBackend, user_id: str) -> str:
    important = await memory.retrieve_memories(
        MemoryQuery(user_id=user_id, min_importance=0.8, limit=5)
    )
    facts = " ".join(e.content for e in important)
    return f"Notes from earlier sessions with this user: {facts}"


def _entry(fact: Fact, user_id: str, conversation_id: str) -> MemoryEntry:
    now = utcnow()
    return MemoryEntry(
        content=fact.content,
        memory_type=fact.memory_type,
        user_id=user_id,
        conversation_id=conversation_id,
        metadata=MemoryMetadata(
            source="conversation",
            category=fact.category,
            tags=list(fact.tags),
            importance=fact.importance,
        ),
        # The demo's days pass in seconds: a short-term to-do from Monday is stale by Saturday.
        expires_at=now - timedelta(minutes=1) if fact.expired else None,
    )
