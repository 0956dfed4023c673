"""`uniroute eval` and `uniroute build-state` from the shell, on real (small) data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.main import main
from app.demo import ROUTERBENCH_DIR
from router_core.evaluation import METHODS
from router_core.state import RouterState

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROUTERBENCH_DIR / "mbpp_test.csv"


def _uniroute(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "app.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def test_eval_json_stdout_is_exactly_one_object_and_the_plot_is_drawn(tmp_path, shared_cache):
    plot = tmp_path / "curves.png"
    run = _uniroute("eval", "--data", str(SMALL), "--trials", "2", "--clusters", "3", "--json", "-",
                    "--plot", str(plot), "--cache-dir", shared_cache)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)  # the whole of stdout is one JSON document
    assert (result["n_prompts"], result["n_models"], result["trials"]) == (128, 11, 2)
    assert set(result["methods"]) == set(METHODS)
    for m in result["methods"].values():
        assert m["area_ci"][0] <= m["area"] <= m["area_ci"][1]
        assert {"area50", "qnc", "peak", "closure", "closure_ci"} <= set(m)
    assert result["methods"]["oracle"]["closure"] == pytest.approx(1.0)
    assert "uniroute_learned_map - knn" in result["paired"]
    assert {f"{m} - zero_router" for m in METHODS if m not in ("zero_router", "oracle")} <= set(result["paired"])
    assert "closure (95% CI)" in run.stderr and "- zero_router" in run.stderr  # the table shows both
    assert "area" in run.stderr and "trials" in run.stderr  # table and progress on stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_costs_by_cluster_is_recorded_and_leaves_the_zero_router_alone(tmp_path, shared_cache):
    runs = {}
    for extra in ([], ["--costs-by-cluster"]):
        out = tmp_path / f"eval{len(extra)}.json"
        assert main(["eval", "--data", str(SMALL), "--trials", "2", "--clusters", "3", "--cache-dir", shared_cache,
                     "--json", str(out), *extra]) == 0
        runs[bool(extra)] = json.loads(out.read_text())
    assert (runs[False]["config"]["costs_by_cluster"], runs[True]["config"]["costs_by_cluster"]) == (False, True)
    for name in ("zero_router", "oracle"):
        assert runs[True]["methods"][name]["area"] == runs[False]["methods"][name]["area"]


def test_eval_without_costs_asks_for_a_cost_table(tmp_path, capsys):
    data = tmp_path / "tiny.json"
    data.write_text(json.dumps([{"question": f"q{i}", "scores": {"a": 1, "b": 0, "c": 1}} for i in range(5)]))
    assert main(["eval", "--data", str(data), "--trials", "1"]) == 2
    assert "model-cost table" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--trials", "0", "--trials must be at least 1"),
    ("--test-models-fraction", "1.5", "strictly between 0 and 1"),
    ("--plot", "curves.pdf", ".png"),
])
def test_eval_rejects_bad_options_in_one_line(flag, value, message, capsys):
    assert main(["eval", "--data", str(SMALL), flag, value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_build_state_writes_a_loadable_state(tmp_path, shared_cache):
    out = tmp_path / "state"
    code = main(["build-state", "--data", str(SMALL), "--format", "routerbench", "--clusters", "4",
                 "--cache-dir", shared_cache, "--out", str(out)])
    assert code == 0
    state = RouterState.load(out)
    assert (state.k, state.method, state.embedder) == (4, "uniroute_kmeans", "accurate")
    assert state.metadata["training_set"] == ["mbpp_test.csv"] and state.metadata["n_prompts"] == 128
    # the CSV records the LLMs' answers: the state knows how long each cluster's answers run
    assert state.output_scale is not None and state.output_scale.shape == (4,)
    assert state.metadata["output_scale"]["answered_prompts"] == 128


def test_an_existing_state_gets_its_output_scale_without_moving_a_centroid(tmp_path, shared_cache, capsys):
    from dataclasses import replace

    out = tmp_path / "state"
    assert main(["build-state", "--data", str(SMALL), "--format", "routerbench", "--clusters", "4",
                 "--cache-dir", shared_cache, "--out", str(out)]) == 0
    built = RouterState.load(out)
    replace(built, output_scale=None).save(out)  # as a state built before the scale existed
    assert main(["build-state", "--data", str(SMALL), "--format", "routerbench", "--cache-dir", shared_cache,
                 "--out", str(out), "--output-scale-only"]) == 0
    again = RouterState.load(out)
    assert again.version == built.version and again.output_scale is not None
    assert again.output_scale.tolist() == built.output_scale.tolist()
    other = ROUTERBENCH_DIR / "winograde_test.csv"
    assert main(["build-state", "--data", str(other), "--format", "routerbench", "--cache-dir", shared_cache,
                 "--out", str(out), "--output-scale-only"]) == 2
    assert "was fitted on 128: give the data it was fitted on" in capsys.readouterr().err
    # other prompts of the same number pass the count, not the clusters' recorded sizes
    same_size = tmp_path / "winograde_128.csv"
    same_size.write_text("".join(other.read_text().splitlines(keepends=True)[:129]))
    assert main(["build-state", "--data", str(same_size), "--format", "routerbench", "--cache-dir", shared_cache,
                 "--out", str(out), "--output-scale-only"]) == 2
    assert "give the data it was fitted on" in capsys.readouterr().err
    assert RouterState.load(out).output_scale.tolist() == built.output_scale.tolist()


def test_build_state_from_prompts_without_answers_prices_every_cluster_alike(tmp_path, shared_cache):
    rows = [{"id": str(i), "prompt": f"Question {i}: what is {i} times {i + 1}?", "scores": {"a": 1.0, "b": 0.0}}
            for i in range(40)]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["build-state", "--data", str(data), "--clusters", "2", "--cache-dir", shared_cache,
                 "--out", str(tmp_path / "state")]) == 0
    state = RouterState.load(tmp_path / "state")
    assert state.output_scale is None and "output_scale" not in state.metadata


def test_build_state_rejects_more_clusters_than_prompts(tmp_path, capsys):
    assert main(["build-state", "--data", str(SMALL), "--clusters", "500", "--out", str(tmp_path)]) == 2
    assert "--clusters must be between 1 and the number of prompts (128)" in capsys.readouterr().err


def test_an_output_file_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    # it was a traceback once the whole evaluation (or the curve) had been computed
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for argv, option in ((["eval", "--data", str(SMALL), "--plot", str(blocker / "curves.png")], "--plot"),
                         (["eval", "--data", str(SMALL), "--json", str(blocker / "out.json")], "--json"),
                         (["calibrate", "--url", "http://127.0.0.1:9", "--plot", str(blocker / "c.png")], "--plot")):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and f"error: {option} {blocker}" in err and err.count("\n") == 1, err


def test_calibrate_refuses_what_it_would_ignore_or_misname(capsys):
    # --models applies to a gateway's curve only: without --url the whole dataset's was printed
    assert main(["calibrate", "--models", "a,b"]) == 2
    assert "--models needs --url" in capsys.readouterr().err
    # matplotlib picks the format from the suffix: .txt was a traceback, none wrote FILE.png
    assert main(["calibrate", "--url", "http://127.0.0.1:9", "--plot", "curve.txt"]) == 2
    assert "--plot must name a .png file" in capsys.readouterr().err
