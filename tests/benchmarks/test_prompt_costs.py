"""The per-prompt pricing study (`benchmarks.prompt_costs`): its cost models on synthetic data
with a known answer, and the whole study on a small real dataset (the vendored MBPP test file,
128 prompts, 11 LLMs, the shipped MiniLM), paired with `uniroute eval` on the same splits."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest

from app.demo import ROUTERBENCH_DIR
from benchmarks.prompt_costs import (
    COST_MODELS,
    ROUTERS,
    input_costs,
    own_toward_train,
    predicted_costs,
)
from benchmarks.repset_size import load_embedded
from router_core.evaluation import EvalConfig, TrialSplit, evaluate
from tests.benchmarks.test_benchmarks_smoke import run_benchmark

SMALL = ROUTERBENCH_DIR / "mbpp_test.csv"


def test_cost_models_find_the_dear_kind_of_prompt_from_training_and_representative_costs():
    """Two kinds of prompt, one three times as dear for every LLM, the long ones: every cost
    model but the mean prices a dear test prompt above a cheap one, for every test LLM."""
    rng = np.random.default_rng(0)
    n, d = 200, 8
    kind = np.arange(n) % 2
    emb = np.eye(d)[kind] + 0.05 * rng.normal(size=(n, d))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    lengths = np.where(kind == 1, 900.0, 100.0) + rng.uniform(0, 50, n)
    price = np.array([1.0, 2.0, 5.0, 0.5, 3.0])
    costs = price * np.where(kind == 1, 3.0, 1.0)[:, None] * rng.uniform(0.9, 1.1, (n, price.size))
    split = TrialSplit(train_models=np.array([0, 1, 2]), test_models=np.array([3, 4]),
                       train_prompts=np.arange(0, 120), val_prompts=np.arange(120, 140), test_prompts=np.arange(140, n))
    priced = predicted_costs(emb, lengths, costs, split, clusters=2)
    val_mean = costs[np.ix_(split.val_prompts, split.test_models)].mean(axis=0)
    assert np.array_equal(priced["mean"], val_mean / val_mean.max())  # `uniroute eval`'s route cost
    assert np.allclose(priced["realised"], costs[np.ix_(split.test_prompts, split.test_models)] / val_mean.max())
    dear, cheap = kind[split.test_prompts] == 1, kind[split.test_prompts] == 0
    for name in ("lenfit", "knnrel", "ownclus", "trainclus", "lengthmodel", "realised"):
        c = priced[name]
        assert c.shape == (split.test_prompts.size, 2) and (c >= 0).all()
        assert (c[dear].min(axis=0) > c[cheap].max(axis=0)).all(), name
        # about three times as dear, for each test LLM (ownclus shrinks toward the mean: less)
        assert (c[dear].mean(axis=0) / c[cheap].mean(axis=0) > 2.0).all(), name


@pytest.mark.slow
def test_study_reports_every_router_and_cost_model_paired_with_uniroute_eval(tmp_path, shared_cache):
    out = tmp_path / "prompt_costs.json"
    run_benchmark("prompt_costs", "--data", str(SMALL), "--format", "routerbench", "--embedder", "accurate",
                  "--cache-dir", shared_cache, "--trials", "2", "--json", str(out))
    result = json.loads(out.read_text())
    methods = result["methods"]
    assert list(methods) == list(ROUTERS) and all(list(m) == list(COST_MODELS) for m in methods.values())
    for router, rows in methods.items():
        for cost, row in rows.items():
            assert len(row["trial_areas"]) == 2 and np.mean(row["trial_areas"]) == pytest.approx(row["area"])
            assert row["area_ci"][0] <= row["area"] <= row["area_ci"][1]
            paired = row["minus_mean_cost"]
            if cost == "mean":
                assert paired is None
                continue
            diff = np.subtract(row["trial_areas"], rows["mean"]["trial_areas"])
            assert paired["area_diff"] == pytest.approx(diff.mean())
            assert paired["ci"][0] <= paired["area_diff"] <= paired["ci"][1]
            assert paired["wins"] == int((diff > 0).sum()) and paired["trials"] == 2
            versus = row.get("versus")
            assert (versus is None) == (cost != "lengthmodel")
            if versus is not None:
                diff = np.subtract(row["trial_areas"], rows[versus["cost_model"]]["trial_areas"])
                assert versus["area_diff"] == pytest.approx(diff.mean()) and versus["trials"] == 2
    assert methods["zero_router"]["mean"]["closure"] == 0.0
    assert methods["oracle"]["mean"]["closure"] == pytest.approx(1.0)

    # With mean costs the study IS `uniroute eval` (learned map left out): same splits, same
    # routers, the same areas trial by trial, so every per-prompt cost model is paired with it.
    args = argparse.Namespace(data=str(SMALL), format="routerbench", model_costs=None, embedder="accurate",
                              max_prompts=None, cache_dir=shared_cache, name=None)
    _, _, emb, scores, costs = load_embedded(args)
    report = evaluate(emb, scores, costs, replace(EvalConfig(trials=2), learned_map=None))
    for router in ROUTERS:
        assert methods[router]["mean"]["trial_areas"] == [t.metrics[router]["area"] for t in report.trials], router


def test_gateway_pricing_takes_the_input_as_it_is_and_predicts_only_the_answer():
    """Every LLM's answers to the long-answer kind cost ten times the others' and the input is a
    known share: gw_mean prices each test prompt's input exactly plus the mean answer; gw_cluster
    and gw_length also find the long-answer kind, from the training LLMs' answer costs."""
    rng = np.random.default_rng(1)
    n, d = 240, 8
    kind = np.arange(n) % 2
    emb = np.eye(d)[kind] + 0.05 * rng.normal(size=(n, d))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    price = np.array([1.0, 2.0, 5.0, 0.5, 3.0])
    input_cost = price * rng.uniform(0.5, 1.5, (n, 1))
    costs = input_cost + price * np.where(kind == 1, 10.0, 1.0)[:, None] * rng.uniform(0.9, 1.1, (n, price.size))
    split = TrialSplit(train_models=np.array([0, 1, 2]), test_models=np.array([3, 4]),
                       train_prompts=np.arange(0, 140), val_prompts=np.arange(140, 170), test_prompts=np.arange(170, n))
    priced = predicted_costs(emb, np.ones(n), costs, split, clusters=2, input_cost=input_cost)
    te, q, val = split.test_models, split.test_prompts, split.val_prompts
    top = costs[np.ix_(val, te)].mean(axis=0).max()
    answer = (costs - input_cost)[np.ix_(val, te)].mean(axis=0)
    np.testing.assert_allclose(priced["gw_mean"] * top, input_cost[np.ix_(q, te)] + answer)
    long, short = kind[q] == 1, kind[q] == 0
    for name in ("gw_cluster", "gw_length"):
        part = priced[name] * top - input_cost[np.ix_(q, te)]  # the predicted answer cost
        assert (part[long].mean(axis=0) / part[short].mean(axis=0) > 5).all(), name
        # the answer's prediction averages each test LLM's mean over the representative prompts
        np.testing.assert_allclose(part.mean(axis=0), answer, rtol=0.2)


