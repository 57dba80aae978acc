"""Text analysis shared by every backend, and a BM25 index for engines without one.

Every backend analyses text the same way:

1. **Tokens.** Unicode NFKC, case folding, words made of letters, digits and combining marks
   (so decomposed accents and Indic vowel signs stay inside their word). Underscores and
   punctuation separate words. Chinese and Japanese runs, written without spaces, become
   overlapping character bigrams.
2. **Clitics.** English contractions and possessives are undone: ``Maya's`` is
   ``maya``, ``didn't`` is ``did not``, ``I'm`` is ``i am`` (curly apostrophes too).
3. **Stop words.** English function words are dropped (unless nothing else is left).
4. **Normalisation.** Irregular verb forms and plurals map to their base form (``went`` to
   ``go``, ``children`` to ``child``), which a suffix stemmer cannot do; ordinals lose their
   suffix (``8th`` to ``8``); number words up to twenty become digits; Latin diacritics are
   removed (``café`` to ``cafe``).
5. **Stems.** Snowball English (Porter 2).

Steps 1-3 give :func:`words` and :func:`query_words`; all five give :func:`terms`, which
:class:`BM25Index` indexes. Engines with their own full-text index should index
:func:`index_text` and query with :func:`terms`, so that every backend finds the same things.

Queries are bounded before any backend sees them (:func:`bounded_query`): the first
:data:`MAX_QUERY_CHARS` characters are analysed, and of those only the words up to the
:data:`MAX_QUERY_TERMS`-th distinct term are searched for. The rest of a longer query is
ignored, so a pasted page costs what a long question costs.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable
from datetime import datetime

import Stemmer

__all__ = [
    "ANALYSIS_VERSION",
    "DEFAULT_ANALYZER",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_TERMS",
    "STOP_WORDS",
    "Analyzer",
    "BM25Index",
    "bounded_query",
    "clipped_query",
    "date_words",
    "index_text",
    "query_words",
    "terms",
    "words",
]

ANALYSIS_VERSION = 2
"""Raised whenever :func:`terms` may analyse some text differently. Engines that store
analysed terms (:func:`index_text`) keep the version they were built with and re-index when
it differs."""

MAX_QUERY_TERMS = 32
"""Distinct terms a query is searched by, at most (every backend): the first ones in the
query; the words after the last of them are ignored. Stop words do not count, except in a
query made of nothing else."""

MAX_QUERY_CHARS = 10_000
"""Characters of a query that are analysed and embedded, at most (cut at a space when there
is one in the second half); the rest is ignored."""

# Function words that carry no topic in English questions and statements. Contractions are
# expanded before this list is consulted, so it holds only whole words.
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can cannot could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just let me more most my myself no nor not now of off on once only or other ought
    our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    also ever get got kind sort thing things really s t d ll m re ve y
    """.split()
)

# Irregular English verbs: "base past participle" (forms equal to the base are left out).
# Forms that are more often an unrelated noun or adjective are omitted on purpose: "bit"
# (a bit), "ground", "bound", "wound", "rose", "shot", "found", "left", "saw", "lay", "bore".
_IRREGULAR_VERBS = """
arise arose arisen | awake awoke awoken | bear borne | beat beaten | become became |
begin began begun | bend bent | bite bitten | bleed bled | blow blew blown | break broke broken |
breed bred | bring brought | build built | burn burnt | buy bought | catch caught |
choose chose chosen | cling clung | come came | creep crept | deal dealt | dig dug | do done |
draw drew drawn | dream dreamt | drink drank drunk | drive drove driven | eat ate eaten |
fall fell fallen | feed fed | feel felt | fight fought | flee fled | fly flew flown |
forbid forbade forbidden | forget forgot forgotten | forgive forgave forgiven |
freeze froze frozen | get gotten | give gave given | go went gone | grow grew grown | hang hung |
hear heard | hide hid hidden | hold held | keep kept | kneel knelt | know knew known |
lay laid | lead led | lean leant | leap leapt | learn learnt | lend lent | lie lain | light lit |
lose lost | make made | mean meant | meet met | pay paid | ride rode ridden | ring rang rung |
rise risen | run ran | say said | see seen | seek sought | sell sold | send sent |
shake shook shaken | shine shone | show shown | shrink shrank shrunk | sing sang sung |
sink sank sunk | sit sat | sleep slept | slide slid | speak spoke spoken | speed sped |
spend spent | spin spun | spit spat | spring sprang sprung | stand stood | steal stole stolen |
stick stuck | sting stung | stink stank stunk | strike struck | strive strove striven |
swear swore sworn | sweep swept | swim swam swum | swing swung | take took taken |
teach taught | tear tore torn | tell told | think thought | throw threw thrown |
understand understood | wake woke woken | wear wore worn | weave wove woven | weep wept |
win won | withdraw withdrew withdrawn | write wrote written | overcome overcame |
undergo underwent undergone | undertake undertook undertaken | mistake mistook mistaken |
outgrow outgrew outgrown | overhear overheard | oversee oversaw overseen | rebuild rebuilt |
redo redid redone | rethink rethought | retell retold | rewrite rewrote rewritten |
withstand withstood | foresee foresaw foreseen | partake partook partaken
"""
# Irregular plurals the stemmer leaves apart from their singular.
_IRREGULAR_PLURALS = """
child children | person people | man men | woman women | foot feet | tooth teeth | mouse mice |
goose geese | wife wives | knife knives | wolf wolves | shelf shelves | half halves |
loaf loaves | thief thieves | calf calves | scarf scarves | elf elves
"""


