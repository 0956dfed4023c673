"""Transfer router: predict a new LLM's per-prompt loss through the training LLMs' dense labels.

The training LLMs are labelled on every training prompt; a new LLM only on the representative
set. The transfer router uses the former to describe prompts and the latter to describe the new
LLM, and never refits anything prompt-side for a new LLM.

Prompt side (fitted once, on the training LLMs and training prompts only: `fit_basis`):
    g(x)  = the training LLMs' losses averaged over the k training prompts nearest x (M_tr,)
    f(x)  = (g(x) - centre) @ basis                      (r,)
where `basis` holds the top r principal directions of the training LLMs' loss matrix: r = 1 is
close to a per-prompt difficulty, r = M_tr keeps every training LLM as its own feature.

LLM side (per new LLM h, from its representative-set losses only: `fit_profiles`): a ridge
regression of h's losses on f over the representative prompts,
    link "identity":  gamma(x, h) = clip(a_h + f(x) . w_h, 0, 1)
    link "logit":     gamma(x, h) = 1 - sigmoid(b_h + f(x) . w_h)      (fitted by Newton steps)
with the penalty alpha * ||w_h||^2 pulling h toward its mean (the zero router), and a_h / b_h
unpenalised. With r = M_tr and the identity link, w_h is "how h's results relate to each
training LLM's"; with r = 1 and the logit link it is a one-dimensional item-response model
(ability b_h, discrimination w_h on the difficulty axis); in between is a low-rank prior.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router_core.neighbours import knn_gamma

LINKS = ("identity", "logit")
_NEWTON_STEPS = 25
_EPS = 1e-4


@dataclass(frozen=True)
class TransferBasis:
    """The prompt side: reference prompts with the training LLMs' losses, and the projection."""

    ref_emb: np.ndarray  # (n, d) float32 unit-norm training prompts
    ref_loss: np.ndarray  # (n, M_tr) training LLMs' losses (NaN = unlabelled)
    k: int  # neighbours averaged
    centre: np.ndarray  # (M_tr,) mean training loss per training LLM
    basis: np.ndarray  # (M_tr, r) orthonormal principal directions

    @property
    def rank(self) -> int:
        """Number of prompt features r."""
        return int(self.basis.shape[1])


@dataclass(frozen=True)
class TransferProfiles:
    """The LLM side: per new LLM h, intercept (M,), weights (M, r) and the link."""

    intercept: np.ndarray  # a_h (identity) or b_h (logit)
    weights: np.ndarray  # w_h
    link: str


def fit_basis(train_emb: np.ndarray, train_loss: np.ndarray, k: int, rank: int) -> TransferBasis:
    """Prompt features from training prompts `train_emb` (n, d) and the training LLMs' losses
    `train_loss` (n, M_tr) in [0, 1]; `rank` is capped at M_tr."""
    emb = np.ascontiguousarray(train_emb, dtype=np.float32)
    loss = np.asarray(train_loss, dtype=np.float64)
    if emb.ndim != 2 or loss.ndim != 2 or emb.shape[0] != loss.shape[0]:
        raise ValueError(f"train_emb (n, d) and train_loss (n, M) must share n, got {emb.shape} and {loss.shape}")
    if k < 1 or rank < 1:
        raise ValueError(f"k and rank must be >= 1, got {k} and {rank}")
    if np.isnan(loss).all(axis=0).any():
        raise ValueError("every training LLM needs at least one labelled training prompt")
    centre, directions = principal_directions(loss)
    return TransferBasis(emb, loss, int(k), centre, directions[:, :rank].copy())


