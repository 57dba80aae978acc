"""What an SQL engine says about itself: its tables, its statements where they differ, its errors.

The shared plans (:mod:`.plans`, :mod:`.append`, :mod:`.schema`) hold the logic and the order
of the steps; they ask the :class:`Dialect` for:

* the **layout**: each record kind's :class:`Source` (the ``FROM`` clause and, in the
  record's field order, the expressions of its fields), the table names, and the columns
  that refer to a conversation, a user and a memory entry (integer keys on SQLite, ids
  elsewhere);
* **sub-plans** for the writes whose statements differ (creating conversations, inserting
  messages, upserting an owned row, keeping a full-text or vector index beside the rows);
* **text**: how a record's text is analysed for its full-text index, and a query's terms;
* **errors**: which driver errors mean a duplicate key.

The defaults fit a schema keyed by text ids (``user_id`` and ``conversation_id`` columns in
every table), with no index beside the rows; an engine overrides what differs.
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from ...errors import SchemaError
from ...models import MemoryRecord, MessageRecord, SearchHit, SessionRecord
from ..kit.codec import MEMORIES, MEMORY_FIELDS, MESSAGE_FIELDS, MESSAGES, SESSION_FIELDS, SESSIONS
from .steps import Execute, Plan
from .where import marks

if TYPE_CHECKING:
    from ...primitives import AppendResult
    from ..kit.appends import Append

__all__ = [
    "Conversation",
    "Dialect",
    "NewMessage",
    "RowDialect",
    "Source",
    "message_of",
    "nothing",
    "numbered",
]

# Every driver returns a message's values in their types already: no conversion per row.
_MESSAGE_ROWS = MESSAGES.ordered(MESSAGE_FIELDS, typed=False)
_RECORD_FIELDS = (
    MESSAGE_FIELDS,
    MEMORY_FIELDS,
    SESSION_FIELDS,
    ("conversation_id", "user_id"),
)


class Source:
    """Where one kind of record is read from.

    Attributes:
        tables: the ``FROM`` clause, with the kind's alias (``m`` for messages and memory
            entries, ``c`` for conversations, ``s`` for sessions) and any joins.
        columns: the expression of each of the record's fields, in its field order.
        key: the column export pages follow (unique, ordered).
        start: a value below every ``key``.
        select: the columns as a select list.
    """

    __slots__ = ("_fields", "columns", "key", "select", "start", "tables")

    def __init__(self, tables: str, columns: Sequence[str], key: str, start: Any = "") -> None:
        self.tables = tables
        self.columns = tuple(columns)
        self.key = key
        self.start = start
        self.select = ", ".join(self.columns)
        names = next(f for f in _RECORD_FIELDS if len(f) == len(self.columns))
        self._fields = dict(zip(names, self.columns, strict=True))

    def field(self, name: str) -> str:
        """The expression of the field ``name``."""
        return self._fields[name]


class Conversation(NamedTuple):
    """A stored conversation as the writes need it."""

    key: Any  # what other tables refer to it by (its id, or an integer key)
    owner: str  # the owner's user id
    owner_key: Any  # what other tables refer to the owner by (the user id, or a key)


class NewMessage(NamedTuple):
    """A message to insert, with what its engine stores beside it."""

    record: MessageRecord
    conversation: Conversation
    body: Any  # the text for the full-text index (:meth:`Dialect.search_body`)
    vector: Any  # the vector as the engine stores it (:meth:`Dialect.vector_value`)


@functools.lru_cache(maxsize=512)
def _in_list(column: str, n: int) -> str:
    return f"{column} IN ({marks(n)})"


def message_of(row: Sequence[Any], at: int = 0) -> MessageRecord:
    """The message in ``row[at:]``, selected in the record's field order."""
    return _MESSAGE_ROWS.from_row(row, at)


@functools.lru_cache(maxsize=4096)
def numbered(text: str) -> str:
    """``?`` placeholders as ``$1``, ``$2``, ... (statements written with ``$n`` stay)."""
    if "?" not in text:
        return text
    parts = text.split("?")
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))


def nothing(value: Any = None) -> Plan[Any]:
    """A plan that runs no statement and returns ``value``."""
    return value
    yield  # pragma: no cover - makes this a generator


