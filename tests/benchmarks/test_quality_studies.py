"""The routing-quality studies run end to end on a small real dataset (the vendored MBPP test
file, 128 prompts, 11 LLMs, the shipped MiniLM) and write what the docs read. Both embed through
the run's cache, so the file is embedded once."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.demo import ROUTERBENCH_DIR
from tests.benchmarks.test_benchmarks_smoke import run_benchmark

SMALL = ROUTERBENCH_DIR / "mbpp_test.csv"
pytestmark = pytest.mark.slow


def test_repset_size_study_writes_closure_per_size_and_selection_and_a_plot(tmp_path, shared_cache):
    out, plot = tmp_path / "study.json", tmp_path / "study.png"
    run_benchmark("repset_size", "--data", str(SMALL), "--format", "routerbench", "--embedder", "accurate",
                  "--cache-dir", shared_cache, "--sizes", "10", "30", "--trials", "2",
                  "--json", str(out), "--plot", str(plot))
    result = json.loads(out.read_text())
    assert [(r["selection"], r["size"]) for r in result["rows"]] == [
        ("random", 10), ("random", 30), ("disagreement", 10), ("disagreement", 30)]
    for row in result["rows"]:
        assert row["methods"]["zero_router"]["closure"] == 0.0
        assert row["methods"]["oracle"]["closure"] == pytest.approx(1.0)
        assert "uniroute_learned_map" not in row["methods"]  # left out of the study
        assert "transfer_irt - uniroute_kmeans" in row["paired"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_repset_size_study_runs_only_the_selections_asked_for(tmp_path, shared_cache):
    out, plot = tmp_path / "study.json", tmp_path / "study.png"
    run_benchmark("repset_size", "--data", str(SMALL), "--format", "routerbench", "--embedder", "accurate",
                  "--cache-dir", shared_cache, "--sizes", "30", "--selections", "random", "--trials", "2",
                  "--json", str(out), "--plot", str(plot))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["selection"], r["size"]) for r in rows] == [("random", 30)]
    assert "kmeans_transfer_blend - uniroute_kmeans" in rows[0]["paired"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_repset_size_study_draws_other_splits_under_another_seed(tmp_path, shared_cache):
    """--seed gives a finding fresh splits to be confirmed on; it is recorded with the result."""
    results = {}
    for seed in ("0", "1"):
        out = tmp_path / f"study{seed}.json"
        run_benchmark("repset_size", "--data", str(SMALL), "--format", "routerbench", "--embedder", "accurate",
                      "--cache-dir", shared_cache, "--sizes", "30", "--selections", "random", "--trials", "2",
                      "--seed", seed, "--json", str(out), "--plot", str(tmp_path / "study.png"))
        results[seed] = json.loads(out.read_text())
    assert [r["seed"] for r in results.values()] == [0, 1]
    oracle = [r["rows"][0]["methods"]["oracle"]["area"] for r in results.values()]
    assert oracle[0] != oracle[1]  # other test prompts and test LLMs


def test_dense_ceiling_reports_every_probe_against_the_same_zero_router_and_oracle(tmp_path, shared_cache):
    out = tmp_path / "ceiling.json"
    run_benchmark("dense_ceiling", "--data", str(SMALL), "--format", "routerbench", "--embedder", "accurate",
                  "--cache-dir", shared_cache, "--trials", "2", "--lexical", "--labels-on-x", "--json", str(out))
    methods = json.loads(out.read_text())["methods"]
    assert methods["zero_router"]["closure"] == 0.0 and methods["oracle"]["closure"] == pytest.approx(1.0)
    assert {"knn_dense k=40", "kmeans_dense K=3", "ridge_dense alpha=10", "mlp_dense hidden=64",
            "ridge_lexical alpha=10", "ridge_lexical+embedding alpha=10", "train_llm_labels_on_x alpha=10"} <= set(methods)
    for m in methods.values():  # per-trial areas, for paired comparisons between probes
        assert len(m["trial_areas"]) == 2 and np.mean(m["trial_areas"]) == pytest.approx(m["area"])
    for m in methods.values():
        assert m["minus_zero_router"][1] <= m["minus_zero_router"][0] <= m["minus_zero_router"][2]
    assert methods["zero_router"]["closure_ci"] == [0.0, 0.0]
    assert all(len(m["closure_ci"]) == 2 for m in methods.values())


def test_finetuned_encoder_study_compares_each_probe_frozen_and_fine_tuned_on_the_same_splits(tmp_path,
                                                                                           shared_cache):
    out = tmp_path / "finetuned.json"
    run_benchmark("finetuned_encoder", "--data", str(SMALL), "--format", "routerbench", "--cache-dir", shared_cache,
                  "--trials", "2", "--epochs", "1", "--json", str(out))
    result = json.loads(out.read_text())
    methods = result["methods"]
    assert methods["zero_router"]["closure"] == 0.0 and methods["oracle"]["closure"] == pytest.approx(1.0)
    probes = ("ridge_dense alpha=10", "kmeans_rep K=3", "kmeans_rep K=10", "knn", "uniroute_kmeans", "transfer_irt")
    assert {f"{p} [{e}]" for p in probes for e in ("routing", "frozen", "finetuned")} <= set(methods)
    for probe in probes:
        diff = np.subtract(methods[f"{probe} [finetuned]"]["trial_areas"], methods[f"{probe} [frozen]"]["trial_areas"])
        assert result["finetuned_minus_frozen"][probe]["mean_ci"][0] == pytest.approx(diff.mean())
    held = result["held_out"]
    assert len(result["held_out_trials"]) == 2
    # the fine-tune learnt its training prompts' labels (below the base rates' cross-entropy)
    assert held["cross_entropy_finetuned_on_its_training"] < held["cross_entropy_constant"]
    assert all(np.isfinite(v) for v in held.values())


def test_dense_ceiling_network_probe_learns_a_loss_the_embedding_determines_and_ignores_missing_labels():
    from benchmarks.dense_ceiling import mlp_probe

    rng = np.random.default_rng(0)
    side = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 8)) + 3.0 * side[:, None]
    loss = np.c_[side, 1 - side].astype(float)
    loss[::3, 0] = np.nan  # a label missing for one LLM must not pull its fit anywhere
    query_side = np.array([0, 1, 0, 1])
    predicted = mlp_probe(x, loss, rng.normal(size=(4, 8)) + 3.0 * query_side[:, None])
    assert predicted.shape == (4, 2) and not np.isnan(predicted).any()
    assert np.all(np.abs(predicted - np.c_[query_side, 1 - query_side]) < 0.2), predicted


def test_ridge_probe_solves_the_same_fit_in_the_dual_when_features_outnumber_prompts():
    from benchmarks.dense_ceiling import ridge_probe

    rng = np.random.default_rng(0)
    x, query = rng.normal(size=(30, 5)), rng.normal(size=(4, 5))
    loss = rng.random((30, 2))
    loss[3, 1] = np.nan
    # zero columns change no ridge fit, but 40 of them push the solve into the dual
    padded = ridge_probe(np.c_[x, np.zeros((30, 40))], loss, np.c_[query, np.zeros((4, 40))], 3.0)
    assert np.allclose(ridge_probe(x, loss, query, 3.0), padded)


def test_lexical_features_let_a_probe_learn_a_loss_that_one_word_decides():
    from benchmarks.dense_ceiling import lexical_features, ridge_probe

    rng = np.random.default_rng(0)
    filler = ["river", "table", "green", "music", "stone", "paper", "cloud", "light"]
    texts = [" ".join(rng.choice(filler, 6)) + (" integral" if i % 2 else "") for i in range(200)] + [""]
    words = lexical_features(texts)
    assert np.allclose(np.linalg.norm(words[:-1], axis=1), 1.0) and not words[-1].any()
    loss = (np.arange(200) % 2).astype(float)[:, None]
    predicted = ridge_probe(words[:150], loss[:150], words[150:200], 1.0)[:, 0]
    # every held-out prompt with the word is predicted harder than every one without it
    assert predicted[1::2].min() > predicted[::2].max() + 0.2, predicted
