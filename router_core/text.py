"""What of a prompt is embedded for routing.

The embedding model reads a bounded prefix of its input (all-MiniLM-L6-v2: 256 word pieces,
about 1,000 characters of English) and silently drops the rest. Long prompts are mostly
few-shot prompts whose worked examples come first and whose actual question comes LAST, so
embedding the head would embed the examples, which are near-identical across a task's prompts,
and lose the question that decides which model does well. `routing_text` therefore keeps the
tail. Both the evaluation and the gateway go through it (via
`router_core.embedding.embed_for_routing`), so the router is fitted and served on one rule.
"""
from __future__ import annotations

DEFAULT_MAX_CHARS = 1000

# Cut at a whitespace boundary only if one lies this close to the cut (as a share of the
# kept length); text without spaces (e.g. Chinese, or one long token) is cut where it falls.
_BOUNDARY_SLACK = 0.1


def routing_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The last `max_chars` characters of `text` (all of it when shorter), starting after a
    whitespace boundary when one lies near the cut, so no word is embedded half."""
    if max_chars <= 0:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if len(text) <= max_chars:
        return text
    tail = text[-max_chars:]
    if not text[-max_chars - 1].isspace():  # the cut splits a word: drop its remainder
        window = tail[: max(1, int(max_chars * _BOUNDARY_SLACK))]
        cut = next((i for i, ch in enumerate(window) if ch.isspace()), None)
        if cut is not None:
            tail = tail[cut:]
    return tail.lstrip() or tail
