"""The answer-similarity transfer study (benchmarks/answer_transfer.py) on a small real dataset:
the vendored MBPP test file (128 prompts, 11 LLMs, each LLM's recorded answer to each prompt)
with the shipped `fast` embedder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.demo import ROUTERBENCH_DIR
from benchmarks.answer_transfer import (
    PAIRS,
    ROUTERS,
    AnswerFeatures,
    answer_routers,
    recorded_answers,
    similarities,
)
from router_core.datasets import load_dataset
from router_core.embedding import embed_for_routing, load_embedder
from router_core.evaluation import EvalConfig, draw_split, evaluate
from router_core.policy import normalise_costs, route
from tests.benchmarks.test_benchmarks_smoke import run_benchmark
from tests.support.labels import flipped_outside_validation

SMALL = ROUTERBENCH_DIR / "mbpp_test.csv"
CFG = EvalConfig(trials=2, cluster_grid=(3, 5), prior_grid=(4.0,), knn_grid=(20,), learned_map=None, n_lambdas=40)


@pytest.fixture(scope="module")
def small():
    """(data, prompt embeddings, recorded answers, the `fast` embedder) of the MBPP file."""
    data = load_dataset(SMALL, "routerbench")
    embedder = load_embedder("fast")
    answers = recorded_answers(data, str(SMALL), "routerbench")
    return data, embed_for_routing(embedder, list(data.prompts)), answers, embedder


def replaced(answers: list[list[str | None]], prompts: np.ndarray, models: np.ndarray) -> list[list[str | None]]:
    """`answers` with each of `models`' answers to `prompts` replaced by another text (and
    another length)."""
    rows, cols = set(prompts.tolist()), set(models.tolist())
    return [[f"Replaced. {a[::-1]} {a}" if i in rows and j in cols and a is not None else a
             for j, a in enumerate(row)] for i, row in enumerate(answers)]


@pytest.mark.slow
def test_study_writes_the_new_routers_paired_with_uniroute_eval_on_the_same_splits(tmp_path, shared_cache):
    out = tmp_path / "answers.json"
    run_benchmark("answer_transfer", "--data", str(SMALL), "--format", "routerbench", "--embedder", "fast",
                  "--cache-dir", shared_cache, "--trials", "2", "--json", str(out))
    result = json.loads(out.read_text())
    methods = result["methods"]
    assert methods["zero_router"]["closure"] == 0.0 and methods["oracle"]["closure"] == pytest.approx(1.0)
    assert set(ROUTERS) <= set(methods) and "uniroute_learned_map" not in methods
    assert {f"{a} - {b}" for a, b in PAIRS} <= set(result["paired"])
    assert {"answer_transfer.tau", "answer_transfer.centred", "answer_prior_ridge.alpha",
            "answer_prior_ridge.descriptor"} <= set(result["settings"])
    assert result["seconds_per_trial"] > 0 and result["cpu_seconds_per_trial"] > 0


def test_the_study_leaves_every_router_of_uniroute_eval_as_it_is(small):
    """The new routers draw after `uniroute eval`'s, so the pairing is with its very figures."""
    data, emb, answers, embedder = small
    feats = AnswerFeatures.embed(embedder, answers)
    alone = evaluate(emb, data.scores, data.costs, CFG)
    both = evaluate(emb, data.scores, data.costs, CFG,
                    extra=lambda split, rng: answer_routers(emb, data.scores, data.costs, feats, CFG, split, rng),
                    extra_pairs=PAIRS)
    for method, summary in alone.summary.items():
        assert both.summary[method] == summary
    assert {k: v for k, v in both.settings.items() if k in alone.settings} == alone.settings
    assert set(ROUTERS) <= set(both.summary) and "answer_prior_ridge - transfer_irt" in both.paired


def test_decisions_ignore_every_test_llm_label_and_answer_outside_the_representative_set(small):
    """The contract: a new LLM is known only from its representative answers, text and labels.
    Flipping every test-LLM label and replacing every test-LLM answer outside the representative
    prompts changes no setting, no gamma and no decision of the answer-similarity routers."""
    data, emb, answers, embedder = small
    split = draw_split(data.scores, CFG, np.random.default_rng(7))
    flipped = flipped_outside_validation(data.scores, split)
    hidden_prompts = np.setdiff1d(np.arange(len(answers)), split.val_prompts)
    feats = AnswerFeatures.embed(embedder, answers)
    feats_replaced = AnswerFeatures.embed(embedder, replaced(answers, hidden_prompts, split.test_models))
    a_gammas, a_settings = answer_routers(emb, data.scores, data.costs, feats, CFG, split, np.random.default_rng(3))
    b_gammas, b_settings = answer_routers(emb, flipped, data.costs, feats_replaced, CFG, split,
                                          np.random.default_rng(3))
    assert a_settings == b_settings
    cost = normalise_costs(np.nanmean(data.costs[np.ix_(split.val_prompts, split.test_models)], axis=0))
    lams = np.linspace(0, 2, 41)[:, None, None]
    for name in ROUTERS:
        np.testing.assert_array_equal(a_gammas[name], b_gammas[name])
        np.testing.assert_array_equal(route(a_gammas[name][None], cost, lams), route(b_gammas[name][None], cost, lams))
    # Neither change is a no-op: both touch the test LLMs where the routers may not look.
    q, te = split.test_prompts, split.test_models
    assert (flipped[np.ix_(q, te)] != data.scores[np.ix_(q, te)]).all()
    hidden = feats.answered[np.ix_(q, te)]
    assert hidden.any()
    assert (feats.emb[np.ix_(q, te)][hidden] != feats_replaced.emb[np.ix_(q, te)][hidden]).any(axis=-1).all()
    assert (feats.log_length[np.ix_(q, te)][hidden] != feats_replaced.log_length[np.ix_(q, te)][hidden]).all()
    # ... while the representative answers are read: replacing those moves every similarity.
    shown = AnswerFeatures.embed(embedder, replaced(answers, split.val_prompts, split.test_models))
    before = similarities(feats, split.val_prompts, split.test_models, split.train_models)
    after = similarities(shown, split.val_prompts, split.test_models, split.train_models)
    for descriptor in ("text", "length"):
        assert (before[descriptor] != after[descriptor]).all()