def _form_table(*sources: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for source in sources:
        for group in source.split("|"):
            base, *forms = group.split()
            for form in forms:
                table[form] = base
    return table


_BASE_FORMS = _form_table(_IRREGULAR_VERBS, _IRREGULAR_PLURALS)
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
    # "one" is as often a pronoun ("this one") as a number.
    if word != "one"
}
_ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th)")

# Expansions of English clitics; "s" (possessive, or "is"/"has") is dropped.
_CLITICS = {"re": "are", "ve": "have", "ll": "will", "d": "would", "m": "am", "s": ""}
_NEGATED = {"can": "can", "won": "will", "shan": "shall", "ain": "is", "don": "do"}
_APOSTROPHES = "'\u2019\u02bc"


def _mark_class() -> str:
    """A regex class body listing the combining marks (Mn, Mc, Me) of the scripts in use.

    Python's ``\\w`` excludes them, which would cut words of Indic scripts and decomposed
    Latin apart. Only the blocks that hold marks are scanned, to keep import fast.
    """
    ranges: list[tuple[int, int]] = []
    for lo, hi in ((0x0300, 0x33FF), (0xA000, 0xABFF), (0xFB00, 0xFFFF), (0x10000, 0x11FFF)):
        for cp in range(lo, min(hi, sys.maxunicode) + 1):
            if unicodedata.category(chr(cp))[0] == "M":
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1] = (ranges[-1][0], cp)
                else:
                    ranges.append((cp, cp))
    # Zero-width (non-)joiners are part of Persian and Indic words.
    ranges.append((0x200C, 0x200D))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


_MARKS = _mark_class()
_WORD_BODY = rf"[^\W_](?:[^\W_]|[{_MARKS}])*"
# A word, with any inner apostrophes ("maya's", "o'clock"); outer quotes are not part of it.
_TOKEN = re.compile(rf"{_WORD_BODY}(?:[{_APOSTROPHES}]{_WORD_BODY})*")
_APOSTROPHE = re.compile(f"[{_APOSTROPHES}]")
# The same tokens for ASCII text, where word characters are letters and digits: much faster.
_ASCII_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
_CACHE_LIMIT = 200_000  # distinct tokens whose analysis is remembered
# English names, independent of the process locale.
_MONTHS = (
    "January February March April May June July August September October November December"
).split()
# Scripts written without spaces between words: Han, Hiragana, Katakana.
_CJK = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0002fa1f]+"
)
_LATIN_MARKS = re.compile("[\u0300-\u036f]")


def _expand(token: str) -> list[str]:
    """Split an apostrophe token into words, undoing English clitics."""
    head, *tail = token.split("'")
    if not all(part in _CLITICS or part == "t" for part in tail):
        # "o'clock", "rock'n'roll": not clitics, just pieces.
        return [head, *tail]
    out = [head]
    for part in tail:
        if part == "t":
            if not out[-1].endswith("n") or len(out[-1]) < 2:
                return [head, *tail]
            base = out.pop()
            out += [_NEGATED.get(base, base[:-1]), "not"]
        elif _CLITICS[part]:
            out.append(_CLITICS[part])
    return out


def _split_cjk(token: str) -> list[str]:
    """Character bigrams for Han/Kana runs (a lone character stays a unigram)."""
    if not _CJK.search(token):
        return [token]
    out: list[str] = []
    pos = 0
    for match in _CJK.finditer(token):
        if match.start() > pos:
            out.append(token[pos : match.start()])
        run = match.group()
        out += [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]
        pos = match.end()
    if pos < len(token):
        out.append(token[pos:])
    return out


