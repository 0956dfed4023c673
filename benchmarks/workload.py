"""What the load generator sends: chat requests whose prompts are real text of a chosen length.

Prompts are windows of the vendored RouterBench prompts joined into one text, cut at word
boundaries to about `tokens` x 4 characters (the ~4 characters a token that the stub and the
replay upstream count with), each ending with its request number. No two requests share a prompt
and the number stands at the prompt's END, which is what the router embeds (a long prompt keeps
its tail): so no request is answered from a cache of prompt embeddings or decisions, and every
figure includes the embedding.
"""
from __future__ import annotations

from functools import lru_cache

from app.demo import ROUTERBENCH_DIR
from benchmarks.loadgen import RequestSpec

PROMPT_TOKENS = {"short": 30, "medium": 250, "long": 2000}
CHARS_PER_TOKEN = 4
MAX_TOKENS = 16  # answer length asked for: the stub's answers are short and fixed anyway
CHAT_PATH = "/v1/chat/completions"


@lru_cache(maxsize=1)
def _corpus() -> str:
    from router_core.datasets import load_routerbench

    return "\n\n".join(load_routerbench(ROUTERBENCH_DIR).prompts)


def make_prompt(size: str, i: int) -> str:
    """The i-th prompt of `size` ("short", "medium", "long"): a window of real text, then its number."""
    return f"{prompt_window(size, i)} (request {i})"


def prompt_window(size: str, i: int) -> str:
    """The i-th prompt of `size` without its number: the window of real text alone."""
    corpus = _corpus()
    chars = PROMPT_TOKENS[size] * CHARS_PER_TOKEN
    start = (i * 104_729) % (len(corpus) - chars)  # a large prime stride spreads windows over the text
    window = corpus[start:start + chars]
    head = window.find(" ")  # start and end on word boundaries
    window = window[head + 1:] if 0 <= head < chars // 10 else window
    tail = window.rfind(" ")
    return window[:tail] if tail > len(window) * 0.9 else window


def chat_request(model: str, size: str, i: int, stream: bool = False) -> RequestSpec:
    """The i-th chat completion request for `model` with a `size` prompt."""
    body: dict = {"model": model, "messages": [{"role": "user", "content": make_prompt(size, i)}],
                  "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return RequestSpec(CHAT_PATH, body, stream)
