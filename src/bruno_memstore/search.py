"""Text analysis shared by every backend, and a BM25 index for engines without one.

All backends analyse text the same way: Unicode word tokens, case-folded, English stop words
removed from queries, Snowball (Porter 2) stems. Engines with their own full-text index
(SQLite FTS5, PostgreSQL tsvector, MySQL FULLTEXT) get the query's content words from
:func:`query_words`; the others index :func:`terms` in :class:`BM25Index`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Iterable

import Stemmer

__all__ = ["STOP_WORDS", "BM25Index", "query_words", "terms", "words"]

_WORD = re.compile(r"\w+", re.UNICODE)
_stemmer = Stemmer.Stemmer("english")

# Function words that carry no topic in English questions and statements.
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can could did didn't do does doesn't doing don't down during
    each few for from further had has have having he her here hers herself him himself his how i
    if in into is isn't it it's its itself just let me more most my myself no nor not now of off
    on once only or other ought our ours ourselves out over own same she should so some such
    than that that's the their theirs them themselves then there there's these they this those
    through to too under until up very was wasn't we were weren't what what's when where which
    while who whom why will with would you your yours yourself yourselves s t d ll m re ve y
    also ever get got would've did does kind sort thing things really
    """.split()
)


def words(text: str) -> list[str]:
    """Case-folded word tokens of ``text``."""
    return _WORD.findall(text.casefold())


def query_words(text: str) -> list[str]:
    """Distinct content words of a query, in order; all words if every word is a stop word."""
    toks = words(text)
    content = [w for w in toks if w not in STOP_WORDS] or toks
    return list(dict.fromkeys(content))


def terms(text: str, *, drop_stop_words: bool = True) -> list[str]:
    """Stemmed index terms of ``text`` (stop words dropped unless nothing else is left)."""
    toks = words(text)
    if drop_stop_words:
        toks = [w for w in toks if w not in STOP_WORDS] or toks
    return _stemmer.stemWords(toks)


class BM25Index:
    """An in-process inverted index with Okapi BM25 scoring (k1=1.2, b=0.75).

    Keys are any hashable document ids. Adding an existing key replaces it.
    """

    __slots__ = ("_doc_len", "_docs", "_postings", "_total_len", "b", "k1")

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._postings: dict[str, dict[Hashable, int]] = {}
        self._docs: dict[Hashable, Counter[str]] = {}
        self._doc_len: dict[Hashable, int] = {}
        self._total_len = 0

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, key: object) -> bool:
        return key in self._docs

    def add(self, key: Hashable, text: str) -> None:
        """Index ``text`` under ``key``."""
        if key in self._docs:
            self.remove(key)
        tf = Counter(terms(text))
        self._docs[key] = tf
        n = sum(tf.values())
        self._doc_len[key] = n
        self._total_len += n
        for term, count in tf.items():
            self._postings.setdefault(term, {})[key] = count

    def remove(self, key: Hashable) -> None:
        """Forget ``key`` (no-op when absent)."""
        tf = self._docs.pop(key, None)
        if tf is None:
            return
        self._total_len -= self._doc_len.pop(key)
        for term in tf:
            posting = self._postings.get(term)
            if posting is not None:
                posting.pop(key, None)
                if not posting:
                    del self._postings[term]

    def search(
        self, query: str, candidates: Iterable[Hashable] | None = None
    ) -> dict[Hashable, float]:
        """BM25 score of every document sharing a term with ``query`` (restricted to
        ``candidates`` when given)."""
        n_docs = len(self._docs)
        if not n_docs:
            return {}
        allowed = set(candidates) if candidates is not None else None
        avg = self._total_len / n_docs or 1.0
        scores: dict[Hashable, float] = {}
        for term in dict.fromkeys(terms(query)):
            posting = self._postings.get(term)
            if not posting:
                continue
            df = len(posting)
            idf = math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
            for key, tf in posting.items():
                if allowed is not None and key not in allowed:
                    continue
                norm = tf + self.k1 * (1.0 - self.b + self.b * self._doc_len[key] / avg)
                scores[key] = scores.get(key, 0.0) + idf * tf * (self.k1 + 1.0) / norm
        return scores
