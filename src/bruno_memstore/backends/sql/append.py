"""Appending messages, as one plan for a group of appends sharing one transaction.

Every append keeps its own ownership check and result. The order of the steps:

1. read the owners of the group's conversations (locked against deletion until the end);
2. look up the ids of the appends into *new* conversations: a new conversation is claimed
   (by its first append with a record not stored yet, or with no records) only when
   something goes into it, so a write of stored ids claims nothing (engines where the look-up
   costs a round trip skip it: step 6 takes the claim back then);
3. create the claimed conversations;
4. refuse the appends into another user's conversation (``enforce_owner``);
5. insert the records whose id is not stored yet (the engine learns which were);
6. take back a conversation created here that nothing went into (its ids were stored
   meanwhile by another writer), and index what was inserted.

A lone message goes to the dialect's :meth:`~.dialect.RowDialect.append_alone` first (a
shorter path where the engine has one); these steps run if that wrote nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...primitives import AppendResult, conversation_taken
from ..kit.appends import Append
from .dialect import Conversation, NewMessage, RowDialect
from .plans import create_conversations, find_conversations, stored_ids
from .steps import Execute, Plan

__all__ = ["Append", "Outcome", "append_group"]

Outcome = AppendResult | Exception | None  # None: run this append again (next round)


def append_group(d: RowDialect, appends: Sequence[Append]) -> Plan[list[Outcome]]:
    """Run the appends in the transaction the plan runs in; one outcome per append."""
    if len(appends) == 1 and len(appends[0].records) == 1:
        alone = yield from d.append_alone(appends[0])
        if alone is not None:
            return [alone]
    body, vector = d.search_body, d.vector_value
    prepared = [[(r, body(r.content), vector(r.vector)) for r in a.records] for a in appends]
    ids = (
        [appends[0].conversation_id]
        if len(appends) == 1
        else sorted({a.conversation_id for a in appends})
    )
    found = yield from find_conversations(d, ids, d.share_lock)
    probe: list[str] = []
    stored: set[str] = set()
    created: set[str] = set()
    if len(found) < len(ids):
        new = [a for a in appends if a.conversation_id not in found]
        if d.probe_new_conversations:
            probe = [r.id for a in new for r in a.records]
        if probe:
            stored = yield from stored_ids(d, probe)
        claimants: dict[str, str] = {}
        for a in new:
            if not a.records or any(r.id not in stored for r in a.records):
                claimants.setdefault(a.conversation_id, a.user_id)
        if claimants:
            claimed, created = yield from create_conversations(d, claimants)
            found.update(claimed)

    outcomes: list[Outcome] = []
    rows: list[NewMessage] = []
    for a, records in zip(appends, prepared, strict=True):
        conv: Conversation | None = found.get(a.conversation_id)
        if conv is None:  # a new conversation, every id stored: nothing is written
            outcomes.append(AppendResult(a.user_id, frozenset(r.id for r in a.records)))
        elif a.enforce_owner and conv.owner != a.user_id:
            outcomes.append(
                conversation_taken(a.conversation_id, backend=d.backend, operation="store_message")
            )
        else:
            outcomes.append(None)
            rows += [NewMessage(r, conv, b, v) for r, b, v in records if r.id not in stored]
    inserted = yield from d.insert_messages(rows, frozenset(probe))

    unused: set[str] = set()
    if created:
        used = {row.record.conversation_id for row in rows if row.record.id in inserted}
        claimed = zip(appends, outcomes, strict=True)
        used |= {a.conversation_id for a, o in claimed if not (a.records or o)}  # empty: a claim
        unused = created - used
        keys = [found[c].key for c in sorted(unused)]
        for condition, args in d.among(d.conversation_ref, keys):
            yield Execute(f"DELETE FROM {d.table('conversations')} WHERE {condition}", args)
    if inserted:
        yield from d.messages_added([row for row in rows if row.record.id in inserted])

    for i, a in enumerate(appends):
        if outcomes[i] is not None:
            if a.conversation_id in unused:
                outcomes[i] = None  # refused for a claim taken back: it may claim it now
            continue
        owner = a.user_id if a.conversation_id in unused else found[a.conversation_id].owner
        outcomes[i] = AppendResult(
            owner, frozenset(r.id for r in a.records if r.id not in inserted)
        )
    return outcomes