class Dialect(ABC):
    """An SQL engine's layout, statements and error classes (see the module docstring)."""

    backend: ClassVar[str] = "sql"  # the backend name errors carry
    in_chunk: ClassVar[int] = 500  # ids per IN (...) list
    batch: ClassVar[int] = 1000  # rows one statement deletes at most in long deletions
    for_update: ClassVar[str] = " FOR UPDATE"  # locks the rows a write reads, until it ends
    share_lock: ClassVar[str] = ""  # locks rows against deletion by others, until it ends
    conversation_ref: ClassVar[str] = "conversation_id"  # messages/sessions -> conversation
    user_ref: ClassVar[str] = "user_id"  # every table -> its owner
    memory_ref: ClassVar[str] = "id"  # memory entries' own key
    probe_new_conversations: ClassVar[bool] = True  # look ids up before claiming (append)

    conversations: Source
    messages: Source
    memories: Source
    sessions: Source

    # ---------------------------------------------------------------- text of statements

    def table(self, name: str) -> str:
        """The SQL name of one of the store's tables."""
        return name

    def sql(self, text: str) -> str:
        """A statement in the driver's placeholder style (plans write ``?``)."""
        return text

    def among(self, column: str, values: Sequence[Any]) -> list[tuple[str, list[Any]]]:
        """Conditions "``column`` is one of ``values``" with their arguments, as many as
        statements need (``IN (...)`` lists of at most :attr:`in_chunk` values)."""
        size = self.in_chunk
        chunks = (
            [values]
            if len(values) <= size
            else [values[i : i + size] for i in range(0, len(values), size)]
        )
        return [(_in_list(column, len(c)), list(c)) for c in chunks if c]

    def window_scope(
        self, conversation_id: str | None, user_id: str | None
    ) -> tuple[str, list[Any]]:
        """The condition choosing a window's messages (one of them is given at least)."""
        m = self.messages
        sql: list[str] = []
        args: list[Any] = []
        if conversation_id is not None:
            sql.append(f"{m.field('conversation_id')} = ?")
            args.append(conversation_id)
        if user_id is not None:
            sql.append(f"{m.field('user_id')} = ?")
            args.append(user_id)
        return " AND ".join(sql), args

    def after_position(self, ts_us: int, seq: int) -> tuple[str, list[Any]]:
        """Messages after ``(ts_us, seq)`` in window order."""
        return "(m.ts_us, m.seq) > (?, ?)", [ts_us, seq]

    @abstractmethod
    def tags_condition(self, tags: Sequence[str]) -> tuple[str, list[Any]]:
        """The condition "the entry ``m`` has any of ``tags``"."""

    # ---------------------------------------------------------------- rows (the kit's codec)

    def message(self, row: Sequence[Any], at: int = 0) -> MessageRecord:
        """The message in ``row[at:]`` (a :class:`Source`'s select list)."""
        return message_of(row, at)

    def memory(self, row: Sequence[Any], at: int = 0) -> MemoryRecord:
        """The memory entry in ``row[at:]`` (tags as an array or as JSON text)."""
        return MEMORIES.from_row(row, at)

    def session(self, row: Sequence[Any], at: int = 0) -> SessionRecord:
        """The session in ``row[at:]``."""
        return SESSIONS.from_row(row, at)

    def hits(self, rows: Sequence[Any]) -> list[SearchHit]:
        """Search rows ``(kind, score, message columns..., memory columns...)`` as hits."""
        width = len(self.messages.columns)
        return [
            SearchHit("message", float(row[1]), message=self.message(row, 2))
            if row[0] == "message"
            else SearchHit("memory", float(row[1]), memory=self.memory(row, 2 + width))
            for row in rows
        ]

    # ---------------------------------------------------------------- text and vectors

    def search_body(self, content: str) -> Any:
        """What the full-text index keeps for ``content`` (computed before the write)."""
        return None

    def vector_value(self, vector: Any) -> Any:
        """A record's vector as the engine stores it (``None``: none)."""
        return None

    # ---------------------------------------------------------------- owners

    def user_key(self, user_id: str) -> Plan[Any]:
        """What the tables refer to the user by; ``None`` for a user with nothing stored."""
        return nothing(user_id)

    def storage_bytes(self) -> Plan[int | None]:
        """Bytes the store's tables and indexes take, or ``None`` where the engine cannot
        tell."""
        return nothing(None)

    def create_conversations(self, claims: Mapping[str, str]) -> Plan[dict[str, Conversation]]:
        """Insert these conversations (id -> owner); return those inserted. One another
        transaction inserted meanwhile is left out, or raises a duplicate-key error (the
        statement then inserted nothing)."""
        extra = self.conversation_extras()
        names = ", ".join(("conversation_id", "user_id", *extra))
        yield Execute(
            f"INSERT INTO {self.table('conversations')} ({names}) VALUES "
            + ",".join([f"({marks(2 + len(extra))})"] * len(claims)),
            [v for conv, user in claims.items() for v in (conv, user, *extra.values())],
        )
        return {conv: Conversation(conv, user, user) for conv, user in claims.items()}

    def conversation_extras(self) -> dict[str, Any]:
        """Columns a new conversation's row sets besides its id and owner, with values."""
        return {}

    # ---------------------------------------------------------------- writes

    defer_vectors: bool = False
    """Whether ``messages_added`` marks the messages inserted without a vector as waiting
    for it in the ``vector_pending`` table (``vectors="deferred"``, on engines that keep
    that table; see :func:`.plans.without_vectors`)."""

    def messages_added(self, rows: Sequence[NewMessage]) -> Plan[None]:
        """Index messages just inserted (full text, vectors) where the engine keeps such
        indexes beside the rows."""
        return nothing()

    def messages_deleting(self, where: str, args: Sequence[Any]) -> Plan[None]:
        """Before ``DELETE FROM messages WHERE <where>``: drop what indexes them."""
        return nothing()

    def messages_changed(self, owner_keys: Sequence[Any]) -> Plan[None]:
        """These users' message vectors were removed (cached copies must reload)."""
        return nothing()

    @abstractmethod
    def upsert_memory(self, rec: MemoryRecord, body: Any, vector: Any) -> Plan[bool]:
        """Insert the entry or replace the same user's, with what indexes it; ``False``
        (nothing written) if the id holds another user's entry."""

    def memories_deleting(self, keys: Sequence[Any]) -> Plan[None]:
        """Before the memory entries with these keys are deleted: drop what indexes them."""
        return nothing()

    def memories_changed(self, owner_keys: Sequence[Any]) -> Plan[None]:
        """These users' memory-entry vectors were removed or replaced."""
        return nothing()

    @abstractmethod
    def upsert_session(self, rec: SessionRecord, conversation: Conversation) -> Plan[bool]:
        """Insert the session or replace the same user's; ``False`` (nothing written) if
        the id holds another user's session."""

    def delete_rows(self, table: str, where: str, args: Sequence[Any]) -> Plan[int]:
        """``DELETE FROM <table> WHERE <where>``; how many rows went."""
        count = yield Execute(f"DELETE FROM {self.table(table)} WHERE {where}", args)
        return int(count)

    def forget_steps(self, key: Any) -> list[tuple[str | None, str, str, list[Any]]]:
        """The deletions erasing a user, in order: ``(counted as, table, where, args)``."""
        k = self.user_ref
        return [
            (kind, kind, f"{k} = ?", [key])
            for kind in ("messages", "sessions", "memories", "conversations")
        ]

    # ---------------------------------------------------------------- schema

    version_table: ClassVar[str] = "schema_version"

    @abstractmethod
    def schema_version(self) -> Plan[int]:
        """The newest migration applied (0 before the first)."""

    @abstractmethod
    def create_version_table(self) -> Plan[None]:
        """Create the version table (and what holds it) unless it exists."""

    def lock_schema(self) -> Plan[None]:
        """Wait until no other process changes the schema, then hold it (see :mod:`.schema`)."""
        return nothing()

    def unlock_schema(self, done: bool) -> Plan[None]:
        """Release what :meth:`lock_schema` holds; ``done``: its work is to be kept."""
        return nothing()

    def record_version(self, version: int, name: str) -> Execute:
        """The statement recording an applied migration."""
        return Execute(
            f"INSERT INTO {self.table(self.version_table)} (version, name, applied_us) "
            "VALUES (?, ?, ?)",
            (version, name, time.time_ns() // 1000),
        )

    def too_new(self, version: int, latest: int) -> SchemaError:
        return SchemaError(
            f"the database has schema version {version}, newer than this library's "
            f"{latest}; upgrade bruno-memstore to open it",
            backend=self.backend,
            operation="connect",
        )

    # ---------------------------------------------------------------- errors

    def is_duplicate(self, exc: BaseException) -> bool:
        """Whether a statement failed on a unique key."""
        return False


class RowDialect(Dialect):
    """A dialect whose appends and keyword searches run through the shared plans
    (:func:`.append.append_group`, :func:`.plans.text_search`): it inserts rows and
    searches one record kind at a time. An engine with its own statements for both
    (PostgreSQL) derives from :class:`Dialect` alone."""

    # ---------------------------------------------------------------- writes

    def append_alone(self, item: Append) -> Plan[AppendResult | None]:
        """An append of one message (``item`` holds one) by a shorter path of the engine's
        own, in the append's transaction; ``None`` when it wrote nothing and leaves the case
        to the shared append (:func:`.append.append_group`). Default: ``None`` at once."""
        return nothing(None)

    @abstractmethod
    def insert_messages(self, rows: Sequence[NewMessage], probed: frozenset[str]) -> Plan[set[str]]:
        """Insert the messages whose id is not stored yet; return the ids inserted.

        ``probed``: ids already checked (and found missing) in this transaction.
        """

    # ---------------------------------------------------------------- search

    @abstractmethod
    def search_terms(self, query: str) -> Any:
        """A query's terms as the engine's search statement takes them (falsy: none)."""

    @abstractmethod
    def search_messages(
        self, key: Any, terms: Any, conversation_id: str | None, limit: int
    ) -> Plan[list[SearchHit]]:
        """Relevance-ranked hits among the user's (``key``) messages."""

    @abstractmethod
    def search_memories(
        self, key: Any, terms: Any, conditions: tuple[str, list[Any]], limit: int
    ) -> Plan[list[SearchHit]]:
        """Relevance-ranked hits among the user's memory entries meeting ``conditions``."""
