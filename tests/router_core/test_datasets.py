"""Dataset loaders read the real RouterBench and RouterDC files, drop only what they say they
drop, and round-trip through canonical JSONL."""
from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from app.cli.main import main as cli_main
from app.demo import ROUTERBENCH_DIR
from router_core.datasets import (
    DatasetError,
    load_dataset,
    load_jsonl,
    load_routerbench,
    load_routerbench_responses,
    load_routerdc,
    read_routerbench_rows,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[2]
ROUTERDC_DIR = ROOT.parent / "shared" / "data" / "routerdc_7llm"
needs_routerdc = pytest.mark.skipif(not ROUTERDC_DIR.is_dir(), reason="../shared/data/routerdc_7llm is absent")


@pytest.fixture(scope="module")
def routerbench():
    return load_routerbench(ROUTERBENCH_DIR)


def test_routerbench_loads_3150_fully_labelled_prompts_and_reports_the_drops(capsys):
    ds = load_routerbench(ROUTERBENCH_DIR)
    err = capsys.readouterr().err
    assert "3178 rows, 3164 distinct sample_ids" in err
    assert "dropped 28 rows lacking a label" in err
    assert len(ds) == 3150 and len(set(ds.ids)) == 3150
    assert Counter(ds.tasks) == {"arc-challenge": 1456, "winogrande": 1267, "mbpp": 427}
    assert len(ds.models) == 11 and ds.scores.shape == (3150, 11)
    assert set(np.unique(ds.scores)) == {0.0, 1.0}


def test_routerbench_accuracies_and_costs_match_the_published_figures(routerbench):
    col = routerbench.models.index("gpt-4-1106-preview")
    assert routerbench.scores[:, col].mean() == pytest.approx(0.879, abs=5e-4)
    assert np.nanmean(routerbench.costs[:, col]) == pytest.approx(5.0e-3, rel=0.05)
    assert np.all(routerbench.costs > 0)
    np.testing.assert_array_equal(routerbench.losses, 1.0 - routerbench.scores)


def test_routerbench_prompts_are_the_joined_list_literal(routerbench):
    assert not any(p.startswith("['") for p in routerbench.prompts)
    arc = routerbench.prompts[routerbench.tasks.index("arc-challenge")]
    assert arc.rstrip().endswith("Answer:") and "\nA) " in arc


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_routerbench_keeps_the_first_of_a_repeated_id_and_drops_unlabelled_rows(tmp_path, capsys):
    with (ROUTERBENCH_DIR / "winograde_test.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:5]
    repeat = dict(rows[1], prompt="['a different prompt']")  # same sample_id, later in the file
    unlabelled = dict(rows[2], sample_id="winogrande.unlabelled", **{"claude-v2": ""})
    _write_rows(tmp_path / "w.csv", rows + [repeat, unlabelled])
    ds = load_routerbench(tmp_path / "w.csv")
    err = capsys.readouterr().err
    assert ds.ids == [r["sample_id"] for r in rows]
    assert ds.prompts[1] != "a different prompt"
    assert "dropped 1 rows lacking a label" in err and "then 1 rows repeating a sample_id" in err


def test_routerbench_rows_keep_labels_responses_and_costs():
    models, rows = read_routerbench_rows(ROUTERBENCH_DIR / "mbpp_test.csv")
    assert len(rows) == 128 and len(models) == 11
    row = rows[0]
    assert set(row.labels) == set(row.costs) == set(row.responses) == set(models)
    assert all(isinstance(text, str) and not text.startswith("['") for text in row.responses.values())


def test_routerbench_responses_map_each_model_to_prompt_answers(routerbench):
    responses = load_routerbench_responses(ROUTERBENCH_DIR)
    assert set(responses) == set(routerbench.models)
    for model in routerbench.models:
        assert set(routerbench.prompts) <= set(responses[model])
    _, rows = read_routerbench_rows(ROUTERBENCH_DIR / "arc_challenge_test.csv")
    assert responses["claude-v1"][rows[0].prompt] == rows[0].responses["claude-v1"]


def test_a_csv_that_is_not_routerbench_is_a_clear_error(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="not a RouterBench CSV"):
        load_routerbench(tmp_path / "x.csv")


@needs_routerdc
def test_routerdc_tasks_and_ids_span_train_and_test_files(tmp_path):
    for name in ("arc_challenge_train.json", "arc_challenge_test.json", "humaneval_test.json"):
        shutil.copy(ROUTERDC_DIR / name, tmp_path / name)
    ds = load_routerdc(tmp_path)
    assert Counter(ds.tasks) == {"arc_challenge": 820 + 352, "humaneval": 49}
    assert len(set(ds.ids)) == len(ds) and "arc_challenge.1171" in ds.ids
    assert ds.costs is None and len(ds.models) == 7
    assert np.nanmin(ds.scores) >= 0 and np.nanmax(ds.scores) <= 1
    assert 0 < ds.scores.mean() < 1  # soft scores, not all one value


@needs_routerdc
def test_routerdc_reads_scores_written_as_a_python_literal(tmp_path):
    records = json.loads((ROUTERDC_DIR / "humaneval_test.json").read_text())[:3]
    literal = [{"question": r["question"], "scores": repr(r["scores"])} for r in records]
    (tmp_path / "humaneval-test.json").write_text(json.dumps(literal))
    ds = load_routerdc(tmp_path / "humaneval-test.json")
    assert ds.tasks == ["humaneval"] * 3
    np.testing.assert_array_equal(ds.scores[0], [float(v) for v in records[0]["scores"].values()])


def test_jsonl_round_trip_keeps_everything(tmp_path, routerbench):
    ds = routerbench.subset(np.arange(0, 3150, 97))
    ds.scores[0, 3] = np.nan  # an unlabelled pair is written as null and read back as NaN
    write_jsonl(ds, tmp_path / "d.jsonl")
    back = load_jsonl(tmp_path / "d.jsonl")
    assert (back.ids, back.prompts, back.tasks, back.models) == (ds.ids, ds.prompts, ds.tasks, ds.models)
    np.testing.assert_array_equal(back.scores, ds.scores)
    np.testing.assert_array_equal(back.costs, ds.costs)


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "prompt": "p", "scores": {"m": 1.5}}', "outside \\[0, 1\\]"),
    ('{"id": "a", "prompt": "p", "scores": [1]}', "'scores' must be"),
    ('{"id": "a", "prompt": "p", "scores": {"m": 1}, "costs": {"m": -1}}', "cost"),
    ('not json', "not JSON"),
])
def test_jsonl_bad_lines_are_reported_with_their_line_number(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "prompt": "p", "scores": {"m": 0}}\n' + line + "\n")
    with pytest.raises(DatasetError, match=f"bad.jsonl:2: .*{message}"):
        load_jsonl(path)


