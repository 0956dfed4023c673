"""How long an answer each cluster's prompts draw, relative to the average prompt.

A model's expected cost is dominated by its answer on open-ended prompts: an essay request draws
a hundred times the tokens of a multiple-choice question (in the recorded answers of RouterBench
and arena-bench-v1), from every LLM alike. A new model is known
only by its representative answers, too few to learn its length per cluster, but which prompts
draw long answers is shared by the LLMs: the training LLMs' answers measure it once per cluster
(`cluster_scale`), the router state keeps it (`RouterState.output_scale`), and the gateway prices a
prompt's output as the model's mean output tokens times its cluster's scale (`ModelTable`).
docs/evaluation.md ("Pricing each prompt") measured what it is worth.
"""
from __future__ import annotations

import numpy as np

from router_core.clustering import assign
from router_core.state import RouterState

# Pseudo-prompts of the overall mean in each cluster's scale: a cluster with a handful of
# answered training prompts stays near 1 rather than trusting a few answers.
DEFAULT_SCALE_PRIOR = 4.0


def relative_to_models(values: np.ndarray) -> np.ndarray:
    """(n,) each prompt's value (a cost, an answer length) over each LLM's mean on the prompts,
    averaged over the LLMs of `values` (n, m) that have one (NaN = unknown); NaN for a prompt no
    LLM has a value on. An LLM whose every value is zero counts as 1 everywhere."""
    values = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(values)
    per_model = known.sum(axis=0)
    mean = np.divide(np.nansum(values, axis=0), per_model, out=np.zeros(values.shape[1]), where=per_model > 0)
    rel = np.divide(values, mean, out=np.where(known, 1.0, 0.0), where=known & (mean > 0))
    per_prompt = known.sum(axis=1)
    return np.divide(rel.sum(axis=1), per_prompt, out=np.full(len(values), np.nan), where=per_prompt > 0)


def cluster_scale(weights: np.ndarray, per_prompt: np.ndarray, prior: float = DEFAULT_SCALE_PRIOR) -> np.ndarray:
    """(K,) each cluster's mean of `per_prompt` (n,) (NaN = unknown, left out) under cluster
    weights (n, K), shrunk toward the overall mean with `prior` pseudo-prompts, over the overall
    mean: 1 is an average prompt. All ones when no prompt has a value."""
    weights = np.asarray(weights, dtype=np.float64)
    values = np.asarray(per_prompt, dtype=np.float64)
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    known = ~np.isnan(values)
    w = weights[known]
    v = values[known]
    overall = float(v.mean()) if v.size else 0.0
    if not overall > 0:
        return np.ones(weights.shape[1])
    mass = w.sum(axis=0)
    total = w.T @ v + prior * overall
    return np.divide(total, (mass + prior) * overall, out=np.ones(weights.shape[1]), where=mass + prior > 0)


def normalised_scale(scale: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`scale` (K,) divided by its mean over prompts of cluster weights (n, K): a model's mean
    output tokens is measured on those prompts (its representative answers), so the scale must
    average 1 over them for the model's expected output there to stay its measured mean."""
    weights = np.asarray(weights, dtype=np.float64)
    mass = weights.sum(axis=1)
    per_prompt = np.divide(weights @ scale, mass, out=np.ones(len(weights)), where=mass > 0)
    mean = float(per_prompt.mean()) if per_prompt.size else 1.0
    return scale / mean if mean > 0 else scale


def set_output_scale(state: RouterState, emb: np.ndarray, lengths: np.ndarray, measured_on: str) -> None:
    """Give `state` its `output_scale`: `cluster_scale` of its training prompts' (embeddings
    `emb`) answer `lengths` (n,) (NaN = no recorded answer) over their nearest centroids, with
    what it was measured on in its metadata."""
    weights = np.eye(state.k)[assign(state.centroids, emb)[0]]
    state.output_scale = cluster_scale(weights, lengths)
    state.metadata["output_scale"] = {"measured_on": measured_on, "answered_prompts": int(np.isfinite(lengths).sum()),
                                      "prior": DEFAULT_SCALE_PRIOR}


def mean_answer_lengths(prompts: list[str], answers: dict[str, list[str]]) -> np.ndarray:
    """(n,) mean length in characters of the recorded answers to each prompt (`answers`: prompt
    text -> the training LLMs' answers to it); NaN for a prompt with none."""
    return np.array([float(np.mean([len(a) for a in answers[p]])) if answers.get(p) else np.nan for p in prompts])
