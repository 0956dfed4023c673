"""Graders read real answers: mc_letter agrees with RouterBench's own labels, numeric reads
GSM8K solutions, code_tests runs HumanEval and MBPP tests in the sandbox."""
from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from app.demo import ROUTERBENCH_DIR
from router_core.datasets import read_routerbench_rows
from router_core.grading import (
    asserts_in,
    chosen_option,
    code_program,
    extract_code,
    grade,
    humaneval_reference,
    mbpp_reference,
    prompt_options,
)

# ../shared beside the checkout (developers and CI have it; a user's clone does not)
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data beside the checkout")

# The end of RouterBench's winogrande.dev.1014 prompt (few-shot: an example's options come first).
WINOGRANDE_1014 = """Please answer with the letter of the correct answer.

Kyle doesn't wear leg warmers to bed, while Logan almost always does. _ is more likely to live in a colder climate.
A) Kyle
B) Logan
Print only a single choice  from "A" or "B" without explanation. Answer:
B

Mary felt a great deal of guilt for stealing various items from Rachel so _ forgave her.
A) Rachel
B) Mary
Print only a single choice  from "A" or "B" without explanation. Answer:
"""
# The end of RouterBench's arc-challenge.test.1000 prompt; its reference is D.
ARC_1000 = """A boat is acted on by a river current flowing north and by wind blowing on its sails. The boat travels northeast. In which direction is the wind most likely applying force to the sails of the boat?
A) west
B) east
C) north
D) south
Print only a single choice  from "A" or "B" or "C" or "D" without explanation.
Answer:
B

Some students wanted to make a model to show how the size of the moon compares with the size of Earth. They used an orange to represent the moon. Which of the following would best represent Earth?
A) A grape
B) A cherry
C) A lime
D) A cantaloupe
Print only a single choice  from "A" or "B" or "C" or "D" without explanation.
Answer:
"""


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


def test_prompt_options_are_the_last_questions_options():
    assert prompt_options(WINOGRANDE_1014) == {"A": "Rachel", "B": "Mary"}
    assert prompt_options(ARC_1000) == {"A": "A grape", "B": "A cherry", "C": "A lime", "D": "A cantaloupe"}
    assert prompt_options("Pick one:\n(A) red\n(B) blue\nC. green\n") == {"A": "red", "B": "blue", "C": "green"}
    assert prompt_options("Who?\n1) Ian\n2) Dennis\nAnswer:", numbered=True) == {"1": "Ian", "2": "Dennis"}
    assert prompt_options("What is 2 + 2?") == {}


@pytest.mark.parametrize("answer", ["A) Rachel\nB) Patricia", "A) Rachel\nB) Mary", "(A) Rachel\n(B) Mary\n"])
def test_an_answer_echoing_the_options_chooses_none(answer):
    assert chosen_option(answer) is None
    assert grade("mc_letter", answer, "A") == 0.0 and grade("mc_letter", answer, "B") == 0.0
    assert grade("mc_letter", answer, "A", WINOGRANDE_1014) == 0.0
    assert grade("mc_letter", answer, "B", WINOGRANDE_1014) == 0.0


def test_an_echo_of_the_options_with_a_stated_answer_counts_the_statement():
    assert grade("mc_letter", "A) Rachel\nB) Mary\nAnswer: A", "A", WINOGRANDE_1014) == 1.0


@pytest.mark.parametrize("answer, reference, score", [
    ("A) Rachel", "A", 1.0), ("B) Mary", "B", 1.0), ("A", "A", 1.0),
    ("A) Mary", "A", 0.0),  # the letter says Rachel, the text says Mary: no clean choice
    ("A) Mary", "B", 0.0),
    ("The answer is B, Rachel.", "B", 0.0),
    ("Rachel", "A", 1.0), ("Mary", "B", 1.0),  # no letter, exactly one option's text
    ("Mary forgave Rachel", "A", 0.0),  # both options' texts: no choice
])
def test_mc_letter_reads_a_winogrande_answer_against_its_option_texts(answer, reference, score):
    assert grade("mc_letter", answer, reference, WINOGRANDE_1014) == score


@pytest.mark.parametrize("answer, reference, score", [
    ("D) A cantaloupe", "D", 1.0), ("The answer is D, a cantaloupe.", "D", 1.0),
    ("D) A grape", "D", 0.0), ("C) A cantaloupe", "C", 0.0),
    ("A cantaloupe", "D", 1.0),  # the article "A", then option D's text
    ("D", "D", 1.0), ("B", "D", 0.0),
])
def test_mc_letter_reads_an_arc_answer_against_its_option_texts(answer, reference, score):
    assert grade("mc_letter", answer, reference, ARC_1000) == score


def test_mc_letter_without_the_prompt_keeps_reading_letters_only():
    assert grade("mc_letter", "A) Mary", "A") == 1.0
    assert grade("mc_letter", "Rachel", "A") == 0.0


