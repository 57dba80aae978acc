"""The seeded chat data every system stores: the same messages, in the same order, everywhere.

``users`` users, each with ``CONVERSATIONS`` conversations of ``TURNS`` messages. Turns
alternate ``user`` / ``assistant``; each message holds 3 to 45 words drawn from a vocabulary
of five-letter pseudo-words (consonant, vowel, consonant, vowel, consonant), and carries
``{"turn": i}`` as metadata. All words have the same length and messages separate them with
single spaces, so a substring match of a word (SQL ``LIKE``) is a whole-word match: one
ground truth checks every system's search. Standard library only.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SEED = 2026_12_06
CONVERSATIONS = 10
TURNS = 100
WORDS = 900
_ONSETS = "bdfgklmnprtvz"
_VOWELS = "aeiou"
_CODAS = "kmnprt"  # no final s / d / y: an English stemmer leaves these words whole
_UUIDS = uuid.UUID("0b7e51a4-3d0c-4d8e-a7c2-6a0f9e2b4c10")
_START = datetime(2026, 1, 5, 9, 0, 0)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the data set."""

    index: int  # position in the data set; also orders a conversation's messages
    user: str  # "user-03"
    conversation: str  # "user-03-conv-07"
    conversation_uuid: str  # the same conversation for the APIs that take UUIDs only
    turn: int
    role: str  # "user" or "assistant"
    content: str
    at: datetime  # naive UTC, increasing with index


def vocabulary() -> list[str]:
    """The words messages are made of, sorted."""
    rng = random.Random(f"{SEED}/words")
    words: set[str] = set()
    while len(words) < WORDS:
        words.add(
            rng.choice(_ONSETS)
            + rng.choice(_VOWELS)
            + rng.choice(_ONSETS)
            + rng.choice(_VOWELS)
            + rng.choice(_CODAS)
        )
    return sorted(words)


@dataclass
class DataSet:
    """The messages of ``users`` users, with the lookups the checks need."""

    users: int
    words: list[str] = field(init=False)
    messages: list[ChatMessage] = field(init=False)
    conversations: dict[str, list[ChatMessage]] = field(init=False)
    _holding: dict[tuple[str, str], int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.words = vocabulary()
        self.messages = []
        for u in range(self.users):
            self.messages.extend(_user_messages(u, self.words, len(self.messages)))
        self.conversations = {}
        self._holding = {}
        for m in self.messages:
            self.conversations.setdefault(m.conversation, []).append(m)
            for word in set(m.content.split(" ")):
                key = (m.user, word)
                self._holding[key] = self._holding.get(key, 0) + 1

    @property
    def user_ids(self) -> list[str]:
        return sorted({m.user for m in self.messages})

    def holding(self, word: str, user: str | None = None) -> int:
        """How many messages (of ``user``, or of everyone) contain ``word``."""
        if user is not None:
            return self._holding.get((user, word), 0)
        return sum(self._holding.get((u, word), 0) for u in self.user_ids)

    def fingerprint(self) -> str:
        """SHA-256 of every message, to show that every worker built the same data."""
        digest = hashlib.sha256()
        for m in self.messages:
            digest.update(f"{m.conversation}\t{m.turn}\t{m.role}\t{m.content}\n".encode())
        return digest.hexdigest()

    def read_picks(self, n: int) -> list[str]:
        """``n`` conversations to read, the same for every system."""
        rng = random.Random(f"{SEED}/reads/{self.users}")
        names = list(self.conversations)
        return [rng.choice(names) for _ in range(n)]

    def search_picks(self, n: int) -> list[tuple[str, str]]:
        """``n`` (user, word) searches, the same for every system."""
        rng = random.Random(f"{SEED}/searches/{self.users}")
        users = self.user_ids
        return [(rng.choice(users), rng.choice(self.words)) for _ in range(n)]

    def writer_shares(self, writers: int) -> Iterator[list[ChatMessage]]:
        """Split the data among ``writers`` concurrent writers.

        Conversations are dealt out round-robin; a writer stores its conversations turn by
        turn (turn 0 of each, then turn 1, ...), so each conversation keeps its order.
        """
        names = list(self.conversations)
        for w in range(writers):
            mine = [self.conversations[c] for c in names[w::writers]]
            yield [conv[t] for t in range(TURNS) for conv in mine if t < len(conv)]


def _user_messages(u: int, words: list[str], first: int) -> list[ChatMessage]:
    rng = random.Random(f"{SEED}/user/{u}")
    user = f"user-{u:02d}"
    out = []
    for c in range(CONVERSATIONS):
        conversation = f"{user}-conv-{c:02d}"
        conversation_uuid = str(uuid.uuid5(_UUIDS, conversation))
        for turn in range(TURNS):
            index = first + len(out)
            content = " ".join(rng.choice(words) for _ in range(rng.randint(3, 45)))
            out.append(
                ChatMessage(
                    index=index,
                    user=user,
                    conversation=conversation,
                    conversation_uuid=conversation_uuid,
                    turn=turn,
                    role="user" if turn % 2 == 0 else "assistant",
                    content=content,
                    at=_START + timedelta(milliseconds=index),
                )
            )
    return out