class Analyzer:
    """The analysis pipeline; each step can be switched off (to measure what it does).

    Args:
        stop_words: words dropped from :meth:`query_words` and :meth:`terms`.
        contractions: undo English contractions and possessives.
        base_forms: map irregular verb forms and plurals to their base form.
        numbers: strip ordinal suffixes and turn number words into digits.
        fold_diacritics: remove Latin diacritics from terms.
        cjk_bigrams: split Han/Kana runs into character bigrams.
        stemmer: Snowball algorithm name (see ``Stemmer.algorithms()``), or ``None``.
    """

    __slots__ = (
        "_cache",
        "_stemmer",
        "base_forms",
        "cjk_bigrams",
        "contractions",
        "fold_diacritics",
        "numbers",
        "stop_words",
    )

    def __init__(
        self,
        *,
        stop_words: Iterable[str] = STOP_WORDS,
        contractions: bool = True,
        base_forms: bool = True,
        numbers: bool = True,
        fold_diacritics: bool = True,
        cjk_bigrams: bool = True,
        stemmer: str | None = "english",
    ) -> None:
        self.stop_words = frozenset(stop_words)
        self.contractions = contractions
        self.base_forms = base_forms
        self.numbers = numbers
        self.fold_diacritics = fold_diacritics
        self.cjk_bigrams = cjk_bigrams
        self._stemmer = Stemmer.Stemmer(stemmer) if stemmer else None
        # token -> (is a stop word, its term): analysis is per token, so it is remembered.
        self._cache: dict[str, tuple[bool, str]] = {}

    def words(self, text: str) -> list[str]:
        """Case-folded word tokens of ``text``, contractions undone."""
        text = text.casefold()
        if text.isascii():
            tokens = _ASCII_TOKEN.findall(text)
            if "'" not in text:
                return tokens
            out = []
            for token in tokens:
                if "'" in token:
                    out += _expand(token) if self.contractions else token.split("'")
                else:
                    out.append(token)
            return [w for w in out if w]
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        out: list[str] = []
        for token in _TOKEN.findall(text):
            parts = [token]
            if not token.isascii():
                # Typographic apostrophes (U+2019, U+02BC) mean the same as the ASCII one.
                token = _APOSTROPHE.sub("'", token)
                parts = [token]
            if "'" in token:
                parts = _expand(token) if self.contractions else token.split("'")
            for part in parts:
                if self.cjk_bigrams and not part.isascii():
                    out += _split_cjk(part)
                elif part:
                    out.append(part)
        return out

    def query_words(self, text: str) -> list[str]:
        """Distinct content words of a query, in order; all words if every one is a stop word."""
        toks = self.words(text)
        content = [w for w in toks if w not in self.stop_words] or toks
        return list(dict.fromkeys(content))

    def terms(self, text: str, *, drop_stop_words: bool = True) -> list[str]:
        """Normalised, stemmed index terms of ``text``, in order."""
        analysed = [self._term(token) for token in self.words(text)]
        if drop_stop_words:
            kept = [term for stop, term in analysed if not stop]
            if kept:
                return kept
        return [term for _, term in analysed]

    def bounded_query(
        self,
        text: str,
        *,
        max_terms: int = MAX_QUERY_TERMS,
        max_chars: int = MAX_QUERY_CHARS,
    ) -> str:
        """``text`` cut to what a search analyses: at most ``max_chars`` characters, and of
        those the words up to the ``max_terms``-th distinct term (:meth:`terms` of the result
        holds at most ``max_terms`` distinct terms).

        A query within both bounds comes back unchanged; a longer one as its kept words
        joined by spaces, which analyse to the same terms.
        """
        text = clipped_query(text, max_chars)
        tokens = self.words(text)
        content: set[str] = set()
        stops: set[str] = set()
        kept = 0
        for token in tokens:
            stop, term = self._term(token)
            if not stop:
                if term not in content and len(content) == max_terms:
                    break
                content.add(term)
            elif not content:
                # Stop words count only while they are all there is (see ``terms``).
                if term not in stops and len(stops) == max_terms:
                    break
                stops.add(term)
            kept += 1
        else:
            return text
        out = " ".join(tokens[:kept])
        # Words analyse to themselves again; this guards exotic Unicode that might not.
        while kept and len(set(self.terms(out))) > max_terms:
            kept -= 1
            out = " ".join(tokens[:kept])
        return out

    def _term(self, token: str) -> tuple[bool, str]:
        """:meth:`_analyse`, remembered for the next time the token is seen."""
        hit = self._cache.get(token)
        if hit is None:
            hit = self._analyse(token)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[token] = hit
        return hit

    def _analyse(self, token: str) -> tuple[bool, str]:
        """(whether ``token`` is a stop word, its index term)."""
        if self.base_forms:
            token = _BASE_FORMS.get(token, token)
        stop = token in self.stop_words
        if self.numbers:
            token = _normalise_number(token)
        if self.fold_diacritics and not token.isascii():
            token = _fold(token)
        if self._stemmer is not None:
            token = self._stemmer.stemWord(token)
        return stop, token


