"""K-means profiles shrunk toward the transfer prediction, on the vendored RouterBench subset
(real prompts and labels, the shipped `fast` embedder)."""
import numpy as np
import pytest

from app.demo import ROUTERBENCH_DIR
from router_core.clustering import assign, fit_kmeans
from router_core.datasets import load_dataset
from router_core.embedding import embed_for_routing
from router_core.profiles import cluster_profiles
from router_core.shrinkage import blend, cluster_means, profiles_toward
from router_core.transfer import fit_basis, fit_profiles, transfer_gamma

K = 5


@pytest.fixture(scope="module")
def setting(default_state):
    """Training prompts' and representative prompts' clusters, 3 new LLMs' representative losses
    and the transfer router's prediction for them on the training prompts."""
    _, embedder = default_state
    data = load_dataset(ROUTERBENCH_DIR, "routerbench")
    emb = embed_for_routing(embedder, list(data.prompts))
    rng = np.random.default_rng(0)
    perm, models = rng.permutation(len(emb)), rng.permutation(data.scores.shape[1])
    train, rep, tr_m, new_m = np.sort(perm[:1500]), np.sort(perm[1500:1600]), models[:8], models[8:]
    loss = 1.0 - data.scores
    centroids = fit_kmeans(emb[train], K, seed=0)
    basis = fit_basis(emb[train], loss[np.ix_(train, tr_m)], k=40, rank=2)
    rep_loss = loss[np.ix_(rep, new_m)]
    t_train = transfer_gamma(basis, fit_profiles(basis, emb[rep], rep_loss, 1.0, "logit"), emb[train])
    return assign(centroids, emb[train])[0], assign(centroids, emb[rep])[0], rep_loss, t_train


def test_without_shrinkage_the_profiles_are_plain_kmeans_profiles(setting):
    train_lab, rep_lab, rep_loss, t_train = setting
    target = cluster_means(train_lab, t_train, K)
    expected, counts = cluster_profiles(rep_lab, rep_loss, K, prior=0.0)
    assert (counts > 0).all()  # every cluster answered, so no fallback is involved
    np.testing.assert_allclose(profiles_toward(rep_lab, rep_loss, K, target, 0.0), expected, atol=1e-12)


def test_a_huge_strength_gives_the_transfer_prior_averaged_over_the_clusters_training_prompts(setting):
    train_lab, rep_lab, rep_loss, t_train = setting
    target = cluster_means(train_lab, t_train, K)
    for c in range(K):  # the prior is the cluster's mean transfer prediction
        np.testing.assert_allclose(target[:, c], t_train[train_lab == c].mean(axis=0))
    np.testing.assert_allclose(profiles_toward(rep_lab, rep_loss, K, target, 1e9), target, atol=1e-6)


def test_shrinking_toward_each_models_own_mean_is_uniroutes_rule(setting):
    _, rep_lab, rep_loss, _ = setting
    own_mean = np.broadcast_to(rep_loss.mean(axis=0)[:, None], (rep_loss.shape[1], K))
    for strength in (1.0, 8.0):
        np.testing.assert_allclose(profiles_toward(rep_lab, rep_loss, K, own_mean, strength),
                                   cluster_profiles(rep_lab, rep_loss, K, prior=strength)[0], atol=1e-12)


def test_each_cluster_moves_from_its_answers_toward_the_prior_the_fewer_answers_it_has(setting):
    train_lab, rep_lab, rep_loss, t_train = setting
    target = cluster_means(train_lab, t_train, K)
    raw, counts = cluster_profiles(rep_lab, rep_loss, K, prior=0.0)
    shrunk = profiles_toward(rep_lab, rep_loss, K, target, 4.0)
    # The posterior mean sits between the cluster's answers and the prior, weight 4 / (n + 4) on the prior.
    np.testing.assert_allclose(shrunk, raw + 4.0 / (counts + 4.0) * (target - raw), atol=1e-12)


def test_unanswered_prompts_are_skipped_and_an_unanswered_cluster_is_its_prior(setting):
    train_lab, rep_lab, rep_loss, t_train = setting
    target = cluster_means(train_lab, t_train, K)
    holes = rep_loss.copy()
    holes[rep_lab == 0, 0] = np.nan  # the first new LLM answered nothing in cluster 0
    holes[::4, 1] = np.nan
    got = profiles_toward(rep_lab, holes, K, target, 0.0)
    assert got[0, 0] == target[0, 0]
    kept = ~np.isnan(holes[:, 1])
    np.testing.assert_allclose(got[1], profiles_toward(rep_lab[kept], rep_loss[kept, 1:2], K, target[1:2], 0.0)[0])


def test_blend_weights_are_kmeans_at_one_and_transfer_at_zero(setting):
    _, _, rep_loss, t_train = setting
    km = np.broadcast_to(rep_loss.mean(axis=0), t_train.shape)
    np.testing.assert_array_equal(blend(km, t_train, 1.0), km)
    np.testing.assert_array_equal(blend(km, t_train, 0.0), t_train)
    with pytest.raises(ValueError, match="weight"):
        blend(km, t_train, 1.5)
    with pytest.raises(ValueError, match="strength"):
        profiles_toward(np.zeros(3, int), rep_loss[:3], K, np.zeros((rep_loss.shape[1], K)), -1.0)
