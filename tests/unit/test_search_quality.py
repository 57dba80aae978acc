"""The shared text analysis: what it normalises, and that BM25 ranks what it should."""

from __future__ import annotations

import unicodedata
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bruno_memstore.search import (
    STOP_WORDS,
    Analyzer,
    BM25Index,
    date_words,
    index_text,
    query_words,
    terms,
    words,
)

# ---------------------------------------------------------------- tokens and clitics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Maya's garden", ["maya", "garden"]),
        ("Maya\u2019s garden", ["maya", "garden"]),  # typographic apostrophe
        ("Maya\u02bcs garden", ["maya", "garden"]),
        ("I'm sure they've left", ["i", "am", "sure", "they", "have", "left"]),
        ("didn't, can't, won't", ["did", "not", "can", "not", "will", "not"]),
        ("we'd've gone", ["we", "would", "have", "gone"]),
        ("o'clock", ["o", "clock"]),  # not a clitic: just split
        ("'quoted' words", ["quoted", "words"]),
        ("snake_case and kebab-case", ["snake", "case", "and", "kebab", "case"]),
        ("ÉCOLE", ["école"]),
    ],
)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_negation_is_not_a_content_word() -> None:
    # "won't" once left "won", which then matched "won the race".
    assert terms("She won't come") == terms("she come")
    assert "won" not in words("won't")
    assert terms("haven't") == terms("have not")


def test_decomposed_and_composed_text_agree() -> None:
    composed = "café crème"
    decomposed = unicodedata.normalize("NFD", composed)
    assert words(composed) == words(decomposed) == ["café", "crème"]
    assert terms("cafe creme") == terms(composed)


def test_combining_marks_stay_inside_words() -> None:
    hindi = "हिंदी भाषा"
    assert words(hindi) == ["हिंदी", "भाषा"]
    assert terms(hindi) == ["हिंदी", "भाषा"]


def test_cjk_runs_become_bigrams() -> None:
    assert words("我喜欢猫") == ["我喜", "喜欢", "欢猫"]
    assert words("猫") == ["猫"]
    assert words("新しいiPhone") == ["新し", "しい", "iphone"]


def test_ligatures_and_width_variants_are_normalised() -> None:
    assert words("ﬁsh") == ["fish"]
    assert words("\uff21\uff22\uff23") == ["abc"]  # full-width letters


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("variant", "base"),
    [
        ("went", "go"),
        ("gone", "go"),
        ("bought", "buy"),
        ("taught", "teach"),
        ("children", "child"),
        ("wives", "wife"),
        ("running", "run"),  # the stemmer's job
        ("ran", "run"),  # the table's job
        ("8th", "8"),
        ("two", "2"),
        ("Twelve", "12"),
    ],
)
def test_forms_meet_their_base(variant: str, base: str) -> None:
    assert terms(variant) == terms(base)


def test_ambiguous_forms_are_left_alone() -> None:
    # "a bit", "the ground", "left" (the side) are not "bite", "grind", "leave".
    assert terms("bit") != terms("bite")
    assert terms("ground") != terms("grind")
    assert terms("left") != terms("leave")
    # "one" is as often a pronoun as a number.
    assert terms("this one") == ["one"]


def test_stop_words_fall_back_when_nothing_else_is_left() -> None:
    assert terms("the cat and the hat") == ["cat", "hat"]
    assert terms("to be or not to be") == terms("to be or not to be", drop_stop_words=False)
    assert query_words("Where is the nearest cafe, the nearest?") == ["nearest", "cafe"]
    assert query_words("what is it") == ["what", "is", "it"]


def test_stop_words_are_whole_words() -> None:
    assert all("'" not in w and " " not in w for w in STOP_WORDS)


def test_each_step_can_be_switched_off() -> None:
    plain = Analyzer(
        contractions=False, base_forms=False, numbers=False, fold_diacritics=False, stemmer=None
    )
    assert plain.terms("Maya's two children went to the café") == [
        "maya",
        "two",
        "children",
        "went",
        "café",
    ]
    assert Analyzer(stemmer="porter").terms("generously") == ["gener"]


@given(st.text())
def test_index_text_is_whitespace_separated_terms(text: str) -> None:
    # An engine's own index splits index_text on spaces and must see exactly terms().
    found = terms(text)
    assert index_text(text).split() == found
    for term in found:
        assert term
        assert not any(unicodedata.category(ch)[0] in "PZSC" for ch in term), term


@given(st.text())
def test_words_never_hold_separators(text: str) -> None:
    for word in words(text):
        assert word and "'" not in word and "_" not in word
        assert not any(ch.isspace() for ch in word)


# ---------------------------------------------------------------- dates


def test_date_words_are_english_and_locale_free() -> None:
    assert date_words(datetime(2021, 3, 3, 9, 15)) == "3 March 2021"
    assert date_words(datetime(2024, 12, 31)) == "31 December 2024"


# ---------------------------------------------------------------- ranking


def _index(docs: dict[str, str]) -> BM25Index:
    index = BM25Index()
    for key, text in docs.items():
        index.add(key, text)
    return index


def _ranked(index: BM25Index, query: str) -> list[str]:
    scores = index.search(query)
    return sorted(scores, key=lambda k: -scores[k])


def test_question_in_present_finds_statement_in_past() -> None:
    index = _index(
        {
            "went": "Yesterday I went to the pottery class downtown.",
            "plans": "We should plan a trip to the lake next summer.",
            "class": "The class schedule for spring is out.",
            "kids": "The kids bought new shoes for school.",
        }
    )
    assert _ranked(index, "When did she go to pottery class?")[0] == "went"
    assert _ranked(index, "What did the children buy?")[0] == "kids"


def test_negation_does_not_match_victory() -> None:
    index = _index({"win": "Our team won the final!", "nope": "I won't be there, sorry."})
    assert _ranked(index, "Which team won?") == ["win"]


def test_possessive_matches_the_name() -> None:
    index = _index({"a": "Maya adopted a puppy.", "b": "The weather is nice."})
    assert _ranked(index, "What is Maya's puppy called?") == ["a"]


def test_dates_can_be_indexed_with_the_text() -> None:
    index = BM25Index()
    index.add("march", "Repaired the bicycle.", when=datetime(2021, 3, 3, 9, 30))
    index.add("june", "Repaired the bicycle.", when=datetime(2021, 6, 14, 9, 30))
    assert _ranked(index, "What did I repair on 3 March 2021?")[0] == "march"
    assert _ranked(index, "what happened in June")[0] == "june"


def test_replace_remove_and_candidates() -> None:
    index = _index({"a": "red apples", "b": "green apples", "c": "blue sky"})
    assert set(index.search("apples")) == {"a", "b"}
    assert set(index.search("apples", candidates=["b", "c"])) == {"b"}
    index.add("a", "yellow bananas")  # replaces
    assert set(index.search("apples")) == {"b"}
    index.remove("b")
    index.remove("missing")  # no-op
    assert index.search("apples") == {}
    assert len(index) == 2 and "a" in index and "b" not in index


def test_rarer_terms_weigh_more() -> None:
    docs = {f"d{i}": "coffee every morning" for i in range(8)}
    docs["rare"] = "coffee in Lisbon"
    index = _index(docs)
    assert _ranked(index, "coffee Lisbon")[0] == "rare"


def test_index_text_with_a_date_matches_the_index() -> None:
    when = datetime(2021, 3, 3, 9, 15)
    assert index_text("Repaired the bicycle", when=when).split() == terms(
        "Repaired the bicycle 3 March 2021"
    )
    assert index_text("Repaired the bicycle") == "repair bicycl"