def test_mc_letter_reads_numbered_options_against_their_texts():
    prompt = "Who despised eating intestine?\n1) Ian\n2) Dennis\nAnswer:"
    assert grade("mc_letter", "2) Dennis", "2", prompt) == 1.0
    assert grade("mc_letter", "2) Ian", "2", prompt) == 0.0
    assert grade("mc_letter", "Dennis", "2", prompt) == 1.0


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


@needs_shared
def test_numeric_reads_the_result_of_a_gsm8k_solution_used_as_reference():
    rows = [json.loads(line) for line in (SHARED_DATA / "references" / "gsm8k_test.jsonl").open()]
    janet = rows[0]["answer"]  # "... She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18"
    assert grade("numeric", "She sells 9 eggs and makes 9 * 2 = 18 dollars. The answer is 18.", janet) == 1.0
    assert grade("numeric", "She sells 16 - 3 = 13 eggs and makes $26.", janet) == 0.0
    assert grade("numeric", "#### 114200", rows[[r["answer"].endswith("114,200") for r in rows].index(True)]["answer"]) == 1.0
    # every solution grades right against itself and wrong against a solution with another result
    results = [r["answer"].rpartition("####")[2].strip() for r in rows]
    for row, result in zip(rows, results):
        assert grade("numeric", row["answer"], row["answer"]) == 1.0
        other = next(r for r, res in zip(rows, results) if res != result)
        assert grade("numeric", row["answer"], other["answer"]) == 0.0


def test_numeric_bad_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="numeric reference"):
        grade("numeric", "42", "forty-two")
    with pytest.raises(ValueError, match="numeric reference"):
        grade("numeric", "42", "It is 6 * 7.\n#### forty-two")


def test_regex_searches_the_reference_pattern():
    assert grade("regex", "def reverse(xs): return xs[::-1]", r"\[::-1\]") == 1.0
    assert grade("regex", "HELLO", "(?i)hello") == 1.0 and grade("regex", "HELLO", "hello") == 0.0
    with pytest.raises(ValueError, match="not a valid regular expression"):
        grade("regex", "x", "(")


def test_unknown_graders_and_llm_judge_are_refused():
    with pytest.raises(ValueError, match="llm_judge needs a judge model"):
        grade("llm_judge", "a", "b")
    with pytest.raises(ValueError, match="llm_judge needs a judge model"):
        grade("llm_judge:rating", "a", "b")
    with pytest.raises(ValueError, match="unknown grader 'fuzzy'"):
        grade("fuzzy", "a", "b")


def routerbench_mc_rows():
    """(row, reference, models' answers disagreeing on the reference) for every ARC/Winogrande
    row: the reference is the option its correct models chose."""
    _, rows = read_routerbench_rows(ROUTERBENCH_DIR)
    for row in rows:
        if row.task not in ("arc-challenge", "winogrande"):
            continue
        votes = Counter(chosen_option(row.responses[m]) for m, label in row.labels.items()
                        if label == 1.0 and m in row.responses)
        votes.pop(None, None)
        if votes:
            yield row, votes.most_common(1)[0][0], len(votes) > 1


def agreement(with_prompt: bool) -> tuple[int, int, int, int]:
    """(rows used, rows with conflicting references, graded answers agreeing with their
    RouterBench label, answers graded)."""
    rows_used = conflicting = agree = total = 0
    for row, reference, conflict in routerbench_mc_rows():
        rows_used += 1
        conflicting += conflict
        for model, label in row.labels.items():
            if model in row.responses:
                total += 1
                prompt = row.prompt if with_prompt else None
                agree += grade("mc_letter", row.responses[model], reference, prompt) == label
    return rows_used, conflicting, agree, total


def test_mc_letter_agrees_with_routerbench_labels_on_recorded_answers():
    """The reference of an ARC/Winogrande row is the option its correct models chose; grading
    every model's recorded answer against it must reproduce RouterBench's 0/1 labels."""
    rows_used, conflicting, agree, total = agreement(with_prompt=False)
    assert rows_used > 2600 and conflicting == 0
    assert agree / total >= 0.95, f"mc_letter agrees with {agree}/{total} labels"


def test_mc_letter_with_the_prompt_still_agrees_with_routerbench_labels():
    """Reading answers against the option texts changes few grades: RouterBench scored a bare
    option text ("Laura") wrong, which the prompt-aware grader may credit."""
    _, _, agree, total = agreement(with_prompt=True)
    assert total > 29000
    assert agree / total >= 0.99, f"mc_letter with prompts agrees with {agree}/{total} labels"


# ---- code_tests ----

