"""One ``_append_messages`` call as a value, as writers queue and group them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...models import MessageRecord

__all__ = ["Append"]


@dataclass(slots=True)
class Append:
    """One ``_append_messages`` call: its arguments, queued for a writer."""

    conversation_id: str
    user_id: str
    records: Sequence[MessageRecord]
    enforce_owner: bool
