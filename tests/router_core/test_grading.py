"""Graders read real answers: mc_letter agrees with RouterBench's own labels."""
from __future__ import annotations

from collections import Counter

import pytest

from app.demo import ROUTERBENCH_DIR
from router_core.datasets import read_routerbench_rows
from router_core.grading import chosen_option, grade


@pytest.mark.parametrize("answer, option", [
    ("B", "B"), ("B)", "B"), ("(B)", "B"), ("b", "B"), ("B\n", "B"), ("D (", "D"),
    ("The answer is B.", "B"), ("Answer: (C)", "C"), ("The correct answer is **D**", "D"),
    ("C) palms covered with oil", "C"), ("B is correct", "B"), ("A is correct", "A"),
    ("Option (A) is wrong because ..., so (B) fits. Answer: C", "C"),
    ("A chart would be best", None), ("I do not have enough information", None),
    ("Answer: An apple", None), ("", None),
])
def test_chosen_option_reads_letters_from_free_text(answer, option):
    assert chosen_option(answer) == option


@pytest.mark.parametrize("answer, option", [("2", "2"), ("1) Ian", "1"), ("Option 2", "2"),
                                            ("The answer is 1.", "1"), ("answer is 12", None)])
def test_chosen_option_reads_numbered_options(answer, option):
    assert chosen_option(answer, numbered=True) == option


def test_mc_letter_compares_the_chosen_option_with_the_reference():
    assert grade("mc_letter", "The answer is (b).", "B") == 1.0
    assert grade("mc_letter", "Answer: A", "B") == 0.0
    assert grade("mc_letter", "2", "2") == 1.0 and grade("mc_letter", "B", "2") == 0.0
    with pytest.raises(ValueError, match="reference"):
        grade("mc_letter", "B", "banana")


def test_exact_ignores_case_punctuation_and_spacing():
    assert grade("exact", "  Paris!\n", "paris") == 1.0
    assert grade("exact", "New   York.", "new york") == 1.0
    assert grade("exact", "Paris, France", "paris") == 0.0


@pytest.mark.parametrize("answer, reference, score", [
    ("6 * 7 = 42. The answer is 42.", "42", 1.0),
    ("Step 1: 40 + 2\n#### 1,042", "1042", 1.0),
    ("It is about 41.9 units", "42|0.01", 1.0),
    ("It is about 41.0 units", "42|0.01", 0.0),
    ("The answer is 3/4 of the cake", "0.75", 1.0),
    ("First 12, then 7 remain", "7", 1.0),  # no marker: the last number
    ("The answer: -3.5", "-3.5", 1.0),
    ("no number here", "3", 0.0),
])
def test_numeric_reads_the_marked_or_last_number_within_tolerance(answer, reference, score):
    assert grade("numeric", answer, reference) == score


def test_numeric_bad_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="numeric reference"):
        grade("numeric", "42", "forty-two")


def test_regex_searches_the_reference_pattern():
    assert grade("regex", "def reverse(xs): return xs[::-1]", r"\[::-1\]") == 1.0
    assert grade("regex", "HELLO", "(?i)hello") == 1.0 and grade("regex", "HELLO", "hello") == 0.0
    with pytest.raises(ValueError, match="not a valid regular expression"):
        grade("regex", "x", "(")


def test_unknown_graders_and_llm_judge_are_refused():
    with pytest.raises(ValueError, match="llm_judge needs a judge model"):
        grade("llm_judge", "a", "b")
    with pytest.raises(ValueError, match="unknown grader 'fuzzy'"):
        grade("fuzzy", "a", "b")


def test_mc_letter_agrees_with_routerbench_labels_on_recorded_answers():
    """The reference of an ARC/Winogrande row is the option its correct models chose; grading
    every model's recorded answer against it must reproduce RouterBench's 0/1 labels."""
    _, rows = read_routerbench_rows(ROUTERBENCH_DIR)
    agree = total = rows_used = conflicting = 0
    for row in rows:
        if row.task not in ("arc-challenge", "winogrande"):
            continue
        votes = Counter(chosen_option(row.responses[m]) for m, label in row.labels.items()
                        if label == 1.0 and m in row.responses)
        votes.pop(None, None)
        if not votes:
            continue
        rows_used += 1
        conflicting += len(votes) > 1
        reference = votes.most_common(1)[0][0]
        for model, label in row.labels.items():
            if model in row.responses:
                total += 1
                agree += grade("mc_letter", row.responses[model], reference) == label
    assert rows_used > 2600 and conflicting == 0
    assert agree / total >= 0.95, f"mc_letter agrees with {agree}/{total} labels"
