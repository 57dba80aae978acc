"""What a backend promises, declared as flags and checked by the shared layer and the suite."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DATABASE", "OPTIONAL", "REQUIRED", "SEARCHABLE_STORE", "Capability"]


class Capability(StrEnum):
    """A promise a backend makes. The conformance suite tests exactly the declared set."""

    MESSAGES = "messages"  # store, read windows, idempotent by id, ordered
    SESSIONS = "sessions"  # sessions and conversation ownership
    MEMORIES = "memories"  # memory entries with MemoryQuery filters
    DURABLE = "durable"  # acknowledged writes survive a process or server restart
    FULL_TEXT = "full_text"  # relevance-ranked (BM25-family) search
    LISTING = "listing"  # enumerate users/conversations (export, forget_user, statistics)
    TTL = "ttl"  # data can expire on the engine's clock
    VECTORS = "vectors"  # vector similarity search
    PRUNING = "pruning"  # messages deleted one by one: expiry sweeps, retention policies
    IN_PROCESS = "in_process"  # data in this process's memory: calls do no I/O


REQUIRED = frozenset({Capability.MESSAGES, Capability.SESSIONS})
OPTIONAL = frozenset(set(Capability) - REQUIRED)

SEARCHABLE_STORE = REQUIRED | {Capability.MEMORIES, Capability.FULL_TEXT, Capability.LISTING}
"""Everything but durability: what a complete store in process memory promises."""

DATABASE = SEARCHABLE_STORE | {Capability.DURABLE}
"""What a complete durable store promises (SQLite, PostgreSQL, MySQL)."""
