"""Erasure checks: store text with unique marker words, erase it, look for the words.

:func:`run_erasures` stores messages, sessions and memory entries carrying marker words for
four users, then erases three of them, one way each (``clear_conversation``,
``delete_memory``, ``forget_user``); the fourth user's records stay as a control. A test then
looks for the erased words wherever it can read the engine's storage: in its files
(:func:`find_in_files`) or its keyspace. The control's words must be found there, which
proves that the look reaches the data at all.
"""

from __future__ import annotations

import os
import random
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..base import MemoryBackend
from ..capabilities import Capability
from ..search import terms
from .builders import make_memory_entry, make_message, new_conversation_id, new_user_id

__all__ = ["Erasures", "find_in_files", "marker", "run_erasures"]

_LETTERS = "".join(c for c in string.ascii_lowercase if c not in "aeiouys")


def marker() -> str:
    """A word no other test writes: no vowels, so no stemmer shortens it."""
    return "zqxmark" + "".join(random.choices(_LETTERS, k=10))


def _variants(word: str) -> set[str]:
    """The word and every form the text analysis stores of it."""
    return {word, *terms(word)}


@dataclass
class Erasures:
    """What :func:`run_erasures` erased and kept, as marker words (with their analysed forms)."""

    erased: dict[str, set[str]] = field(default_factory=dict)  # how erased -> words
    kept: set[str] = field(default_factory=set)
    kept_user: str = ""
    users: dict[str, str] = field(default_factory=dict)  # how erased -> user id

    @property
    def erased_words(self) -> set[str]:
        return set().union(*self.erased.values())


async def run_erasures(memory: MemoryBackend, *, control: bool = True) -> Erasures:
    """Store marked records for up to four users and erase three of them (see the module).

    * ``clear_conversation``: a conversation of two messages and its session, cleared;
    * ``delete_memory``: one memory entry (word in content, category, tag and custom field);
    * ``forget_user``: both of the above, and a session of its own with the word in its
      metadata; then the user is forgotten;
    * ``kept`` (the control, with ``control``): all of the above, never erased.

    Without ``Capability.MEMORIES`` no entries are written and ``delete_memory`` is left out;
    without ``Capability.LISTING`` ``forget_user`` is left out.
    """
    out = Erasures()
    memories = memory.supports(Capability.MEMORIES)
    ways = ["clear_conversation"]
    if memories:
        ways.append("delete_memory")
    if memory.supports(Capability.LISTING):
        ways.append("forget_user")
    if control:
        ways.insert(0, "kept")
    plans: list[tuple[str, str, str, str | None]] = []
    for way in ways:
        user, conv, word = new_user_id(), new_conversation_id(), marker()
        entry_id = None
        if way != "delete_memory":
            await memory.store_messages(
                [
                    make_message(f"my secret word is {word}"),
                    make_message(f"{word} {word}, said the assistant", role="assistant"),
                ],
                conversation_id=conv,
                user_id=user,
            )
            await memory.get_context(user, conv)  # a session in the conversation
        if way in ("forget_user", "kept"):
            await memory.create_session(user, {"note": f"session about {word}"})
        if memories and way != "clear_conversation":
            entry = make_memory_entry(
                user,
                f"the user whispered {word}",
                conversation_id=conv,
                category=f"cat {word}",
                tags=[f"tag-{word}"],
                custom_fields={"why": word},
            )
            await memory.store_memory(entry)
            entry_id = str(entry.id)
        if way == "kept":
            out.kept_user, out.kept = user, _variants(word)
        else:
            out.users[way] = user
            out.erased[way] = _variants(word)
            plans.append((way, user, conv, entry_id))
    # Everything is written before anything is erased: the erased records sit among others.
    for way, user, conv, entry_id in plans:
        if way == "clear_conversation":
            await memory.clear_conversation(user, conv)
        elif way == "delete_memory":
            assert entry_id is not None
            await memory.delete_memory(entry_id)
        else:
            await memory.forget_user(user)
    return out


def find_in_files(
    roots: Iterable[str | os.PathLike[str]], words: Iterable[str]
) -> dict[str, list[str]]:
    """Which of ``words`` occur in the bytes of the files under ``roots``: word -> files."""
    needles = {w: w.encode() for w in words}
    found: dict[str, list[str]] = {}
    for root in roots:
        base = Path(root)
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            try:
                data = path.read_bytes()
            except OSError:
                continue  # a file that vanished (a closed WAL) or a socket
            for word, needle in needles.items():
                if needle in data:
                    found.setdefault(word, []).append(str(path))
    return found
