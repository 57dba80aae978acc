"""How keyword and vector evidence become one ranking (the same on every backend).

Each backend answers two questions about a query: which records match its words best
(BM25-family scores) and which lie nearest in embedding space (cosine similarity). The shared
layer asks both for more candidates than it needs (:func:`candidate_count`) and fuses them:

1. **Normalise each side over its candidates** (min-max): the best keyword candidate scores
   1 and the weakest 0, whatever the engine's scale (SQLite's bm25, PostgreSQL's
   ts_rank_cd, our own BM25); likewise for cosine similarity. A record found by one side
   only scores 0 on the other.
2. **Weighted mean**: ``base = (1 - w) * keyword + w * vector`` (``w`` = ``vector_weight``).
3. **Episode evidence**: a message gains ``conversation_weight`` times the best ``base``
   among the other candidates of its *episode*: its conversation, cut wherever candidates
   lie more than ``session_gap_us`` apart in time (30 minutes). Answers sit among the turns
   that discuss their subject, and this lifts a short reply ("Yes, last May!") that neither
   side ranks well alone; cutting by time keeps it working when a user's whole history is
   one conversation.
4. **Neighbour evidence**: a message gains ``neighbour_weight`` times the best ``base`` of
   the candidates it is adjacent to: the message it answers (``parent_id``) and the
   replies to it.
5. **Dates**: when the query names calendar dates (:func:`query_dates`), a message written
   on one of them gains ``date_weight``.
6. **Time**: when the query asks when (:func:`asks_when`), a message that speaks of a time
   (:func:`speaks_of_time`: "last week", "two years ago", a weekday, a month, a year) gains
   ``time_weight``; people answer "when" with the time as they said it then.
7. Divide by 1 plus the weights of the kinds of evidence present among the candidates, so
   scores lie in [0, 1] and a query without any keeps the weighted mean's scale.

``docs/search-quality.md`` holds the measurements behind the defaults (chosen by
leave-one-conversation-out cross-validation on LoCoMo, under every storage layout) and the
variants that lost (reciprocal-rank fusion and a recency term among them).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from .models import SearchHit

__all__ = [
    "DEFAULT_CONVERSATION_WEIGHT",
    "DEFAULT_DATE_WEIGHT",
    "DEFAULT_NEIGHBOUR_WEIGHT",
    "DEFAULT_SESSION_GAP_US",
    "DEFAULT_TIME_WEIGHT",
    "DEFAULT_VECTOR_WEIGHT",
    "DateSpec",
    "SearchMode",
    "asks_when",
    "candidate_count",
    "fuse",
    "hit_key",
    "keyword_scores",
    "query_dates",
    "speaks_of_time",
    "vector_scores",
]

SearchMode = Literal["keyword", "vector", "hybrid"]

DEFAULT_VECTOR_WEIGHT = 0.4
"""Weight of vector similarity in hybrid ranking (the rest is keyword relevance)."""

DEFAULT_CONVERSATION_WEIGHT = 0.6
"""Share of the best other candidate of the same episode added to a hit's score."""

DEFAULT_NEIGHBOUR_WEIGHT = 0.3
"""Share of the best adjacent candidate (parent or reply) added to a hit's score."""

DEFAULT_SESSION_GAP_US: int | None = 30 * 60 * 1_000_000
"""Candidates of one conversation further apart in time than this are separate episodes."""

DEFAULT_DATE_WEIGHT = 0.8
"""Added (before scaling) to a hit written on a calendar date the query names."""

DEFAULT_TIME_WEIGHT = 0.3
"""Added (before scaling) to a hit that speaks of a time when the query asks when."""

_MONTHS = (
    "january february march april may june july august september october november december"
).split()
_MONTH = r"(?P<month>" + "|".join(_MONTHS) + r")"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_DATE_FORMS = [
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}\b(?:,?\s+{_YEAR}\b)?", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}\s+{_DAY}\b(?:,?\s+{_YEAR}\b)?", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}(?:,?\s+{_YEAR})?\b", re.IGNORECASE),
]


@dataclass(frozen=True, slots=True)
class DateSpec:
    """A calendar date a query names: a month, perhaps a day, perhaps a year (UTC)."""

    month: int
    day: int | None = None
    year: int | None = None

    def holds(self, ts_us: int) -> bool:
        when = datetime.fromtimestamp(ts_us / 1e6, UTC)
        return (
            when.month == self.month
            and (self.day is None or when.day == self.day)
            and (self.year is None or when.year == self.year)
        )


def query_dates(query: str) -> list[DateSpec]:
    """The calendar dates ``query`` names in English ("3 March 2021", "May 3", "in June").

    "may" alone is the modal verb as often as the month: it counts only next to a day or
    a year.
    """
    found: list[DateSpec] = []
    taken: list[tuple[int, int]] = []
    for form in _DATE_FORMS:
        for match in form.finditer(query):
            span = match.span()
            if any(a < span[1] and span[0] < b for a, b in taken):
                continue
            parts = match.groupdict()
            day = int(parts["day"]) if parts.get("day") else None
            year = int(parts["year"]) if parts.get("year") else None
            month = _MONTHS.index(parts["month"].lower()) + 1
            if day is not None and not 1 <= day <= 31:
                continue
            if month == 5 and day is None and year is None:
                continue
            taken.append(span)
            found.append(DateSpec(month, day, year))
    return found


