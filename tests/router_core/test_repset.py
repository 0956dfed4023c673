"""The representative set: the shipped file, its builder over RouterBench, and bad input."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from app.demo import ROUTERBENCH_DIR
from router_core.datasets import read_routerbench_rows
from router_core.grading import grade
from router_core.repset import (
    MC_TASKS,
    RepItem,
    RepsetError,
    build_default_repset,
    load_repset,
    main,
    write_repset,
)
from router_core.shipped import ROUTERBENCH_REPSET

ROOT = Path(__file__).resolve().parents[2]
ROUTERBENCH = ROUTERBENCH_DIR
SHIPPED = ROUTERBENCH_REPSET


@pytest.fixture(scope="module")
def test_rows():
    """RouterBench test-split rows by sample id."""
    rows = {}
    for file in sorted(ROUTERBENCH.glob("*_test.csv")):
        rows.update({r.id: r for r in read_routerbench_rows(file)[1]})
    return rows


def test_the_shipped_set_is_400_multiple_choice_prompts_versioned_by_its_content_hash():
    repset = load_repset(SHIPPED)
    assert len(repset.items) == 400
    assert {it.task for it in repset.items} == set(MC_TASKS)
    assert all(it.grader == "mc_letter" for it in repset.items)
    assert repset.version == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()[:12]


def test_rebuilding_with_the_readme_arguments_reproduces_the_shipped_file(tmp_path):
    built = build_default_repset(ROUTERBENCH, tmp_path / "set.jsonl", per_task=200, seed=0)
    assert (tmp_path / "set.jsonl").read_bytes() == SHIPPED.read_bytes()
    assert built.version == load_repset(SHIPPED).version
    assert built.version in (SHIPPED.parent / "README.md").read_text()


def test_built_items_come_from_the_test_split_and_regrade_to_routerbench_labels(tmp_path, test_rows):
    repset = build_default_repset(ROUTERBENCH, tmp_path / "set.jsonl", per_task=25, seed=7)
    assert len(repset.items) == 50
    for item in repset.items:
        row = test_rows[item.id]  # a KeyError would mean a row from outside the test split
        assert item.prompt == row.prompt
        # the reference reproduces every model's recorded label from its recorded answer
        assert [grade(item.grader, row.responses.get(m, ""), item.reference) for m in row.labels] == \
            list(row.labels.values())


def test_a_set_round_trips_through_its_file_and_any_edit_is_a_new_version(tmp_path):
    items = [RepItem("q1", "Pick one.\u2028A) x\nB) y", "B", "mc_letter", "demo"),
             RepItem("q2", "2+2?", "4", "numeric"), RepItem("q3", "Capital of France?", "Paris", "llm_judge")]
    written = write_repset(items, tmp_path / "a" / "set.jsonl")
    loaded = load_repset(tmp_path / "a" / "set.jsonl")
    assert loaded == written and loaded.items == items
    edited = write_repset([*items[:2], RepItem("q3", "Capital of Italy?", "Rome", "llm_judge")], tmp_path / "b.jsonl")
    assert edited.version != written.version


def lines(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


GOOD = {"id": "q1", "prompt": "p", "reference": "A", "grader": "mc_letter", "task": "t"}


@pytest.mark.parametrize("content, message", [
    (lines(GOOD, GOOD), "id 'q1' appears twice"),
    (lines(GOOD | {"grader": "vibes"}), "unknown grader 'vibes'"),
    (lines(GOOD | {"reference": "Z"}), "mc_letter reference"),
    (lines(GOOD | {"grader": "regex", "reference": "(unclosed"}), "not a valid regular expression"),
    (lines(GOOD | {"grader": "numeric", "reference": "many"}), "numeric reference"),
    (lines(GOOD, "{oops"), ":2: not JSON"),
    (lines(["a", "list"]), "expected a JSON object"),
    (lines({k: v for k, v in GOOD.items() if k != "prompt"}), "'prompt' must be a non-empty string"),
    (lines(GOOD | {"task": 3}), "'task' must be a string"),
    (lines(GOOD | {"grader": "llm_judge:vibes"}), "unknown judge kind 'vibes'"),
    (lines(GOOD | {"grader": "code_tests", "reference": "assert (("}), "code_tests reference"),
    ("\n\n", "has no items"),
])
def test_a_bad_file_is_refused_with_the_line_and_the_reason(tmp_path, content, message):
    path = tmp_path / "set.jsonl"
    path.write_text(content)
    with pytest.raises(RepsetError, match=message.replace("(", r"\(")):
        load_repset(path)


def test_a_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(RepsetError, match="cannot read the representative set .*nope.jsonl"):
        load_repset(tmp_path / "nope.jsonl")


def test_the_build_command_reports_a_bad_directory_without_a_traceback(tmp_path, capsys):
    assert main(["--routerbench", str(tmp_path), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "no RouterBench *_test.csv files" in capsys.readouterr().err


def test_code_tests_and_llm_judge_kinds_load_while_bad_graders_are_refused(tmp_path):
    graded_elsewhere = [RepItem("c", "Write f.", "assert f(1) == 2\ncheck(f)", "code_tests"),
                        RepItem("j", "Explain bias.", "A reference answer.", "llm_judge:rating")]
    write_repset(graded_elsewhere, tmp_path / "ok.jsonl")
    assert [i.grader for i in load_repset(tmp_path / "ok.jsonl").items] == ["code_tests", "llm_judge:rating"]
    for grader in ("numeric", "llm_judgement"):  # a bad numeric reference; a judge-like name that is none
        write_repset([RepItem("x", "2+2?", "four", grader)], tmp_path / f"{grader}.jsonl")
        with pytest.raises(RepsetError):
            load_repset(tmp_path / f"{grader}.jsonl")
