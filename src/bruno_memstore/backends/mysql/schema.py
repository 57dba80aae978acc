"""MySQLMemory's schema: migrations under a named lock (see docs/backends/mysql.md)."""

from __future__ import annotations

from ..sql.dialect import Dialect
from ..sql.schema import Migration, MigrationStep
from ..sql.steps import Execute, Fetch, Plan

__all__ = ["LATEST_VERSION", "STORE_TABLES", "migrations_for", "server_kind"]

STORE_TABLES = (
    "settings",
    "ft_stopwords",
    "conversations",
    "messages",
    "memories",
    "memory_tags",
    "sessions",
    "vector_generations",
    "vector_space",
    "vector_log",
    "vector_pending",
)
"""Every table of a store, without the prefix."""

# Exact, NO PAD comparison: 'a' and 'a ' are different ids. utf8mb4_bin pads on both.
_ID_COLLATION = {"mariadb": "utf8mb4_nopad_bin", "mysql": "utf8mb4_0900_bin"}


def server_kind(server_version: str) -> str:
    """``"mariadb"`` or ``"mysql"``, from a server's version string."""
    return "mariadb" if "mariadb" in server_version.lower() else "mysql"


_TABLE = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={id} ROW_FORMAT=DYNAMIC"
_ID = "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {id}"
_TEXT = "LONGTEXT CHARACTER SET utf8mb4 COLLATE {id}"

