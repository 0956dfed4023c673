"""routing_text keeps the tail of long prompts, cut at a word boundary."""
from __future__ import annotations

import pytest

from app.demo import ROUTERBENCH_DIR
from router_core.datasets import load_routerbench
from router_core.text import DEFAULT_MAX_CHARS, routing_text


def test_short_text_is_returned_unchanged():
    text = "What is the capital of France?\n"
    assert routing_text(text) == text


def test_long_text_keeps_the_tail_and_drops_the_head():
    text = "EXAMPLE " * 500 + "Question: which gas do plants absorb? Answer:"
    out = routing_text(text, max_chars=200)
    assert out.endswith("Question: which gas do plants absorb? Answer:")
    assert len(out) <= 200
    assert text.endswith(out)


def test_cut_falls_on_a_whitespace_boundary():
    text = " ".join(f"word{i:04d}" for i in range(1000))
    out = routing_text(text, max_chars=100)
    start = len(text) - len(out)
    assert text[start - 1].isspace()  # the first kept word is whole
    assert out.split()[0] in text.split()
    assert 90 <= len(out) <= 100


def test_text_without_whitespace_is_cut_exactly():
    text = "的" * 5000
    assert routing_text(text, max_chars=300) == "的" * 300


def test_non_positive_max_chars_is_rejected():
    with pytest.raises(ValueError, match="max_chars"):
        routing_text("abc", max_chars=0)


def test_routerbench_few_shot_prompt_keeps_its_final_question():
    ds = load_routerbench(ROUTERBENCH_DIR / "arc_challenge_test.csv")
    long_prompts = [p for p in ds.prompts if len(p) > DEFAULT_MAX_CHARS]
    assert long_prompts, "the few-shot ARC prompts are longer than the default window"
    for prompt in long_prompts[:50]:
        final_question = prompt.rsplit("\n\n", 1)[-1]
        out = routing_text(prompt)
        assert out.endswith(final_question)
        assert len(out) <= DEFAULT_MAX_CHARS
