"""How much of the zero router -> oracle gap can prompt embeddings explain at all?
`python -m benchmarks.dense_ceiling`.

A diagnostic that breaks the UniRoute contract on purpose: on the same seeded splits as
`uniroute eval`, it routes the TEST LLMs with their own labels on every non-test prompt (the
training and the representative prompts, about 7 times the representative set), through K-NN,
K-means profiles, a ridge probe and a one-hidden-layer network on the embedding (the last to
see whether a probe that is not linear finds more). No router that knows a new LLM only from
its representative answers should do better than these by more than noise, so their closure is
a practical ceiling for embedding-based routing on the dataset.

`--lexical` adds the same ridge probe on a bag of words (hashed word uni- and bigrams, tf-idf)
alone and beside the embedding, to see whether another representation of the prompt raises the
ceiling; `--labels-on-x` adds a probe that no router can be: the ridge probe on the TRAINING
LLMs' labels on the routed prompt itself, a bound on what knowing the prompt's difficulty for
other LLMs would be worth. The JSON keeps each method's per-trial areas, so that any two
probes can be compared trial by trial.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.repset_size import data_arguments, load_embedded
from router_core.clustering import assign, fit_kmeans
from router_core.evaluation import (
    EvalConfig,
    TrialSplit,
    area_under,
    closure,
    closure_ci,
    deferral_curve,
    draw_split,
    mean_ci,
)
from router_core.learned_map import one_torch_thread
from router_core.neighbours import knn_gamma
from router_core.policy import normalise_costs
from router_core.profiles import cluster_profiles


def dense_gammas(emb: np.ndarray, loss: np.ndarray, dense: np.ndarray, query: np.ndarray) -> dict[str, np.ndarray]:
    """gamma on `query` prompts from the losses (n, M) of the routed LLMs on `dense` prompts."""
    out = {}
    for k in (40, 160):
        out[f"knn_dense k={k}"] = knn_gamma(emb[query], emb[dense], loss[dense], k)
    for n_clusters in (3, 10, 40):
        centroids = fit_kmeans(emb[dense], n_clusters)
        psi, _ = cluster_profiles(assign(centroids, emb[dense])[0], loss[dense], n_clusters, 4.0)
        out[f"kmeans_dense K={n_clusters}"] = psi[:, assign(centroids, emb[query])[0]].T
    for alpha in (10.0, 100.0):
        out[f"ridge_dense alpha={alpha:g}"] = ridge_probe(emb[dense], loss[dense], emb[query], alpha)
    out["mlp_dense hidden=64"] = mlp_probe(emb[dense], loss[dense], emb[query])
    return out


def ridge_probe(x: np.ndarray, loss: np.ndarray, query: np.ndarray, alpha: float) -> np.ndarray:
    """Each routed LLM's loss on `query`, from a ridge regression (intercept penalised like the
    weights; a missing label filled with the mean) on the features `x` of the labelled prompts.
    Solved in the dual when there are more features than prompts: the same fit, a smaller system."""
    xa, qa = np.c_[x, np.ones(len(x))], np.c_[query, np.ones(len(query))]
    y = np.nan_to_num(loss, nan=float(np.nanmean(loss)))
    if xa.shape[1] <= xa.shape[0]:
        predicted = qa @ np.linalg.solve(xa.T @ xa + alpha * np.eye(xa.shape[1]), xa.T @ y)
    else:
        predicted = (qa @ xa.T) @ np.linalg.solve(xa @ xa.T + alpha * np.eye(xa.shape[0]), y)
    return np.clip(predicted, 0.0, 1.0)


def lexical_features(prompts: list[str], dims: int = 4096) -> np.ndarray:
    """A bag of words per prompt: word and punctuation uni- and bigrams hashed into `dims`
    columns, sublinear term frequency times inverse document frequency, rows of unit length.
    Hashing keeps it a plain array; at 4,096 columns collisions cost a probe little."""
    rows = np.zeros((len(prompts), dims))
    for i, text in enumerate(prompts):
        words = re.findall(r"\w+|[^\w\s]", text.lower())
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        if grams:
            cols, counts = np.unique([zlib.crc32(g.encode()) % dims for g in grams], return_counts=True)
            rows[i, cols] = 1.0 + np.log(counts)
    rows *= np.log((1 + len(prompts)) / (1 + (rows > 0).sum(axis=0))) + 1.0
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def mlp_probe(x: np.ndarray, loss: np.ndarray, query: np.ndarray, hidden: int = 64, epochs: int = 60,
              seed: int = 0) -> np.ndarray:
    """Each routed LLM's loss on `query`, from a network with one hidden layer (ReLU, dropout,
    weight decay) fitted to its losses on `x` by cross-entropy; a missing label weighs nothing."""
    with one_torch_thread() as torch:
        torch.manual_seed(seed)
        xs = torch.from_numpy(x.astype(np.float32))
        ys = torch.from_numpy(np.nan_to_num(loss).astype(np.float32))
        seen = torch.from_numpy(~np.isnan(loss)).float()
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                  torch.nn.Linear(hidden, loss.shape[1]))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-3)
        for _ in range(epochs):
            for batch in torch.randperm(len(xs)).split(128):
                each = torch.nn.functional.binary_cross_entropy_with_logits(net(xs[batch]), ys[batch], reduction="none")
                opt.zero_grad()
                ((each * seen[batch]).sum() / seen[batch].sum().clamp(min=1.0)).backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            return torch.sigmoid(net(torch.from_numpy(query.astype(np.float32)))).numpy().astype(np.float64)


@dataclass(frozen=True)
class Trial:
    """One trial's split and what its deferral curves need: the routed (test) LLMs' losses on
    every prompt, their costs as the rule sees them, and the test prompts' realised scores and spend."""

    split: TrialSplit
    loss: np.ndarray
    route_cost: np.ndarray
    q_score: np.ndarray
    q_spend: np.ndarray
    c_max: float

    def area(self, gamma: np.ndarray, cfg: EvalConfig) -> float:
        """The area under the deferral curve of `gamma` on the test prompts."""
        curve = deferral_curve(gamma, self.route_cost, self.q_score, self.q_spend, self.c_max, cfg.n_lambdas)
        return area_under(curve)

    def baselines(self) -> dict[str, np.ndarray]:
        """gamma of the zero router (the representative-set mean loss) and of the oracle."""
        val = self.split.val_prompts
        return {"zero_router": np.broadcast_to(np.nanmean(self.loss[val], axis=0), self.q_score.shape),
                "oracle": 1.0 - self.q_score}