def _normalise_number(token: str) -> str:
    if token[:1].isdigit():
        match = _ORDINAL.fullmatch(token)
        return match.group(1) if match else token
    return _NUMBER_WORDS.get(token, token)


def _fold(token: str) -> str:
    decomposed = unicodedata.normalize("NFD", token)
    return unicodedata.normalize("NFC", _LATIN_MARKS.sub("", decomposed))


DEFAULT_ANALYZER = Analyzer()
"""The analysis every backend uses."""


def words(text: str) -> list[str]:
    """Case-folded word tokens of ``text`` (contractions and possessives undone)."""
    return DEFAULT_ANALYZER.words(text)


def query_words(text: str) -> list[str]:
    """Distinct content words of a query, in order; all words if every word is a stop word."""
    return DEFAULT_ANALYZER.query_words(text)


def terms(text: str, *, drop_stop_words: bool = True) -> list[str]:
    """Stemmed index terms of ``text`` (stop words dropped unless nothing else is left)."""
    return DEFAULT_ANALYZER.terms(text, drop_stop_words=drop_stop_words)


def bounded_query(text: str) -> str:
    """What a search analyses of ``text``: see :meth:`Analyzer.bounded_query`."""
    return DEFAULT_ANALYZER.bounded_query(text)


def clipped_query(text: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    """``text`` cut to at most ``max_chars`` characters: what a search embeds.

    The cut falls after the last whitespace when there is one in the second half, so the last
    word kept is whole.
    """
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    if not text[max_chars].isspace():
        space = max((head.rfind(c) for c in " \n\t"), default=-1)
        if space > max_chars // 2:
            head = head[:space]
    return head


def index_text(text: str, *, when: datetime | None = None) -> str:
    """The terms of ``text`` joined by spaces: what an engine's own full-text index should
    hold, so that its matches agree with :class:`BM25Index`. With ``when``, the terms of its
    date in words (:func:`date_words`) follow, as :meth:`BM25Index.add` indexes them."""
    return " ".join(terms(_with_date(text, when)))


def date_words(when: datetime) -> str:
    """The calendar date of ``when`` in words, e.g. ``"3 March 2021"``.

    Indexed with a message, it lets "what did I say on 3 March?" find the day's messages.
    The date is the timestamp's own wall-clock date (no time-zone conversion).
    """
    return f"{when.day} {_MONTHS[when.month - 1]} {when.year}"


def _with_date(text: str, when: datetime | None) -> str:
    return text if when is None else f"{text}\n{date_words(when)}"


class BM25Index:
    """An in-process inverted index with Okapi BM25 scoring (k1=1.2, b=0.75).

    Keys are any hashable document ids. Adding an existing key replaces it.

    Args:
        k1: term-frequency saturation.
        b: document-length normalisation.
        analyzer: the text analysis (default: :data:`DEFAULT_ANALYZER`).
    """

    __slots__ = ("_analyzer", "_doc_len", "_docs", "_postings", "_total_len", "b", "k1")

    def __init__(self, k1: float = 1.2, b: float = 0.75, *, analyzer: Analyzer | None = None):
        self.k1 = k1
        self.b = b
        self._analyzer = analyzer or DEFAULT_ANALYZER
        self._postings: dict[str, dict[Hashable, int]] = {}
        self._docs: dict[Hashable, Counter[str]] = {}
        self._doc_len: dict[Hashable, int] = {}
        self._total_len = 0

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, key: object) -> bool:
        return key in self._docs

    def add(self, key: Hashable, text: str, *, when: datetime | None = None) -> None:
        """Index ``text`` under ``key``; with ``when``, its date in words too."""
        if key in self._docs:
            self.remove(key)
        tf = Counter(self._analyzer.terms(_with_date(text, when)))
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
        for term in dict.fromkeys(self._analyzer.terms(query)):
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