def test_input_prices_follow_the_datas_token_rule(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"a": {"input_per_mtok": 2.0}, "b": {"input_per_mtok": 0.5}}))
    got = input_costs(["x" * 8, "y" * 9], ["a", "b"], str(prices))  # 2 and ceil(9 / 4) = 3 tokens
    np.testing.assert_allclose(got, [[4e-6, 1e-6], [6e-6, 1.5e-6]])
    with pytest.raises(SystemExit, match="no price"):
        input_costs(["x"], ["a", "c"], str(prices))


def test_own_costs_shrink_toward_the_training_pattern_by_their_pseudo_prompts():
    labels = np.array([0, 0, 1])
    val_cost = np.array([[1.0], [3.0], [10.0]])  # one test LLM: mean 14 / 3
    mean = val_cost.mean(axis=0)
    train_scale = np.array([0.5, 2.0])
    np.testing.assert_allclose(own_toward_train(labels, val_cost, mean, train_scale, 2, 0.0), [[2.0, 10.0]])
    far = own_toward_train(labels, val_cost, mean, train_scale, 2, 1e9)
    expected = mean[0] * train_scale / ((0.5 + 0.5 + 2.0) / 3)  # the scale averages 1 over the prompts
    np.testing.assert_allclose(far, [expected], rtol=1e-6)
