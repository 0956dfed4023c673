"""The real MiniLM embedder, its on-disk cache, and the routing embedding rule."""
from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from router_core.embedding import (
    ACCURATE_MODEL_ID,
    CachedEmbedder,
    embed_for_routing,
    fast_model_id,
    load_embedder,
)
from router_core.repset import load_repset
from router_core.shipped import DEFAULT_REPSET, FAST_EMBEDDER_DIR
from router_core.text import routing_text

TEXTS = [
    "What is the boiling point of water at sea level?",
    "Write a Python function that reverses a linked list.",
    "Which planet is known as the red planet?",
]


class CountingEmbedder:
    """Delegates to the real embedder and records how many texts it was asked to encode."""

    def __init__(self, inner):
        self.inner, self.model_id, self.dim, self.max_chars = inner, inner.model_id, inner.dim, inner.max_chars
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded.extend(texts)
        return self.inner.encode(texts)


def test_accurate_embedder_is_minilm_with_unit_float32_rows(embedder):
    assert embedder.model_id == ACCURATE_MODEL_ID and embedder.dim == 384
    assert embedder.max_chars == 1024  # 256 word pieces
    emb = embedder.encode(TEXTS)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_encoding_is_deterministic_and_independent_of_the_batch(embedder):
    together = embedder.encode(TEXTS)
    alone = np.vstack([embedder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("kind", ["accurate", "fast"])
def test_a_pickled_embedder_carries_where_its_model_lies_not_its_weights(embedder, kind):
    original = embedder if kind == "accurate" else load_embedder("fast")
    blob = pickle.dumps(original)
    assert len(blob) < 10_000  # a name and a path, where the weights are megabytes
    copy = pickle.loads(blob)
    assert (copy.model_id, copy.dim, copy.max_chars) == (original.model_id, original.dim, original.max_chars)
    np.testing.assert_array_equal(copy.encode(TEXTS), original.encode(TEXTS))


def test_similar_questions_are_nearer_than_unrelated_ones(embedder):
    a, b, c = embedder.encode(["How do I reverse a list in Python?",
                               "Python: reverse the order of a list",
                               "Who painted the Mona Lisa?"])
    assert a @ b > a @ c + 0.3


def test_embed_for_routing_encodes_the_tail_of_long_prompts(embedder):
    long_prompt = "Example question about biology. Answer: B\n\n" * 60 + TEXTS[2]
    got = embed_for_routing(embedder, [long_prompt, TEXTS[0]], max_chars=200)
    want = embedder.encode([routing_text(long_prompt, 200), TEXTS[0]])
    np.testing.assert_allclose(got, want, atol=1e-6)
    head = embedder.encode([long_prompt[:200]])[0]
    assert got[0] @ embedder.encode([TEXTS[2]])[0] > head @ embedder.encode([TEXTS[2]])[0]


def test_cache_embeds_each_text_once_and_returns_the_same_vectors(embedder, tmp_path):
    spy = CountingEmbedder(embedder)
    cached = CachedEmbedder(spy, tmp_path)
    first = cached.encode(TEXTS + [TEXTS[0]])
    assert sorted(spy.encoded) == sorted(TEXTS)  # the repeated text is encoded once
    second = cached.encode(list(reversed(TEXTS)))
    assert len(spy.encoded) == 3  # all hits
    np.testing.assert_allclose(first[:3], embedder.encode(TEXTS), atol=1e-5)
    np.testing.assert_array_equal(second, first[2::-1])
    assert first[3].tobytes() == first[0].tobytes()


def test_cache_survives_a_new_instance_on_the_same_directory(embedder, tmp_path):
    CachedEmbedder(embedder, tmp_path).encode(TEXTS)
    spy = CountingEmbedder(embedder)
    again = CachedEmbedder(spy, tmp_path).encode(TEXTS + ["a text not seen before"])
    assert spy.encoded == ["a text not seen before"]
    np.testing.assert_allclose(again[:3], embedder.encode(TEXTS), atol=1e-5)


def test_two_cache_handles_write_concurrently_without_losing_vectors(embedder, tmp_path):
    handles = [CachedEmbedder(embedder, tmp_path), CachedEmbedder(embedder, tmp_path)]
    texts = [[f"question number {i} from writer {w}" for i in range(20)] for w in range(2)]
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            handles[w].encode(texts[w])
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    spy = CountingEmbedder(embedder)
    CachedEmbedder(spy, tmp_path).encode(texts[0] + texts[1])
    assert spy.encoded == []


def test_fast_embedder_is_a_unit_norm_static_model_that_keeps_meaning():
    """With no folder given, `fast` is the shipped model: before, it was distilled anew into the
    user's cache (tens of seconds, a cache to write, and a vector space of its own)."""
    fast = load_embedder("fast")
    assert fast.model_id == fast_model_id(FAST_EMBEDDER_DIR)
    emb = fast.encode(TEXTS + ["At what temperature does water boil at sea level?"])
    assert emb.dtype == np.float32 and emb.shape == (4, 256)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb[3] @ emb[:3].T
    assert int(np.argmax(sims)) == 0  # the paraphrase is nearest its original
    assert fast.model_id.startswith("fast-minilm-256-")


def test_fast_embedder_gives_model2vecs_own_vectors_bit_for_bit():
    """The static embedder pools tokens itself (model2vec's dispatch cost more than the pooling):
    the vectors must stay exactly those the shipped states' clusters were fitted on."""
    fast = load_embedder("fast", fast_dir=FAST_EMBEDDER_DIR)
    texts = TEXTS + ["", "   ", "日本語のテキストです", "Привет, мир! " * 400, "def f(x):\n    return x ** 2", "x" * 5000]
    texts += [item.prompt for item in load_repset(DEFAULT_REPSET).items]  # real prompts, short to long
    mine = fast.encode(texts)
    theirs = np.asarray(fast._model.encode(texts, max_length=512, show_progress_bar=False), dtype=np.float32)
    theirs /= np.maximum(np.linalg.norm(theirs, axis=1, keepdims=True), 1e-12)
    assert np.array_equal(mine, theirs)
    assert fast.inline  # cheap enough for the gateway's event loop


def test_a_missing_fast_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="build-state --embedder fast"):
        load_embedder("fast", fast_dir=tmp_path / "nothing")


def test_an_unknown_local_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load embedding model"):
        load_embedder(str(tmp_path / "no-model-here"))