def trials(scores: np.ndarray, costs: np.ndarray, cfg: EvalConfig) -> Iterator[Trial]:
    """The trials of `uniroute eval` under `cfg` (the same seeds, so the same splits)."""
    master = np.random.default_rng(cfg.seed)
    for _ in range(cfg.trials):
        split = draw_split(scores, cfg, np.random.default_rng(master.integers(1 << 63)))
        te, q = split.test_models, split.test_prompts
        q_spend = costs[np.ix_(q, te)]
        yield Trial(split, 1.0 - scores[:, te],
                    normalise_costs(np.nanmean(costs[np.ix_(split.val_prompts, te)], axis=0)),
                    scores[np.ix_(q, te)], q_spend, q_spend.mean(axis=0).max() or 1.0)


def summary(name: str, areas: dict[str, list[float]]) -> dict:
    """Each method's mean area, closure with its interval, and paired difference to the zero
    router, from per-trial areas (which the result keeps); printed a line each."""
    zero, oracle = np.array(areas["zero_router"]), np.array(areas["oracle"])
    result = {"dataset": name, "trials": len(zero), "methods": {}}
    for method, values in areas.items():
        m, lo, hi = mean_ci(np.subtract(values, zero))
        ci = closure_ci(np.array(values), zero, oracle)
        result["methods"][method] = {"area": float(np.mean(values)),
                                     "closure": closure(np.array(values), zero, oracle),
                                     "closure_ci": ci, "minus_zero_router": [m, lo, hi], "trial_areas": values}
        shown = "" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        print(f"{method:<34} area {np.mean(values):.4f}  closure {result['methods'][method]['closure']:+.3f}{shown}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(p)
    p.add_argument("--lexical", action="store_true",
                   help="add ridge probes on a bag of words, alone and with the embedding")
    p.add_argument("--labels-on-x", action="store_true",
                   help="add the ridge probe on the training LLMs' labels on the routed prompt (no router can be it)")
    p.add_argument("--json", dest="json_out", required=True)
    args = p.parse_args(argv)
    name, prompts, emb, scores, costs = load_embedded(args)
    words = lexical_features(prompts) if args.lexical else None
    cfg = EvalConfig(trials=args.trials)
    areas: dict[str, list[float]] = {}
    for t, trial in enumerate(trials(scores, costs, cfg)):
        split, loss, q = trial.split, trial.loss, trial.split.test_prompts
        dense = np.r_[split.train_prompts, split.val_prompts]
        gammas = {**trial.baselines(), **dense_gammas(emb, loss, dense, q)}
        if words is not None:
            both = np.c_[words, emb]
            gammas["ridge_lexical alpha=10"] = ridge_probe(words[dense], loss[dense], words[q], 10.0)
            gammas["ridge_lexical+embedding alpha=10"] = ridge_probe(both[dense], loss[dense], both[q], 10.0)
        if args.labels_on_x:
            others = np.setdiff1d(np.arange(scores.shape[1]), split.test_models)
            labels = 1.0 - scores[:, others]
            labels = np.where(np.isnan(labels), np.nanmean(labels, axis=0), labels)
            gammas["train_llm_labels_on_x alpha=10"] = ridge_probe(labels[dense], loss[dense], labels[q], 10.0)
        for method, gamma in gammas.items():
            areas.setdefault(method, []).append(trial.area(gamma, cfg))
        print(f"trial {t + 1}/{cfg.trials}", file=sys.stderr, flush=True)
    Path(args.json_out).write_text(json.dumps(summary(name, areas), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
