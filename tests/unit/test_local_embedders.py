"""The local embedding models, with their real weights (no network, no stand-in)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bruno_memstore.embeddings.local import (
    LOCAL_MODELS,
    MiniLMEmbedder,
    OnnxMiniLMEmbedder,
    StaticEmbedder,
    _require,
    default_embedder,
    local_embedder,
)
from bruno_memstore.errors import InvalidArgumentError, MissingDependencyError

SENTENCES = [
    "I adopted a puppy last week and named him Max.",
    "We got a new dog recently.",
    "The central bank raised interest rates again.",
    "Caroline went to a support group for transgender people on Sunday.",
    "Melanie painted a sunrise over the lake in 2022.",
]


@pytest.fixture(scope="module", params=list(LOCAL_MODELS))
def model(request: pytest.FixtureRequest) -> Iterator[object]:
    yield LOCAL_MODELS[request.param]()


def test_rows_are_float32_unit_vectors(model) -> None:
    vecs = model.embed_batch(SENTENCES)
    assert vecs.shape == (len(SENTENCES), model.dimension)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_blank_text_gives_a_zero_row_and_no_text_no_rows(model) -> None:
    vecs = model.embed_batch(["", "hello there", "   "])
    assert not vecs[0].any() and not vecs[2].any()
    assert np.linalg.norm(vecs[1]) == pytest.approx(1.0, abs=1e-5)
    assert model.embed_batch([]).shape == (0, model.dimension)


def test_similar_sentences_score_higher_than_unrelated_ones(model) -> None:
    puppy, dog, bank, *_ = model.embed_batch(SENTENCES)
    assert puppy @ dog > puppy @ bank + 0.1
    assert puppy @ dog > dog @ bank + 0.1


def test_a_text_gets_the_same_vector_alone_or_in_a_batch(model) -> None:
    batch = model.embed_batch(SENTENCES)
    alone = np.stack([model.embed_batch([s])[0] for s in SENTENCES])
    assert np.sum(batch * alone, axis=1).min() > 0.9999


def test_two_threads_at_once_get_the_same_vectors_as_one(model) -> None:
    texts_a = SENTENCES * 6
    texts_b = list(reversed(SENTENCES)) * 6
    expected_a = model.embed_batch(texts_a)
    expected_b = model.embed_batch(texts_b)
    results: dict[str, list[np.ndarray]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def work(key: str, texts: list[str]) -> None:
        start.wait()
        for _ in range(5):
            results[key].append(model.embed_batch(texts))

    threads = [
        threading.Thread(target=work, args=("a", texts_a)),
        threading.Thread(target=work, args=("b", texts_b)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results["a"]) == len(results["b"]) == 5
    for got in results["a"]:
        np.testing.assert_allclose(got, expected_a, atol=1e-5)
    for got in results["b"]:
        np.testing.assert_allclose(got, expected_b, atol=1e-5)


def test_names_are_distinct_and_recorded() -> None:
    names = {cls.model_name for cls in LOCAL_MODELS.values()}
    assert len(names) == len(LOCAL_MODELS)
    assert StaticEmbedder.dimension == 64
    assert OnnxMiniLMEmbedder.dimension == MiniLMEmbedder.dimension == 384


def test_construction_loads_nothing() -> None:
    for cls in LOCAL_MODELS.values():
        assert cls()._loaded is None


def test_onnx_model_agrees_with_sentence_transformers() -> None:
    onnx = OnnxMiniLMEmbedder().embed_batch(SENTENCES)
    torch = MiniLMEmbedder().embed_batch(SENTENCES)
    cosines = np.sum(onnx * torch, axis=1)
    assert cosines.min() > 0.99


def test_local_embedder_builds_by_short_name_or_model_name() -> None:
    assert isinstance(local_embedder("static"), StaticEmbedder)
    assert isinstance(local_embedder("MINILM-ONNX"), OnnxMiniLMEmbedder)
    assert isinstance(local_embedder("all-MiniLM-L6-v2"), MiniLMEmbedder)
    assert isinstance(local_embedder("all-MiniLM-L6-v2-onnx-int8"), OnnxMiniLMEmbedder)


def test_local_embedder_rejects_an_unknown_name_listing_the_known_ones() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        local_embedder("word2vec")
    message = str(info.value)
    assert "word2vec" in message
    for short, cls in LOCAL_MODELS.items():
        assert short in message and cls.model_name in message


def test_default_is_a_light_model() -> None:
    model = default_embedder()
    assert isinstance(model, StaticEmbedder | OnnxMiniLMEmbedder)


def test_missing_package_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError) as info:
        _require("onnx", "a model", ("numpy", "numpy"), ("no_such_module_4f2a", "no-such-pkg"))
    assert info.value.extra == "onnx" and info.value.package == "no-such-pkg"
    assert "bruno-memstore[onnx]" in str(info.value)


def test_a_tokenizer_path_that_does_not_exist_is_refused(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError):
        OnnxMiniLMEmbedder(tokenizer_path=tmp_path / "missing.json")


def test_a_tokenizer_of_another_model_is_refused_on_load() -> None:
    import static_model

    other = Path(static_model.__file__).parent / "model" / "tokenizer.json"
    model = OnnxMiniLMEmbedder(tokenizer_path=other)
    with pytest.raises(InvalidArgumentError, match="bert-base-uncased"):
        model.embed_batch(["hello"])
