"""SQLite's ranked full-text query: BM25 computed for as few rows as the exact answer needs.

FTS5 computes ``bm25()`` for every row its expression matches before the best are kept, and
that computation is the cost of a search (about 2 µs a row): a term held by an eighth of a
user's 100,000 messages makes 12,500 rows to score. Two things bound it, and neither changes
the answer:

* **The best rows are cut by rank and rowid inside the full-text query** (SQLite keeps only
  the best few while it goes, in small records), and the records are read for those alone.
  Equal scores are broken newest first afterwards, among every row tied with the last one
  kept; should the rows read not hold the whole tied group, the search runs the plain query.
* **The most common term only adds to the score of rows found by the others** when that
  cannot change the answer (the idea of MaxScore). A term adds at most
  ``idf * (k1 + 1)`` to a row's BM25 score, whatever its frequency and the row's length
  (:func:`term_bound`, with FTS5's own IDF from the index's row and term counts). The query
  ``scope AND body:(rarer terms) AND (scope OR body:common)`` scores each row it matches
  exactly as the full query does (the scope phrase weighs zero, and the terms are summed in
  the same order). When its ``limit``-th score is above the common term's bound, no row
  holding only the common term can enter the answer, and the answer is exact; otherwise the
  search runs the full query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..sql.steps import Fetch, Plan

__all__ = ["K1", "Scored", "quoted", "ranked_rows", "term_bound", "term_order"]

K1 = 1.2
"""FTS5's ``bm25()`` term-frequency saturation: no term adds more than ``idf * (K1 + 1)``."""
SLACK = 64
"""Rows read beyond ``limit``, so that a group of equal scores at the cut is read whole."""
SPLIT_MIN = 1000
"""Rows the most common term must match before the search tries to leave them out."""

Scored = tuple[int, float]
"""``(rowid, score)`` of a full-text row; the score is ``-rank``, higher is better."""

_TOP = (
    "SELECT rowid, -rank FROM search_fts WHERE search_fts MATCH ? AND rowid {side} 0 "
    "ORDER BY rank, rowid DESC LIMIT ?"
)


def quoted(word: str) -> str:
    """``word`` as an FTS5 string: FTS5 syntax in user text (AND, NEAR, *, quotes) is plain."""
    return '"' + word.replace('"', '""') + '"'


def _alternatives(words: Sequence[str]) -> str:
    return " OR ".join(quoted(w) for w in words)


def term_order(terms: Sequence[str]) -> Plan[tuple[int, list[tuple[str, int]]]]:
    """The index's row count and ``terms`` with the rows holding each, rarest first (ties
    by term): the order every expression lists them in, so scores are summed alike."""
    counts = ", ".join("(SELECT count(*) FROM search_fts WHERE search_fts MATCH ?)" for _ in terms)
    rows = yield Fetch(
        f"SELECT block, {counts} FROM search_fts_data WHERE id = 1",
        [f"body : {quoted(t)}" for t in terms],
    )
    row = rows[0] if rows else (b"", *[0] * len(terms))  # no record: an empty index
    ordered = sorted(zip(terms, map(int, row[1:]), strict=True), key=lambda p: (p[1], p[0]))
    return _varint(row[0] or b""), ordered


def _varint(data: bytes) -> int:
    """The SQLite varint at the start of ``data`` (0 if empty). The FTS5 index's record 1
    starts with the row count its ``bm25()`` uses; the column sizes follow."""
    value = 0
    for i, byte in enumerate(data[:9]):
        if i == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            break
    return value


def term_bound(rows_with_term: int, rows: int) -> float:
    """The most one term found in ``rows_with_term`` of the index's ``rows`` adds to a row's
    ``bm25()`` score (FTS5's IDF, floored as FTS5 floors it, times ``K1 + 1``)."""
    idf = math.log((rows - rows_with_term + 0.5) / (rows_with_term + 0.5))
    return max(idf, 1e-6) * (K1 + 1.0)


def _top(expression: str, side: str, limit: int) -> Plan[list[Scored]]:
    rows = yield Fetch(_TOP.format(side=side), [expression, limit + SLACK])
    return [(int(r[0]), float(r[1])) for r in rows]


def _cut(rows: list[Scored], limit: int) -> list[Scored] | None:
    """The rows tied with or above the ``limit``-th (ties are broken on the records), or
    ``None`` when the rows read may not hold the whole tied group at the cut."""
    if len(rows) <= limit:
        return rows
    last = rows[limit - 1][1]
    if len(rows) == limit + SLACK and rows[-1][1] == last:
        return None
    return [r for r in rows if r[1] >= last]


def ranked_rows(
    terms: Sequence[str], scope: str, limit: int, *, alone: bool = False, side: str = ">"
) -> Plan[list[Scored] | None]:
    """The rows of ``scope`` (``side`` ``">"``: messages, ``"<"``: memory entries) that may
    be among the best ``limit`` for ``terms``, best first: the best ``limit`` and every row
    tied with the last of them. ``None``: ties at the cut go beyond what was read (the
    caller runs the plain query). ``alone``: ``scope`` holds every row of the index (its
    owner is the only user), so the expressions need not name it to filter (each naming
    costs a pass over the owner's rows)."""
    rows, ordered = yield from term_order(terms)
    words = [t for t, _ in ordered]
    token = f"scope : {quoted(scope)}"
    head = "" if alone else f"{token} AND "
    common, common_rows = ordered[-1]
    if len(words) > 1 and common_rows >= max(SPLIT_MIN, 4 * (limit + SLACK)):
        rarer = f"{head}body : ({_alternatives(words[:-1])})"
        found = yield from _top(f"{rarer} AND ({token} OR body : {quoted(common)})", side, limit)
        if len(found) >= limit and found[limit - 1][1] > term_bound(common_rows, rows):
            return _cut(found, limit)
    found = yield from _top(f"{head}body : ({_alternatives(words)})", side, limit)
    return _cut(found, limit)