def principal_directions(loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means (M,) and all principal directions (M, min(n, M)) of a loss matrix (n, M),
    strongest first; an unlabelled (NaN) cell counts as its LLM's mean."""
    centre = np.nanmean(loss, axis=0)
    _, _, vt = np.linalg.svd(np.where(np.isnan(loss), 0.0, loss - centre), full_matrices=False)
    return centre, vt.T


def prompt_features(basis: TransferBasis, emb: np.ndarray) -> np.ndarray:
    """f(x) for each row of `emb` (n, d): (n, r)."""
    g = knn_gamma(np.asarray(emb, dtype=np.float32), basis.ref_emb, basis.ref_loss, basis.k)
    return (g - basis.centre) @ basis.basis


def fit_profiles(
    basis: TransferBasis, rep_emb: np.ndarray, rep_loss: np.ndarray, alpha: float, link: str = "identity"
) -> TransferProfiles:
    """Each new LLM's numbers from its losses `rep_loss` (n, M) on the representative prompts
    `rep_emb` (n, d) only (NaN = not answered, skipped). `alpha` >= 0 is the ridge weight."""
    return profiles_from_features(prompt_features(basis, rep_emb), rep_loss, alpha, link)


def profiles_from_features(feats: np.ndarray, rep_loss: np.ndarray, alpha: float, link: str) -> TransferProfiles:
    """`fit_profiles` on precomputed representative-set features `feats` (n, r)."""
    loss = np.asarray(rep_loss, dtype=np.float64)
    if loss.ndim != 2 or loss.shape[0] != feats.shape[0]:
        raise ValueError(f"rep_loss must be (n, M) with n = {feats.shape[0]}, got {loss.shape}")
    if link not in LINKS:
        raise ValueError(f"unknown link {link!r}; expected one of {LINKS}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    obs = ~np.isnan(loss)
    if (obs.sum(axis=0) == 0).any():
        raise ValueError("every model needs at least one labelled representative prompt")
    x = np.concatenate([np.ones((feats.shape[0], 1)), feats], axis=1)  # (n, 1 + r)
    w_obs = obs.astype(np.float64)
    y = np.where(obs, loss, 0.0)
    # Penalise the weights, not the intercept; a tiny ridge on the intercept keeps it solvable.
    pen = np.diag(np.r_[1e-9, np.full(feats.shape[1], float(alpha) + 1e-9)])
    if link == "identity":
        gram = np.einsum("nm,ni,nj->mij", w_obs, x, x) + pen
        rhs = np.einsum("nm,ni->mi", y, x)
        coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    else:
        coef = _logistic(x, 1.0 - y, w_obs, pen)
    return TransferProfiles(coef[:, 0].copy(), coef[:, 1:].copy(), link)


def _logistic(x: np.ndarray, target: np.ndarray, w_obs: np.ndarray, pen: np.ndarray) -> np.ndarray:
    """Ridge logistic regression of soft targets (n, M) on x (n, p), one fit per column: (M, p)."""
    mean = np.clip((target * w_obs).sum(0) / w_obs.sum(0), _EPS, 1 - _EPS)
    coef = np.zeros((target.shape[1], x.shape[1]))
    coef[:, 0] = np.log(mean / (1 - mean))  # start at the zero router
    for _ in range(_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(x @ coef.T)))  # (n, M)
        grad = np.einsum("nm,ni->mi", w_obs * (p - target), x) + coef @ pen
        hess = np.einsum("nm,ni,nj->mij", w_obs * p * (1 - p), x, x) + pen
        coef = coef - np.linalg.solve(hess, grad[..., None])[..., 0]
    return coef


def transfer_gamma(basis: TransferBasis, profiles: TransferProfiles, emb: np.ndarray) -> np.ndarray:
    """gamma(x, h) for a batch of prompts `emb` (n, d) and the profiled LLMs: (n, M) in [0, 1]."""
    return gamma_from_features(prompt_features(basis, emb), profiles)


def gamma_from_features(feats: np.ndarray, profiles: TransferProfiles) -> np.ndarray:
    """`transfer_gamma` on precomputed query features `feats` (n, r)."""
    z = profiles.intercept[None, :] + feats @ profiles.weights.T
    if profiles.link == "identity":
        return np.clip(z, 0.0, 1.0)
    return 1.0 / (1.0 + np.exp(z))  # 1 - sigmoid(z)
