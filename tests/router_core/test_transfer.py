"""The transfer router on the vendored RouterBench subset (real prompts, real labels) embedded
with the shipped `fast` embedder."""
from dataclasses import replace

import numpy as np
import pytest

from app.demo import ROUTERBENCH_DIR
from router_core.datasets import load_dataset
from router_core.embedding import embed_for_routing
from router_core.evaluation import (
    COMBINED,
    TRANSFER_LINKS,
    EvalConfig,
    draw_split,
    fit_routers,
)
from router_core.learned_map import LearnedMapConfig
from router_core.policy import route
from router_core.transfer import (
    fit_basis,
    fit_profiles,
    prompt_features,
    transfer_gamma,
)
from tests.support.labels import flipped_outside_validation

DATA = ROUTERBENCH_DIR


@pytest.fixture(scope="module")
def bench(default_state):
    """(emb, scores, costs) of the vendored subset: 3,150 prompts, 11 LLMs."""
    _, embedder = default_state
    data = load_dataset(DATA, "routerbench")
    return embed_for_routing(embedder, list(data.prompts)), data.scores, data.costs


def _roles(scores, seed=0):
    """Training prompts / representative prompts / held-out prompts, training LLMs / new LLMs."""
    rng = np.random.default_rng(seed)
    n, m = scores.shape
    perm, models = rng.permutation(n), rng.permutation(m)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2: n // 2 + 300]), np.sort(perm[n // 2 + 300:]), \
        np.sort(models[:7]), np.sort(models[7:])


def test_a_huge_ridge_gives_every_prompt_the_llms_representative_mean(bench):
    emb, scores, _ = bench
    train, rep, held, tr_m, new_m = _roles(scores)
    basis = fit_basis(emb[train], 1 - scores[np.ix_(train, tr_m)], k=40, rank=7)
    rep_loss = 1 - scores[np.ix_(rep, new_m)]
    for link in ("identity", "logit"):
        gamma = transfer_gamma(basis, fit_profiles(basis, emb[rep], rep_loss, 1e9, link), emb[held])
        np.testing.assert_allclose(gamma, np.broadcast_to(rep_loss.mean(axis=0), gamma.shape), atol=1e-4)


def test_transfer_predicts_new_llms_held_out_answers_better_than_their_mean(bench):
    emb, scores, _ = bench
    train, rep, held, tr_m, new_m = _roles(scores, seed=1)
    basis = fit_basis(emb[train], 1 - scores[np.ix_(train, tr_m)], k=40, rank=7)
    rep_loss, held_loss = 1 - scores[np.ix_(rep, new_m)], 1 - scores[np.ix_(held, new_m)]
    mean_brier = ((held_loss - rep_loss.mean(axis=0)) ** 2).mean()
    for link in ("identity", "logit"):
        gamma = transfer_gamma(basis, fit_profiles(basis, emb[rep], rep_loss, 1.0, link), emb[held])
        assert ((held_loss - gamma) ** 2).mean() < mean_brier - 0.005, link


def test_features_of_a_training_prompt_with_one_neighbour_are_its_own_projected_losses(bench):
    emb, scores, _ = bench
    train, _, _, tr_m, _ = _roles(scores)
    loss = 1 - scores[np.ix_(train, tr_m)]
    basis = fit_basis(emb[train], loss, k=1, rank=3)
    unique = np.flatnonzero(np.sort(emb[train] @ emb[train].T, axis=1)[:, -2] < 0.9999)[:20]  # no duplicate
    expected = (loss[unique] - loss.mean(axis=0)) @ basis.basis
    np.testing.assert_allclose(prompt_features(basis, emb[train][unique]), expected, atol=1e-5)
    np.testing.assert_allclose(basis.basis.T @ basis.basis, np.eye(3), atol=1e-9)