def test_jsonl_of_prompts_alone_loads_with_no_models(tmp_path):
    path = tmp_path / "capture.jsonl"
    path.write_text('{"id": "a", "prompt": "first"}\n{"id": "b", "prompt": "second"}\n')
    ds = load_jsonl(path)
    assert (ds.ids, ds.prompts, ds.models, ds.scores.shape) == (["a", "b"], ["first", "second"], [], (2, 0))


def test_jsonl_repeated_id_is_an_error(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "scores": {"m": 0}}\n' * 2)
    with pytest.raises(DatasetError, match="appears twice"):
        load_jsonl(path)


def test_subset_by_positions_and_by_mask_agree(routerbench):
    mask = np.array([t == "mbpp" for t in routerbench.tasks])
    by_mask, by_idx = routerbench.subset(mask), routerbench.subset(np.flatnonzero(mask))
    assert len(by_mask) == 427 and by_mask.ids == by_idx.ids
    np.testing.assert_array_equal(by_mask.costs, by_idx.costs)


def test_model_cost_table_replaces_only_the_models_it_names(routerbench):
    priced = routerbench.with_model_costs({"claude-v2": 0.01})
    j = routerbench.models.index("claude-v2")
    assert np.all(priced.costs[:, j] == 0.01)
    others = [k for k in range(len(routerbench.models)) if k != j]
    np.testing.assert_array_equal(priced.costs[:, others], routerbench.costs[:, others])
    assert routerbench.costs[0, j] != 0.01  # the original is untouched


def test_data_without_costs_needs_a_complete_cost_table(routerbench):
    bare = routerbench.subset([0, 1])
    bare.costs = None
    with pytest.raises(DatasetError, match="no per-prompt costs"):
        bare.priced(None)
    with pytest.raises(DatasetError, match="lacks"):
        bare.with_model_costs({"claude-v2": 1.0})
    full = bare.priced({m: 1.0 for m in bare.models})
    assert full.costs.shape == (2, 11) and np.all(full.costs == 1.0)


def test_load_dataset_detects_the_format_from_the_path(tmp_path, routerbench):
    write_jsonl(routerbench.subset([0, 1, 2]), tmp_path / "x.jsonl")
    assert len(load_dataset(tmp_path / "x.jsonl")) == 3
    assert len(load_dataset(ROUTERBENCH_DIR / "mbpp_test.csv")) == 128
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing")


def _convert(argv: list[str]) -> int:
    return cli_main(["dataset", "convert", *argv])


def test_cli_convert_writes_routerbench_as_canonical_jsonl(tmp_path, capsys):
    out = tmp_path / "rb.jsonl"
    assert _convert(["--data", str(ROUTERBENCH_DIR / "mbpp_test.csv"), "--out", str(out)]) == 0
    assert "128 prompts, 11 models" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 128
    assert load_jsonl(out).costs is not None


@needs_routerdc
def test_cli_convert_refuses_data_without_costs_and_accepts_a_cost_table(tmp_path, capsys):
    data = tmp_path / "dc"
    data.mkdir()
    shutil.copy(ROUTERDC_DIR / "humaneval_test.json", data)
    out = tmp_path / "dc.jsonl"
    assert _convert(["--data", str(data), "--out", str(out)]) == 2
    assert "no per-prompt costs" in capsys.readouterr().err and not out.exists()
    models = load_routerdc(data).models
    (tmp_path / "costs.yaml").write_text("".join(f"{m}: 0.{i + 1}\n" for i, m in enumerate(models)))
    assert _convert(["--data", str(data), "--model-costs", str(tmp_path / "costs.yaml"), "--out", str(out)]) == 0
    back = load_jsonl(out)
    assert len(back) == 49 and back.costs[0, 0] == pytest.approx(0.1)


def test_cli_convert_reports_a_missing_path_without_a_traceback(tmp_path, capsys):
    assert _convert(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
