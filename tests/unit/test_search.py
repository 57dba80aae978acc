"""Text analysis and the in-process BM25 index."""

from __future__ import annotations

from bruno_memstore.search import (
    MAX_QUERY_CHARS,
    MAX_QUERY_TERMS,
    STOP_WORDS,
    BM25Index,
    bounded_query,
    clipped_query,
    query_words,
    terms,
    words,
)


def test_words_are_case_folded_unicode_tokens() -> None:
    assert words("Hello, WORLD! Straße") == ["hello", "world", "strasse"]
    assert words("naïve café 42") == ["naïve", "café", "42"]
    assert words("'; DROP TABLE x;--") == ["drop", "table", "x"]
    assert words("") == []
    assert words("!!! ??? ...") == []


def test_query_words_drop_stop_words_and_repeats() -> None:
    assert query_words("What is the capital of France and the capital of Spain?") == [
        "capital",
        "france",
        "spain",
    ]
    assert query_words("Zebra zebra ZEBRA") == ["zebra"]


def test_query_words_keep_stop_words_when_nothing_else_is_left() -> None:
    assert query_words("the who") == ["the", "who"]
    assert all(w in STOP_WORDS for w in query_words("to be or not to be"))


def test_terms_are_stemmed() -> None:
    assert terms("running") == terms("runs") == terms("run")
    assert terms("cats sleeping") == terms("cat sleeps")
    assert terms("The connection was connected") == terms("connect connections")


def test_terms_drop_stop_words_unless_asked() -> None:
    assert terms("the cat and the hat") == terms("cat hat")
    assert len(terms("the cat", drop_stop_words=False)) == 2


def test_empty_index() -> None:
    index = BM25Index()
    assert len(index) == 0
    assert index.search("anything") == {}


def _index(docs: dict[str, str]) -> BM25Index:
    index = BM25Index()
    for key, text in docs.items():
        index.add(key, text)
    return index


FILLER = {
    f"filler{i}": text
    for i, text in enumerate(
        [
            "weather forecast says rain tomorrow",
            "quarterly budget meeting notes",
            "favourite colour is teal",
            "train leaves at nine",
        ]
    )
}


def test_more_matching_terms_score_higher() -> None:
    index = _index({"both": "solar panel installation", "one": "solar eclipse tonight", **FILLER})
    scores = index.search("solar panel")
    assert set(scores) == {"both", "one"}
    assert scores["both"] > scores["one"] > 0


def test_rarer_terms_score_higher() -> None:
    docs = {f"apple{i}": f"an apple on day {i}" for i in range(4)}
    docs["zebra"] = "a zebra on day 9"
    index = _index({**docs, **FILLER})
    scores = index.search("apple zebra")
    assert max(scores, key=scores.__getitem__) == "zebra"
    assert set(scores) == set(docs)


def test_shorter_documents_win_ties_in_term_frequency() -> None:
    index = _index({"short": "kettle", "long": "kettle with a very long story attached"})
    scores = index.search("kettle")
    assert scores["short"] > scores["long"]


def test_term_frequency_saturates() -> None:
    index = _index({"once": "tea biscuit", "many": "tea tea tea tea tea tea tea tea", **FILLER})
    scores = index.search("tea")
    # k1 saturation: eight repeats are worth far less than eight times one.
    assert scores["many"] < 3 * scores["once"]


def test_stop_word_queries_do_not_match_content() -> None:
    index = _index({"doc": "the cat sat on the mat", **FILLER})
    assert index.search("the and of") == {}
    assert set(index.search("the cat")) == {"doc"}


def test_stemmed_matching() -> None:
    index = _index({"run": "she runs along the river", **FILLER})
    assert set(index.search("running")) == {"run"}


def test_replace_and_remove() -> None:
    index = _index({"a": "red apple", "b": "green apple"})
    index.add("a", "blue sky")  # replaces
    assert len(index) == 2
    assert set(index.search("apple")) == {"b"}
    assert set(index.search("sky")) == {"a"}
    index.remove("b")
    index.remove("b")  # no-op
    index.remove("never added")
    assert "b" not in index
    assert index.search("apple") == {}
    index.remove("a")
    assert len(index) == 0
    assert index.search("sky") == {}


def test_candidates_restrict_the_result() -> None:
    index = _index({"a": "shared word", "b": "shared word", "c": "shared word"})
    assert set(index.search("shared", candidates=["a", "c", "zz"])) == {"a", "c"}
    assert index.search("shared", candidates=[]) == {}


def test_scores_do_not_depend_on_insertion_order() -> None:
    docs = {"x": "alpha beta", "y": "beta gamma gamma", "z": "alpha alpha delta", **FILLER}
    forward = _index(docs).search("alpha gamma")
    backward = _index(dict(reversed(list(docs.items())))).search("alpha gamma")
    assert forward.keys() == backward.keys()
    for key, score in forward.items():
        assert abs(backward[key] - score) < 1e-12


def test_a_query_within_the_bounds_is_left_alone() -> None:
    question = "What did Maya's sister say about the café in Kyoto (京都) last week?"
    assert bounded_query(question) == question
    assert clipped_query(question) == question


def test_a_long_query_keeps_its_first_distinct_terms() -> None:
    many = " ".join(f"Word{i}'s" for i in range(5_000))
    kept = bounded_query(many)
    assert len(set(terms(kept))) == MAX_QUERY_TERMS
    assert terms(kept) == list(dict.fromkeys(terms(many)))[:MAX_QUERY_TERMS]
    # Repeats and stop words cost nothing: only distinct content terms count.
    padded = " ".join(["the cats and a cat", *(f"term{i} of the" for i in range(100))])
    assert set(terms(bounded_query(padded))) == {"cat", *(f"term{i}" for i in range(31))}
    only_stops = " ".join(sorted(STOP_WORDS))
    assert len(set(terms(bounded_query(only_stops)))) == MAX_QUERY_TERMS


def test_mixed_scripts_keep_the_bound() -> None:
    text = " ".join(f"東京{i}都 naïve{i} didn't{i} ΑΒΓ{i} \u210cello{i}" for i in range(2_000))
    kept = bounded_query(text)
    assert 0 < len(set(terms(kept))) <= MAX_QUERY_TERMS
    assert terms(kept)[:5] == terms(text)[:5]


def test_a_query_is_clipped_at_a_space() -> None:
    text = "word " * (MAX_QUERY_CHARS // 5) + "tail"
    clipped = clipped_query(text)
    assert len(clipped) <= MAX_QUERY_CHARS and not clipped.endswith("wor")
    assert len(bounded_query("x" * (3 * MAX_QUERY_CHARS))) == MAX_QUERY_CHARS  # no space