# The full-text columns hold our own analysed terms (see mysql.py), so the index gets an
# empty stop list: ft_stopwords is set as innodb_ft_user_stopword_table while they are built.
_STOP_LIST = """CREATE TABLE IF NOT EXISTS {p}ft_stopwords (
        value VARCHAR(30) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
_V1 = (
    # Store-wide settings, e.g. the text-analysis version the search terms were built with.
    f"""CREATE TABLE IF NOT EXISTS {{p}}settings (
        name VARCHAR(64) CHARACTER SET ascii NOT NULL,
        value VARCHAR(255) NOT NULL,
        PRIMARY KEY (name)
    ) {_TABLE}""",
    f"""CREATE TABLE IF NOT EXISTS {{p}}conversations (
        conversation_id {_ID} NOT NULL,
        user_id {_ID} NOT NULL,
        created_us BIGINT NOT NULL,
        PRIMARY KEY (conversation_id),
        KEY ix_user (user_id, conversation_id)
    ) {_TABLE}""",
    f"""CREATE TABLE IF NOT EXISTS {{p}}messages (
        seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
        id {_ID} NOT NULL,
        conversation_id {_ID} NOT NULL,
        user_id {_ID} NOT NULL,
        role VARCHAR(32) CHARACTER SET ascii NOT NULL,
        message_type VARCHAR(32) CHARACTER SET ascii NOT NULL,
        ts_us BIGINT NOT NULL,
        ts_text VARCHAR(64) CHARACTER SET ascii NOT NULL,
        parent_id {_ID} NULL,
        content {_TEXT} NOT NULL,
        metadata {_TEXT} NOT NULL,
        search_terms {_TEXT} NOT NULL,
        PRIMARY KEY (seq),
        UNIQUE KEY ux_id (id),
        KEY ix_conv (conversation_id, ts_us, seq),
        KEY ix_user (user_id, ts_us, seq),
        FULLTEXT KEY ft_terms (search_terms)
    ) {_TABLE}""",
    f"""CREATE TABLE IF NOT EXISTS {{p}}memories (
        id {_ID} NOT NULL,
        user_id {_ID} NOT NULL,
        memory_type VARCHAR(32) CHARACTER SET ascii NOT NULL,
        category {_TEXT} NULL,
        confidence DOUBLE NOT NULL,
        importance DOUBLE NOT NULL,
        created_us BIGINT NOT NULL,
        expires_us BIGINT NULL,
        conversation_id {_ID} NULL,
        content {_TEXT} NOT NULL,
        tags {_TEXT} NOT NULL,
        payload {_TEXT} NOT NULL,
        search_terms {_TEXT} NOT NULL,
        PRIMARY KEY (id),
        KEY ix_user (user_id),
        KEY ix_user_rank (user_id, importance, created_us),
        KEY ix_expires (expires_us),
        FULLTEXT KEY ft_terms (search_terms)
    ) {_TABLE}""",
    # Tags are matched by SHA-256 so that a tag of any length is indexed and compared exactly.
    f"""CREATE TABLE IF NOT EXISTS {{p}}memory_tags (
        memory_id {_ID} NOT NULL,
        user_id {_ID} NOT NULL,
        tag_hash BINARY(32) NOT NULL,
        PRIMARY KEY (memory_id, tag_hash),
        KEY ix_user_tag (user_id, tag_hash)
    ) {_TABLE}""",
    f"""CREATE TABLE IF NOT EXISTS {{p}}sessions (
        session_id {_ID} NOT NULL,
        user_id {_ID} NOT NULL,
        conversation_id {_ID} NOT NULL,
        is_active TINYINT NOT NULL,
        started_us BIGINT NOT NULL,
        payload {_TEXT} NOT NULL,
        PRIMARY KEY (session_id),
        KEY ix_user (user_id, is_active, started_us),
        KEY ix_user_conv (user_id, conversation_id, is_active, started_us),
        KEY ix_conv (conversation_id)
    ) {_TABLE}""",
)

# Vectors: a float32 BLOB beside each message and memory entry (NULL without a model); the
# users' counters and the model's row (see .vectors).
_V2 = (
    f"""CREATE TABLE IF NOT EXISTS {{p}}vector_generations (
        user_hash BINARY(32) NOT NULL,
        generation BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (user_hash)
    ) {_TABLE}""",
    f"""CREATE TABLE IF NOT EXISTS {{p}}vector_space (
        id TINYINT UNSIGNED NOT NULL,
        model VARCHAR(1000) CHARACTER SET utf8mb4 COLLATE {{id}} NOT NULL,
        dimension INT UNSIGNED NOT NULL,
        epoch BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (id)
    ) {_TABLE}""",
)

# The counters of appends, removals and memory entries, and the append log (see .vectors).
_V3 = f"""CREATE TABLE IF NOT EXISTS {{p}}vector_log (
        user_hash BINARY(32) NOT NULL,
        generation BIGINT UNSIGNED NOT NULL,
        ids {_TEXT} NOT NULL,
        PRIMARY KEY (user_hash, generation)
    ) {_TABLE}"""
_COUNTER = "BIGINT UNSIGNED NOT NULL DEFAULT 0"

# Messages stored before their vectors (``vectors="deferred"``), by key and owner only (no
# text): the durable queue the store's task drains. Marked in the message's transaction,
# cleared by the vector's write and by every deletion of the message (see .dialect).
_V4 = f"""CREATE TABLE IF NOT EXISTS {{p}}vector_pending (
        seq BIGINT UNSIGNED NOT NULL,
        user_id {_ID} NOT NULL,
        PRIMARY KEY (seq),
        KEY ix_user (user_id)
    ) {_TABLE}"""
LATEST_VERSION = 4


def migrations_for(d: Dialect, server: str) -> list[Migration]:
    """The schema's migrations as the shared runner applies them, for this prefix and server."""
    prefix = d.prefix  # type: ignore[attr-defined]

    def ddl(text: str) -> str:
        return text.replace("{id}", _ID_COLLATION[server]).replace("{p}", prefix)

    def stop_list() -> Plan[None]:
        yield Execute(ddl(_STOP_LIST))
        # FULLTEXT indexes built from here on use our empty stop list.
        yield Execute(
            "SET SESSION innodb_ft_user_stopword_table = ?",
            (f"{d.database}/{prefix}ft_stopwords",),  # type: ignore[attr-defined]
        )

    def add_column(table: str, column: str, definition: str) -> MigrationStep:
        def run() -> Plan[None]:  # unless the column is there
            found = yield Fetch(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() "
                "AND table_name = ? AND column_name = ?",
                (prefix + table, column),
            )
            if not found:
                yield Execute(f"ALTER TABLE `{prefix}{table}` ADD COLUMN {column} {definition}")

        return run

    return [
        Migration(1, "initial schema", [stop_list, *map(ddl, _V1)]),
        Migration(
            2,
            "vectors",
            [
                add_column("messages", "vector", "BLOB NULL"),
                add_column("memories", "vector", "BLOB NULL"),
                *map(ddl, _V2),
            ],
        ),
        Migration(
            3,
            "vector append log",
            [
                add_column("vector_generations", "message_epoch", _COUNTER),
                add_column("vector_generations", "memory_generation", _COUNTER),
                ddl(_V3),
            ],
        ),
        Migration(4, "messages waiting for their vectors", [ddl(_V4)]),
    ]
