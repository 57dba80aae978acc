"""PostgreSQL's vectors through pgvector: columns sized to the store's vector space with
HNSW indexes, vectors attached to stored rows, filtered nearest-neighbour search (see
docs/backends/postgres.md)."""

from __future__ import annotations

import functools

from ...embeddings.adapter import VectorSpace
from .dialect import PostgresDialect

__all__ = [
    "HNSW_MAX_DIMENSIONS",
    "exact_rows",
    "put_vectors",
    "recorded_space",
    "search_settings",
    "size_vectors",
    "vector_search",
]

# pgvector's HNSW indexes ``vector`` columns of at most this many dimensions; larger vectors
# are searched exactly.
HNSW_MAX_DIMENSIONS = 2000
# HNSW build parameters (pgvector's defaults, named so the docs and the index agree).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
# A user (or conversation) is searched exactly, through the B-tree on user_id, when it has
# fewer rows n than max(EXACT_SCAN_ROWS, sqrt(EXACT_SCAN_FACTOR * limit * N)) in a table
# of N: an exact scan costs about n row reads; an HNSW walk filtered to the user visits about
# limit * N / n rows, each far more costly (measured: 35 times with the user's rows stored
# together, fewer when they are scattered). See docs/backends/postgres.md.
EXACT_SCAN_ROWS = 1000
EXACT_SCAN_FACTOR = 16.0

# Settings of one vector search's transaction. ``enable_sort = off`` leaves the planner one
# way to order the index plan's rows, the HNSW index (the exact plan sorts regardless, and
# chooses it with one-time filters, not costs); no parallel workers start for a plan that
# its one-time filter may skip.
_PLAN_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', $1, true), "
    "set_config('enable_sort', 'off', true), "
    "set_config('max_parallel_workers_per_gather', '0', true)"
)
_SCAN_SETTINGS = f"{_PLAN_SETTINGS}, set_config('hnsw.iterative_scan', 'relaxed_order', true)"


def search_settings(iterative: bool) -> str:
    """The statement setting a vector search's transaction up (``$1``: ``ef_search``);
    ``iterative``: pgvector 0.8's iterative index scans."""
    return _SCAN_SETTINGS if iterative else _PLAN_SETTINGS


def exact_rows(dimension: int) -> int:
    """The exact-scan threshold's floor: every search is exact where HNSW cannot index."""
    return 2**62 if dimension > HNSW_MAX_DIMENSIONS else EXACT_SCAN_ROWS


def recorded_space(meta: dict[str, str]) -> VectorSpace | None:
    """The vector space recorded in the store's metadata, if any."""
    model, dimension = meta.get("vector_model"), meta.get("vector_dimension")
    if model is None or dimension is None:
        return None
    return VectorSpace(model, int(dimension))


def size_vectors(d: PostgresDialect, dimension: int) -> list[str]:
    """Empty ``embedding`` columns of type ``vector(dimension)``, with HNSW indexes.

    Dropping and adding a column is instant whatever the table's size (no rewrite); the
    index of an all-NULL column builds at the speed of a table scan.
    """
    s, vt = d.schema, d.vector_type
    statements: list[str] = []
    for table in ("messages", "memories"):
        statements += [
            f"ALTER TABLE {s}.{table} DROP COLUMN IF EXISTS embedding",
            f"ALTER TABLE {s}.{table} ADD COLUMN embedding {vt}({int(dimension)})",
        ]
        if dimension <= HNSW_MAX_DIMENSIONS:
            statements.append(
                f"""CREATE INDEX {table}_embedding_idx ON {s}.{table}
                USING hnsw (embedding {d.vector_schema}.vector_cosine_ops)
                WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"""
            )
    return statements


def put_vectors(d: PostgresDialect, table: str) -> str:
    """Attach vectors ``$2`` to the rows of ``table`` with ids ``$1`` (others skipped)."""
    return f"""UPDATE {d.schema}.{table} t SET embedding = v.embedding
        FROM unnest($1::text[], $2::{d.vector_type}[]) AS v(id, embedding)
        WHERE t.id = v.id"""


