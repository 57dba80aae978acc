"""Retention policies: how much history a store keeps, declared once and enforced by
:meth:`~bruno_memstore.base.MemoryBackend.apply_retention` on every backend.

A policy is a few rules, each optional; a message goes when any rule says so:

* ``keep_last``: the newest N messages of each conversation stay, older ones go.
* ``max_message_age``: messages whose timestamp is older than this go.
* ``max_conversation_age``: a conversation whose newest message is older than this goes
  whole (messages and sessions).

Ages are seconds (or ``timedelta``) before ``now``, measured on message timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError
from .lifecycle import check_ttl
from .models import MessageRecord

__all__ = ["RetentionPolicy", "as_policy", "retention_plan"]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What a store keeps (see the module docstring). An empty policy keeps everything."""

    keep_last: int | None = None
    max_message_age: float | None = None
    max_conversation_age: float | None = None

    def __post_init__(self) -> None:
        n = self.keep_last
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidArgumentError("keep_last", "expected a positive int")
        for name in ("max_message_age", "max_conversation_age"):
            object.__setattr__(self, name, check_ttl(getattr(self, name), name))

    @property
    def empty(self) -> bool:
        return (
            self.keep_last is None
            and self.max_message_age is None
            and (self.max_conversation_age is None)
        )


def as_policy(value: Any) -> RetentionPolicy | None:
    """A :class:`RetentionPolicy` from itself, a mapping of its fields, or ``None``."""
    if value is None or isinstance(value, RetentionPolicy):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {"keep_last", "max_message_age", "max_conversation_age"}
        if unknown:
            raise InvalidArgumentError(
                "retention", f"unknown rule(s): {', '.join(sorted(unknown))}"
            )
        return RetentionPolicy(**value)
    raise InvalidArgumentError("retention", "expected a RetentionPolicy, a dict or None")


def retention_plan(
    policy: RetentionPolicy, records: Sequence[MessageRecord], now_us: int
) -> tuple[bool, list[str]]:
    """What the policy removes from one conversation holding ``records`` (all of its
    messages, in stored order): whether it goes whole, else the ids of messages that go."""
    if not records:
        return False, []
    if policy.max_conversation_age is not None:
        newest = max(r.ts_us for r in records)
        if newest < now_us - round(policy.max_conversation_age * 1_000_000):
            return True, []
    doomed: set[str] = set()
    if policy.keep_last is not None and len(records) > policy.keep_last:
        ordered = sorted(records, key=lambda r: (r.ts_us, r.seq))
        doomed.update(r.id for r in ordered[: len(records) - policy.keep_last])
    if policy.max_message_age is not None:
        cutoff = now_us - round(policy.max_message_age * 1_000_000)
        doomed.update(r.id for r in records if r.ts_us < cutoff)
    return False, [r.id for r in records if r.id in doomed]