def humaneval_items() -> dict[str, dict]:
    with gzip.open(SHARED_DATA / "references" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as fh:
        return {row["task_id"]: row for row in map(json.loads, fh)}


@pytest.mark.parametrize("answer, code", [
    ("```python\ndef f():\n    return 1\n```", "def f():\n    return 1"),
    ("Here:\n```py\ndef f(): pass\n```\nand usage:\n```\nf()\n```\n```bash\npip install x\n```",
     "def f(): pass\n\n\nf()"),
    ("```python\n    return x + 1\n```", "    return x + 1"),  # a function body keeps its indentation
    ("1. The code:\n   ```python\n   def f():\n       return 2\n   ```", "def f():\n    return 2"),
    ("```python\ndef f():\n    return 3", "def f():\n    return 3"),  # a fence the token limit cut
    ("[PYTHON]\ndef f():\n    return 4\n[/PYTHON]\n[TESTS]\n", "def f():\n    return 4"),
    ("def f():\n    return 5\n", "def f():\n    return 5"),
])
def test_extract_code_takes_the_python_fences_else_the_whole_answer(answer, code):
    assert extract_code(answer) == code


@needs_shared
def test_a_humaneval_item_passes_with_its_canonical_solution_and_fails_with_a_wrong_one():
    item = humaneval_items()["HumanEval/0"]
    reference = humaneval_reference(item["test"], item["entry_point"])
    assert reference.rstrip().endswith("check(has_close_elements)")
    body = item["canonical_solution"]
    assert grade("code_tests", body, reference, item["prompt"]) == 1.0  # the body alone
    assert grade("code_tests", f"Sure:\n```python\n{item['prompt']}{body}```\n", reference, item["prompt"]) == 1.0
    wrong = body.replace("distance < threshold", "distance <= threshold + 1")
    assert grade("code_tests", wrong, reference, item["prompt"]) == 0.0
    assert grade("code_tests", "I cannot help with that.", reference, item["prompt"]) == 0.0


@needs_shared
def test_every_humaneval_canonical_solution_passes_its_tests():
    items = humaneval_items()
    passed = [grade("code_tests", item["canonical_solution"], humaneval_reference(item["test"], item["entry_point"]),
                    item["prompt"]) for item in items.values()]
    assert len(passed) == 164 and sum(passed) == 164


@needs_shared
def test_a_full_humaneval_function_gets_the_prompts_helpers_and_imports():
    item = humaneval_items()["HumanEval/10"]  # make_palindrome uses the prompt's is_palindrome
    reference = humaneval_reference(item["test"], item["entry_point"])
    full = item["prompt"][item["prompt"].index("def make_palindrome"):] + item["canonical_solution"]
    assert "def is_palindrome" not in full
    assert "def is_palindrome" in code_program(full, reference, item["prompt"])
    assert grade("code_tests", f"```python\n{full}\n```", reference, item["prompt"]) == 1.0


def test_a_prompt_that_is_not_python_lends_a_full_function_only_its_imports():
    prompt = "Complete the function.\nfrom typing import List\n\ndef total(xs: List[int]) -> int:\n"
    reference = humaneval_reference("def check(candidate):\n    assert candidate([1, 2]) == 3", "total")
    answer = "```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    program = code_program(answer, reference, prompt)
    assert program.startswith("from typing import List\ndef total(") and "Complete the function" not in program
    assert grade("code_tests", answer, reference, prompt) == 1.0


# MBPP in RouterDC's format (its mbpp.json, first question): the prompt quotes one assert.
MBPP_PROMPT = ('"""\nWrite a python function to remove first and last occurrence of a given character from the '
               'string.\nassert remove_Occ("hello","l") == "heo"\n"""\n')


def test_an_mbpp_item_passes_with_a_correct_solution_and_fails_with_a_wrong_one():
    reference = mbpp_reference(asserts_in(MBPP_PROMPT))
    assert reference == 'assert remove_Occ("hello","l") == "heo"\n'
    right = ("Here is the function:\n```python\ndef remove_Occ(s, ch):\n    first = s.find(ch)\n"
             "    if first != -1:\n        s = s[:first] + s[first + 1:]\n    last = s.rfind(ch)\n"
             "    if last != -1:\n        s = s[:last] + s[last + 1:]\n    return s\n```")
    wrong = "```python\ndef remove_Occ(s, ch):\n    return s.replace(ch, '', 1)\n```"
    assert grade("code_tests", right, reference, MBPP_PROMPT) == 1.0
    demo = "\n```python\nif __name__ == '__main__':\n    print(remove_Occ(input(), 'l'))\n```"
    assert grade("code_tests", right + demo, reference, MBPP_PROMPT) == 1.0  # a demo block does not run
    assert grade("code_tests", wrong, reference, MBPP_PROMPT) == 0.0
    assert grade("code_tests", "```python\ndef other(s, ch):\n    return s\n```", reference) == 0.0


def test_code_tests_refuses_a_reference_that_is_not_test_code():
    with pytest.raises(ValueError, match="code_tests reference"):
        grade("code_tests", "def f(): pass", "")
    with pytest.raises(ValueError, match="code_tests reference"):
        grade("code_tests", "", "assert f(1) ==")  # checked even with no answer (the repset's load check)
    assert grade("code_tests", "", "assert f(1) == 1") == 0.0
    with pytest.raises(ValueError, match="identifier"):
        humaneval_reference("def check(candidate): pass", "not a name")
    with pytest.raises(ValueError, match="at least one assert"):
        mbpp_reference([])
