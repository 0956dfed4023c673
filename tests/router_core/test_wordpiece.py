"""router_core/wordpiece.py: the ASCII word cache gives exactly the ids BERT's tokenizer gives,
whatever the text, and leaves other text to the tokenizer."""
from __future__ import annotations

import json
import random

import pytest
from tokenizers import Tokenizer

from router_core import wordpiece
from router_core.embedding import STATIC_MAX_TOKENS
from router_core.repset import load_repset
from router_core.shipped import DEFAULT_REPSET, FAST_EMBEDDER_DIR, ROUTERBENCH_REPSET
from router_core.wordpiece import WordPieceCache, is_bert_wordpiece


@pytest.fixture
def tokenizer() -> Tokenizer:
    """The shipped `fast` embedder's tokenizer, truncating as the embedder has it."""
    tok = Tokenizer.from_file(str(FAST_EMBEDDER_DIR / "tokenizer.json"))
    tok.enable_truncation(STATIC_MAX_TOKENS)
    return tok


def theirs(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def ascii_texts(n: int, seed: int = 0) -> list[str]:
    """Random ASCII of every kind: letters, digits, punctuation, whitespace, control characters."""
    rng = random.Random(seed)
    alphabet = ["e", "t", "a", "o", "n", "E", "Q", "z", "0", "7"] * 6 + [chr(c) for c in range(128)]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(n)]


EDGES = [
    "", " ", "\t\n\r\x0b\x0c", "a\x0bb\x0cc\x00d\x7fe", "Hello, World!", "don't stop-me now... (ok?)",
    "x" * 99, "x" * 100, "x" * 101, "supercalifragilistic" * 8, "word " * 700, "a,b.c;" * 400,
    "C++ and C# and F#", "snake_case and camelCase and UPPER", "1,000,000.50$", "[UNK] and [PAD]", "a[UNK]b",
    "[unk]", "naïve café", "日本語", "Zeta Ζήτα", "tab\there",
    *(chr(c) for c in range(128)), *(f"a{chr(c)}b" for c in range(128)),
]


def test_the_cache_gives_the_tokenizers_ids_for_every_kind_of_text(tokenizer):
    texts = EDGES + ascii_texts(2000) + [i.prompt for i in load_repset(DEFAULT_REPSET).items] \
        + [i.prompt for i in load_repset(ROUTERBENCH_REPSET).items]
    cache = WordPieceCache(tokenizer, STATIC_MAX_TOKENS)
    assert cache.ids(texts) == theirs(tokenizer, texts)
    assert cache.ids(texts) == theirs(tokenizer, texts)  # again, now from the remembered words


def test_text_the_cache_cannot_read_goes_to_the_tokenizer(tokenizer):
    cache = WordPieceCache(tokenizer, STATIC_MAX_TOKENS)
    special, foreign = "ask [UNK] now", "naïve café"
    assert not cache._plain(special) and not cache._plain(foreign) and cache._plain("plain text")
    assert cache.ids([special, foreign]) == theirs(tokenizer, [special, foreign])
    assert cache._pieces == {}  # nothing was cut word by word


def test_the_cache_stops_growing_at_its_bound_and_stays_right(tokenizer, monkeypatch):
    monkeypatch.setattr(wordpiece, "MAX_WORDS", 50)
    cache = WordPieceCache(tokenizer, STATIC_MAX_TOKENS)
    texts = ascii_texts(200, seed=1)
    assert cache.ids(texts) == theirs(tokenizer, texts)
    assert len(cache._pieces) == 50


def test_only_a_lowercasing_bert_tokenizer_is_taken_for_one(tokenizer):
    spec = json.loads(tokenizer.to_str())
    assert is_bert_wordpiece(json.dumps(spec))
    cased = {**spec, "normalizer": {**spec["normalizer"], "lowercase": False}}
    assert not is_bert_wordpiece(json.dumps(cased))
    assert not is_bert_wordpiece(json.dumps({**spec, "pre_tokenizer": {"type": "Whitespace"}}))
    assert not is_bert_wordpiece(json.dumps({**spec, "normalizer": None}))
