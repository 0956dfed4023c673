"""A BERT WordPiece tokenizer's ids for ASCII text, word by word from a cache.

The `fast` embedder's tokenizer is BERT's: clean the text (drop control characters, tabs and
line ends become spaces), lowercase it, split it at spaces and around each punctuation mark,
then cut each word into word pieces. For ASCII text every step but the last is a character map
and a regular expression, and a word's pieces depend on the word alone, so they can be
remembered. The Rust tokenizer spent most of its time on Unicode category lookups that ASCII
never needs: about a seventh of a routed request's instructions. Any other text, or text
holding a special token's literal (`[UNK]`), goes to the tokenizer itself.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence

# ASCII punctuation as BERT splits it: every printable non-alphanumeric character but the space.
_PUNCT = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())
_WORDS = re.compile("[^ " + re.escape(_PUNCT) + "]+|[" + re.escape(_PUNCT) + "]")
# BERT's cleaning and lowercasing of ASCII: control characters (vertical tab and form feed
# included) are dropped, tab and line ends become spaces.
_CLEAN = {c: None for c in [*range(0, 32), 127] if chr(c) not in "\t\n\r"}
_CLEAN.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})
_CLEAN.update({c: c + 32 for c in range(ord("A"), ord("Z") + 1)})
# Distinct words remembered; past it new words are cut by the tokenizer every time.
MAX_WORDS = 100_000


def is_bert_wordpiece(tokenizer_json: str) -> bool:
    """Whether a tokenizer (its JSON) is the lowercasing BERT kind this cache reproduces."""
    spec = json.loads(tokenizer_json)
    normalizer = spec.get("normalizer") or {}
    return (normalizer.get("type") == "BertNormalizer" and normalizer.get("clean_text") is True
            and normalizer.get("lowercase") is True
            and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and (spec.get("model") or {}).get("type") == "WordPiece")


class WordPieceCache:
    """Token ids of texts, as `tokenizer.encode_batch_fast(texts, add_special_tokens=False)` gives
    them (truncated at `max_tokens`), for a tokenizer `is_bert_wordpiece` accepts."""

    def __init__(self, tokenizer: object, max_tokens: int) -> None:
        self._tokenizer = tokenizer
        self._max_tokens = max_tokens
        self._specials = [t.content for t in tokenizer.get_added_tokens_decoder().values()]
        self._pieces: dict[str, list[int]] = {}
        self._lock = threading.Lock()  # the Rust tokenizer is not shared across threads unguarded

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text."""
        out: list[list[int] | None] = [self._ascii_ids(t) if self._plain(t) else None for t in texts]
        rest = [i for i, ids in enumerate(out) if ids is None]
        if rest:
            with self._lock:
                encodings = self._tokenizer.encode_batch_fast([texts[i] for i in rest], add_special_tokens=False)
            for i, encoding in zip(rest, encodings, strict=True):
                out[i] = encoding.ids
        return out  # type: ignore[return-value]

    def _plain(self, text: str) -> bool:
        return text.isascii() and not any(s in text for s in self._specials)

    def _ascii_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        get = self._pieces.get
        for word in _WORDS.findall(text.translate(_CLEAN)):
            ids += get(word) or self._cut(word)
        # Cut once at the end: the routing text the gateway embeds is already short.
        return ids[: self._max_tokens] if len(ids) > self._max_tokens else ids

    def _cut(self, word: str) -> list[int]:
        with self._lock:
            found = self._tokenizer.encode(word, add_special_tokens=False).ids
        if len(self._pieces) < MAX_WORDS:
            self._pieces[word] = found
        return found