_ASKS_WHEN = re.compile(
    r"\b(?:when|how\s+long(?:\s+ago)?|since\s+when"
    r"|(?:what|which)\s+(?:year|month|day|date|week|weekend|time|season))\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9]+")
_YEAR = re.compile(r"(?<![a-z0-9])(?:19|20)\d\d(?![a-z0-9])")
_TIME_WORDS = frozenset(
    "yesterday today tonight tomorrow ago recently lately earlier soon".split()
    + [
        d + s
        for d in "monday tuesday wednesday thursday friday saturday sunday".split()
        for s in ("", "s")
    ]
    + [m for m in _MONTHS if m != "may"]
)
_UNIT_WORDS = "minute hour day night week weekend month year summer winter spring autumn fall"
_UNITS = frozenset(u + s for u in _UNIT_WORDS.split() for s in ("", "s"))
_BEFORE_UNIT = frozenset("last next this past coming few".split())
_BEFORE_UNIT_2 = frozenset({("couple", "of"), ("for", "a")})  # "couple of weeks", "for a year"
_BEFORE_MAY = frozenset("last next this in since early late".split())


def asks_when(query: str) -> bool:
    """Whether ``query`` asks for a time in English ("when ...", "how long ago ...",
    "what year ...")."""
    return _ASKS_WHEN.search(query) is not None


def speaks_of_time(text: str) -> bool:
    """Whether ``text`` holds an English expression of time: a relative one ("yesterday",
    "last week", "two years ago"), a weekday, a month (not the verb "may") or a year."""
    lower = text.lower()
    words = _WORD.findall(lower)
    present = set(words)
    if not present.isdisjoint(_TIME_WORDS) or _YEAR.search(lower):
        return True
    if present.isdisjoint(_UNITS) and "may" not in present:
        return False  # the common case, decided without walking the words
    earlier, before = "", ""
    for word in words:
        if word in _UNITS and (
            before in _BEFORE_UNIT or before.isdigit() or (earlier, before) in _BEFORE_UNIT_2
        ):
            return True
        if word == "may" and before in _BEFORE_MAY:
            return True
        earlier, before = before, word
    return False


def candidate_count(limit: int) -> int:
    """How many candidates each side contributes to a fused ranking of ``limit`` results."""
    return max(10 * limit, 100)


def hit_key(hit: SearchHit) -> tuple[str, str]:
    """``(kind, id)`` of the record a hit names."""
    rec = hit.message if hit.message is not None else hit.memory
    assert rec is not None
    return (hit.kind, rec.id)


def _tiebreak(hit: SearchHit) -> tuple[int, str]:
    if hit.message is not None:
        return (-hit.message.ts_us, hit.message.id)
    assert hit.memory is not None
    return (-hit.memory.created_us, hit.memory.id)


def _conversation(hit: SearchHit) -> str | None:
    if hit.message is not None:
        return hit.message.conversation_id
    assert hit.memory is not None
    return hit.memory.conversation_id


