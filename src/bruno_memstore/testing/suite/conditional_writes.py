"""``_replace_session``, the conditional write ``HybridMemory`` vouches for a cached copy
with: no public call isolates it, so the suite calls the primitive itself."""

from __future__ import annotations

from dataclasses import replace

from ...base import MemoryBackend
from ...models import session_to_record
from ..builders import new_session_id, new_user_id
from ..harness import ConformanceBase

__all__ = ["ConditionalWriteSuite"]


class ConditionalWriteSuite(ConformanceBase):
    """A session is replaced only while it is stored as the caller expects."""

    async def test_a_session_is_replaced_only_while_stored_as_expected(
        self, memory: MemoryBackend
    ) -> None:
        session = await memory.create_session(new_user_id(), {"v": 1})
        first = await memory._get_session(session.session_id)
        assert first is not None
        second, third = (
            session_to_record(session.model_copy(update={"metadata": {"v": n}})) for n in (2, 3)
        )
        assert await memory._replace_session(second, first)
        assert (await memory.get_session(session.session_id)).metadata == {"v": 2}  # type: ignore[union-attr]
        assert not await memory._replace_session(third, first)  # stored as second by now
        assert (await memory.get_session(session.session_id)).metadata == {"v": 2}  # type: ignore[union-attr]
        elsewhere = replace(first, session_id=new_session_id())
        assert not await memory._replace_session(
            replace(second, session_id=elsewhere.session_id), elsewhere
        )
        assert await memory._get_session(elsewhere.session_id) is None  # absent: not created
        await memory._delete_messages(session.conversation_id, frozenset())  # sessions go too
        assert not await memory._replace_session(third, second)
        assert await memory._get_session(session.session_id) is None  # deleted: not brought back