def test_unanswered_representative_prompts_are_skipped(bench):
    emb, scores, _ = bench
    train, rep, held, tr_m, new_m = _roles(scores, seed=2)
    basis = fit_basis(emb[train], 1 - scores[np.ix_(train, tr_m)], k=40, rank=2)
    rep_loss = 1 - scores[np.ix_(rep, new_m)]
    holes = rep_loss.copy()
    holes[::3, 0] = np.nan  # the first new LLM skipped a third of the set
    answered = np.flatnonzero(~np.isnan(holes[:, 0]))
    for link in ("identity", "logit"):
        with_holes = transfer_gamma(basis, fit_profiles(basis, emb[rep], holes, 0.5, link), emb[held])
        subset = transfer_gamma(basis, fit_profiles(basis, emb[rep][answered], rep_loss[answered, :1], 0.5, link),
                                emb[held])
        np.testing.assert_allclose(with_holes[:, 0], subset[:, 0], atol=1e-8)


def test_bad_inputs_are_clear_errors(bench):
    emb, scores, _ = bench
    basis = fit_basis(emb[:100], 1 - scores[:100, :5], k=10, rank=2)
    with pytest.raises(ValueError, match="link"):
        fit_profiles(basis, emb[100:150], 1 - scores[100:150, 5:], 1.0, "probit")
    with pytest.raises(ValueError, match="at least one labelled"):
        fit_profiles(basis, emb[100:150], np.full((50, 2), np.nan), 1.0)
    with pytest.raises(ValueError, match="share n"):
        fit_basis(emb[:100], 1 - scores[:99, :5], k=10, rank=2)


def test_transfer_decisions_ignore_every_test_llm_label_outside_the_representative_set(bench):
    """The contract: a new LLM is known only from its representative answers. Flipping every
    test-LLM label outside the representative prompts changes no setting and no decision of the
    transfer routers and of the routers combining them with K-means."""
    emb, scores, costs = bench
    names = (*TRANSFER_LINKS, *COMBINED)
    cfg = EvalConfig(trials=1, cluster_grid=(3, 5), prior_grid=(4.0,), knn_grid=(20,),
                     learned_map=LearnedMapConfig(steps=20), n_lambdas=40)
    split = draw_split(scores, cfg, np.random.default_rng(7))
    flipped = flipped_outside_validation(scores, split)
    a = fit_routers(emb, scores, costs, split, cfg, np.random.default_rng(3))
    b = fit_routers(emb, flipped, costs, split, cfg, np.random.default_rng(3))
    assert {k: v for k, v in a.settings.items() if k.startswith(names)} == \
        {k: v for k, v in b.settings.items() if k.startswith(names)}
    lams = np.linspace(0, 2, 41)[:, None, None]
    for name in names:
        np.testing.assert_array_equal(a.gammas[name], b.gammas[name])
        np.testing.assert_array_equal(route(a.gammas[name][None], a.route_cost, lams),
                                      route(b.gammas[name][None], b.route_cost, lams))
    # The flip is not a no-op: it changes the test LLMs' answers where the router may not look.
    assert (flipped[np.ix_(split.test_prompts, split.test_models)]
            != scores[np.ix_(split.test_prompts, split.test_models)]).all()


def test_repset_chosen_by_disagreement_reads_training_llms_only_and_keeps_the_test_prompts(bench):
    emb, scores, _ = bench
    cfg = EvalConfig(validation_size=100)
    rand = draw_split(scores, cfg, np.random.default_rng(11))
    dis = draw_split(scores, replace(cfg, validation_selection="disagreement"), np.random.default_rng(11))
    np.testing.assert_array_equal(rand.test_prompts, dis.test_prompts)
    np.testing.assert_array_equal(rand.test_models, dis.test_models)
    assert rand.val_prompts.size == dis.val_prompts.size == 100
    spread = scores[:, dis.train_models].var(axis=1)
    assert spread[dis.val_prompts].min() >= spread[dis.train_prompts].max()
    assert spread[dis.val_prompts].mean() > spread[rand.val_prompts].mean()