def keyword_scores(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """Keyword hits with scores divided by the best one (best = 1.0), best first."""
    best = max((h.score for h in hits), default=0.0)
    return [_rescored(h, h.score / best if best > 0 else 0.0) for h in hits]


def vector_scores(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """Vector hits with cosine similarities clipped to [0, 1], best first."""
    return [_rescored(h, min(max(h.score, 0.0), 1.0)) for h in hits]


def _rescored(hit: SearchHit, score: float) -> SearchHit:
    return SearchHit(hit.kind, score, hit.message, hit.memory)


def _min_max(hits: Sequence[SearchHit]) -> dict[tuple[str, str], float]:
    """Scores scaled to [0, 1] over the candidates (all 1.0 when they are all equal)."""
    if not hits:
        return {}
    lo = min(h.score for h in hits)
    hi = max(h.score for h in hits)
    span = hi - lo
    if span <= 1e-12:
        return {hit_key(h): 1.0 for h in hits}
    return {hit_key(h): (h.score - lo) / span for h in hits}


def _time(hit: SearchHit) -> int:
    if hit.message is not None:
        return hit.message.ts_us
    assert hit.memory is not None
    return hit.memory.created_us


def _parent(hit: SearchHit) -> str | None:
    return hit.message.parent_id if hit.message is not None else None


def _episodes(
    records: dict[tuple[str, str], SearchHit], session_gap_us: int | None
) -> dict[tuple[str, str], tuple[str, int]]:
    """Each candidate's episode: its conversation, cut where candidates lie further apart
    in time than ``session_gap_us`` (``None``: the whole conversation is one episode)."""
    episode: dict[tuple[str, str], tuple[str, int]] = {}
    if session_gap_us is None:
        for key, hit in records.items():
            conv = _conversation(hit)
            if conv is not None:
                episode[key] = (conv, 0)
        return episode
    by_conv: dict[str, list[tuple[int, tuple[str, str]]]] = {}
    for key, hit in records.items():
        conv = _conversation(hit)
        if conv is not None:
            by_conv.setdefault(conv, []).append((_time(hit), key))
    for conv, timed in by_conv.items():
        timed.sort()
        part, last = 0, timed[0][0]
        for ts, key in timed:
            if ts - last > session_gap_us:
                part += 1
            last = ts
            episode[key] = (conv, part)
    return episode


def _timed(
    raw: Sequence[tuple[float, tuple[str, str], SearchHit]], time_weight: float, limit: int
) -> set[tuple[str, str]]:
    """The candidates that speak of a time, among those the time bonus can bring into the
    best ``limit``; plus the first other one found, if any (so the bonus counts as present
    among the candidates, as in the divisor, without reading every candidate's text)."""
    scores = sorted((score for score, _, _ in raw), reverse=True)
    floor = scores[limit - 1] - time_weight if len(scores) >= limit > 0 else float("-inf")
    near = [(key, hit) for score, key, hit in raw if score >= floor]
    timed = {key for key, hit in near if _speaks(hit)}
    if not timed:
        timed.update(next(([key] for s, key, hit in raw if s < floor and _speaks(hit)), []))
    return timed


def _speaks(hit: SearchHit) -> bool:
    return hit.message is not None and speaks_of_time(hit.message.content)


def fuse(
    text_hits: Sequence[SearchHit],
    vector_hits: Sequence[SearchHit],
    *,
    vector_weight: float = DEFAULT_VECTOR_WEIGHT,
    conversation_weight: float = DEFAULT_CONVERSATION_WEIGHT,
    neighbour_weight: float = DEFAULT_NEIGHBOUR_WEIGHT,
    session_gap_us: int | None = DEFAULT_SESSION_GAP_US,
    dates: Sequence[DateSpec] = (),
    date_weight: float = DEFAULT_DATE_WEIGHT,
    asks_time: bool = False,
    time_weight: float = DEFAULT_TIME_WEIGHT,
    limit: int,
) -> list[SearchHit]:
    """One ranking of ``limit`` hits from both candidate lists; scores in [0, 1].

    ``dates``: the calendar dates the query names (:func:`query_dates`); a hit written on
    one of them gains ``date_weight``. ``asks_time``: the query asks when
    (:func:`asks_when`); a message speaking of a time (:func:`speaks_of_time`) gains
    ``time_weight``.
    """
    text = _min_max(text_hits)
    near = _min_max(vector_hits)
    records = {hit_key(h): h for h in (*vector_hits, *text_hits)}
    base = {
        key: (1.0 - vector_weight) * text.get(key, 0.0) + vector_weight * near.get(key, 0.0)
        for key in records
    }
    # The two best base scores of each episode: a hit's boost is the best *other* one.
    episode = _episodes(records, session_gap_us) if conversation_weight else {}
    top: dict[tuple[str, int], list[float]] = {}
    for key, part in episode.items():
        best = top.setdefault(part, [])
        best.append(base[key])
        best.sort(reverse=True)
        del best[2:]
    # Neighbours: the message a candidate answers (its parent) and the replies to it.
    adjacent: dict[tuple[str, str], float] = {}
    if neighbour_weight:
        for key, hit in records.items():
            parent = _parent(hit)
            if parent is None:
                continue
            pkey = ("message", parent)
            if pkey in base:
                adjacent[key] = max(adjacent.get(key, 0.0), base[pkey])
                adjacent[pkey] = max(adjacent.get(pkey, 0.0), base[key])
    # Scale by the weights of the evidence present among these candidates, so that a query
    # with none of it (memory entries outside conversations, say) keeps the [0, 1] scale
    # of the weighted mean; the divisor is the same for every hit of the query.
    dated = (
        bool(dates)
        and date_weight > 0
        and any(d.holds(_time(h)) for h in records.values() for d in dates)
    )
    raw: list[tuple[float, tuple[str, str], SearchHit]] = []
    for key, hit in records.items():
        score = base[key]
        part = episode.get(key)
        if part is not None:
            best, *rest = top[part]
            other = (rest[0] if rest else 0.0) if best == base[key] else best
            score += conversation_weight * other
        if key in adjacent:
            score += neighbour_weight * adjacent[key]
        if dated and any(d.holds(_time(hit)) for d in dates):
            score += date_weight
        raw.append((score, key, hit))
    timed = _timed(raw, time_weight, limit) if asks_time and time_weight > 0 else set()
    total = (
        1.0
        + (conversation_weight if any(len(b) > 1 for b in top.values()) else 0.0)
        + (neighbour_weight if adjacent else 0.0)
        + (date_weight if dated else 0.0)
        + (time_weight if timed else 0.0)
    )
    scored = [
        ((score + (time_weight if key in timed else 0.0)) / total, hit) for score, key, hit in raw
    ]
    best_first = heapq.nsmallest(limit, scored, key=lambda s: (-s[0], _tiebreak(s[1])))
    return [_rescored(hit, score) for score, hit in best_first]