@functools.lru_cache(maxsize=16)
def vector_search(d: PostgresDialect) -> str:
    """The user's records nearest to a vector, in one statement.

    Parameters: ``$1`` user, ``$2`` the query vector, ``$3`` limit, ``$4``/``$5`` include
    messages/memories, ``$6`` conversation or ``NULL``, ``$7..$14`` the memory filter,
    ``$15``/``$16`` the exact-scan threshold: at least ``$15`` rows, and
    ``sqrt($16 * limit * rows in the table)``.

    Every filter is part of the scan's own ``WHERE`` clause. Per kind, one of two plans
    runs (the other is cut off by a one-time filter):

    * *exact*: when the user (or the conversation) holds fewer rows than the threshold,
      they are read through the B-tree on ``user_id`` and sorted by distance. ``+ 0``
      keeps the HNSW index out of this ``ORDER BY``. Its cost grows with the user's
      rows ``n``.
    * *index*: otherwise the HNSW index is walked nearest first, skipping rows that fail
      the filters (with pgvector 0.8's iterative scans it keeps going until ``$3`` rows
      pass): about ``limit * N / n`` rows of a table of ``N``, which is what the
      threshold weighs against ``n``. If it still returns fewer than ``$3`` (the scan
      hit ``hnsw.max_scan_tuples``, or few rows pass the filters), the exact plan runs
      instead, so a filter never starves the result.

    The table's size is PostgreSQL's estimate (``pg_class.reltuples``), read for free.
    """
    s = d.schema
    # Cosine distance, the operator named by its schema (no ``search_path``).
    dist = f"m.embedding OPERATOR({d.vector_schema}.<=>) $2::{d.vector_type}"
    conv = "($6::text IS NULL OR m.conversation_id = $6::text)"
    mem_where = f"m.user_id = $1 AND {d.memory_filter(7)} AND {conv}"

    def plans(kind: str, table: str, at: str, scope: str, where: str) -> str:
        return f"""{kind}_cut AS MATERIALIZED (
            SELECT greatest($15::float8, sqrt($16::float8 * $3::float8
                                              * greatest(c.reltuples, 0)))::int8 AS n
            FROM pg_class c WHERE c.oid = '{s}.{table}'::regclass
        ), {kind}_scope AS MATERIALIZED (
            SELECT count(*) AS n FROM (
                SELECT 1 FROM {s}.{table} m WHERE {scope}
                LIMIT (SELECT n FROM {kind}_cut)
            ) AS x
        ), {kind}_index AS MATERIALIZED (
            SELECT m.id, {dist} AS d, m.{at} AS at FROM {s}.{table} m
            WHERE (SELECT n FROM {kind}_scope) >= (SELECT n FROM {kind}_cut) AND {where}
            ORDER BY {dist}
            LIMIT $3
        ), {kind}_exact AS MATERIALIZED (
            SELECT m.id, {dist} AS d, m.{at} AS at FROM {s}.{table} m
            WHERE ((SELECT n FROM {kind}_scope) < (SELECT n FROM {kind}_cut)
                   OR (SELECT count(*) FROM {kind}_index) < $3)
              AND {where} AND m.embedding IS NOT NULL
            ORDER BY ({dist}) + 0, m.id
            LIMIT $3
        )"""

    msg_scope = f"$4::bool AND m.user_id = $1 AND {conv}"
    mem_scope = "$5::bool AND m.user_id = $1"
    return f"""WITH {plans("msg", "messages", "ts_us", msg_scope, msg_scope)},
        {plans("mem", "memories", "created_us", mem_scope, f"$5::bool AND {mem_where}")},
        hits AS (
            SELECT 'message'::text AS kind, id, d, at FROM msg_exact
            UNION ALL
            SELECT 'message', id, d, at FROM msg_index
            WHERE NOT EXISTS (SELECT 1 FROM msg_exact)
            UNION ALL
            SELECT 'memory', id, d, at FROM mem_exact
            UNION ALL
            SELECT 'memory', id, d, at FROM mem_index
            WHERE NOT EXISTS (SELECT 1 FROM mem_exact)
        ), top AS (
            SELECT kind, id, d, at FROM hits ORDER BY d, at DESC, id LIMIT $3
        )
        {d.top_records("1 - top.d", "top.d")}"""
