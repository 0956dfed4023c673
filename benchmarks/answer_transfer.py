"""Transfer through answer similarity: `python -m benchmarks.answer_transfer`.

The transfer routers (router_core/transfer.py) describe a new LLM h by its 0/1 or rating labels
on the representative prompts: with 28 of them (arena_bench_v1) those few numbers are noisy. The
contract lets the profiling job keep more than labels: h's answers' TEXT on the representative
prompts. Hundreds of tokens per prompt may say which training LLMs h resembles (family,
version, verbosity). This study routes the test LLMs of `uniroute eval`'s protocol, on the very
same seeded splits (`router_core.evaluation.evaluate` with this study's routers added after
its own, so every figure of theirs is unchanged and every difference is paired), with:

- `answer_transfer`: gamma(x, h) = sum_j w_hj lhat_j(x) (+ a per-LLM level), lhat_j the training
  LLM j's losses averaged over the k training prompts nearest x (the transfer routers' features),
  w_h = softmax(z_h / tau), z_h the standardised similarity of h to each training LLM j on the
  representative prompts: the mean cosine of their answers to the same prompt ("text", each
  prompt's mean training-LLM answer removed first, so that what is compared is how they answer,
  not what the prompt is about), minus the mean gap of their answers' log lengths ("length"), or
  both summed ("text+length"). `centred` adds h's mean representative residual (its level from
  its own labels, as the zero router has it); without it h's level is its neighbours'.
- `answer_prior_ridge`: the identity-link transfer router on every training LLM's lhat, its ridge
  pulling h's weights toward those answer-similarity weights instead of toward zero: the labels
  and the answers combined (alpha -> infinity is the centred `answer_transfer`, alpha -> 0 the
  label regression alone).

k, the descriptor, tau, `centred` and alpha are chosen per trial on the TRAINING LLMs only, as
`uniroute eval` chooses the transfer routers' settings: two folds of the training prompts, each
training LLM playing the new LLM in turn, compared with the other training LLMs only (answers
and lhat), its profile from its own representative labels; the largest summed hold-out area
wins. A test LLM's labels and answers are read on the representative prompts only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from app.cli.eval import format_table
from benchmarks.repset_size import data_arguments, load_data, load_embedded
from router_core import transfer
from router_core.datasets import (
    RoutingDataset,
    detect_format,
    jsonl_records,
    load_routerbench_responses,
)
from router_core.embedding import Embedder, load_embedder
from router_core.evaluation import (
    EvalConfig,
    TrialSplit,
    _hold_out_area,
    _two_folds,
    evaluate,
)
from router_core.neighbours import knn_gamma
from router_core.policy import normalise_costs

ROUTERS = ("answer_transfer", "answer_prior_ridge")
BASELINES = ("zero_router", "knn", "uniroute_kmeans", "transfer", "transfer_irt", "kmeans_transfer_blend")
PAIRS = tuple((a, b) for a in ROUTERS for b in BASELINES) + (("answer_prior_ridge", "answer_transfer"),)
DESCRIPTORS = ("text", "length", "text+length")
# Softmax temperatures on standardised similarities; infinity is the plain mean of the training LLMs.
TAUS = (0.25, 0.5, 1.0, 2.0, float("inf"))


@dataclass(frozen=True)
class AnswerFeatures:
    """Every LLM's recorded answer to every prompt, as these routers read them."""

    emb: np.ndarray  # (n, M, d) float32 unit-norm embedding of each answer, 0 where none
    answered: np.ndarray  # (n, M) bool
    log_length: np.ndarray  # (n, M) log(1 + characters), 0 where no answer

    @classmethod
    def embed(cls, embedder: Embedder, answers: list[list[str | None]]) -> AnswerFeatures:
        """Embed the texts of `answers` (n prompts x M LLMs, None = no answer) with `embedder`,
        which reads an answer's head (a static model: its first 512 word pieces)."""
        answered = np.array([[a is not None for a in row] for row in answers], dtype=bool)
        texts = [a for row in answers for a in row if a is not None]
        vecs = embedder.encode(texts)
        emb = np.zeros((*answered.shape, vecs.shape[1]), dtype=np.float32)
        emb[answered] = vecs
        lengths = np.zeros(answered.shape)
        lengths[answered] = [np.log1p(len(t)) for t in texts]
        return cls(emb, answered, lengths)


def recorded_answers(data: RoutingDataset, path: str, fmt: str | None) -> list[list[str | None]]:
    """Each LLM's recorded answer to each prompt of `data` (n x M, None where it has none):
    RouterBench's `<model>|model_response` columns, or for a JSONL dataset the files
    `answers/<model>.jsonl` ({"question_id": prompt id, "answer"}) beside it."""
    if (fmt or detect_format(path)) == "routerbench":
        by_model = load_routerbench_responses(path)
        return [[by_model.get(m, {}).get(p) for m in data.models] for p in data.prompts]
    folder = Path(path).parent / "answers"
    by_model = {}
    for model in data.models:
        file = folder / f"{model}.jsonl"
        if not file.is_file():
            raise SystemExit(f"error: no recorded answers for {model}: {file} does not exist")
        by_model[model] = {str(r["question_id"]): str(r["answer"])
                           for _, r in jsonl_records(file.read_text(), file, ValueError)}
    return [[by_model[m].get(i) for m in data.models] for i in data.ids]


# ---------------------------------------------------------------- the routers


def similarities(feats: AnswerFeatures, rows: np.ndarray, new: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """(len(new), len(ref)) similarity of each new LLM to each reference LLM per descriptor, over
    the prompts `rows` both answered (0 where none): "text" the mean cosine of their answers once
    each prompt's mean reference answer is removed, "length" minus the mean gap of log lengths."""
    emb, has = feats.emb[rows], feats.answered[rows]
    ref_has = has[:, ref, None]
    mean = (emb[:, ref] * ref_has).sum(axis=1) / np.maximum(ref_has.sum(axis=1), 1)  # (n, d)
    a, b = _unit(emb[:, new] - mean[:, None]), _unit(emb[:, ref] - mean[:, None])
    both = has[:, new, None] & has[:, None, ref]  # (n, N, R)
    count = np.maximum(both.sum(axis=0), 1)
    cos = np.einsum("pnd,prd->pnr", a, b)
    length = feats.log_length[rows]
    gap = np.abs(length[:, new, None] - length[:, None, ref])
    text, size = (cos * both).sum(axis=0) / count, -(gap * both).sum(axis=0) / count
    return {"text": text, "length": size, "text+length": _standardised(text) + _standardised(size)}


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _standardised(sim: np.ndarray) -> np.ndarray:
    """Each row centred and scaled to unit spread (a row without spread: zeros), so that one
    temperature grid fits every descriptor and embedder."""
    spread = sim.std(axis=1, keepdims=True)
    return (sim - sim.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def similarity_weights(sim: np.ndarray, tau: float) -> np.ndarray:
    """softmax over each row's standardised similarities / tau: (N, R), rows summing to 1."""
    z = _standardised(sim) / tau if np.isfinite(tau) else np.zeros_like(sim)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def prior_gamma(g_query: np.ndarray, g_val: np.ndarray, val_loss: np.ndarray, weights: np.ndarray,
                centred: bool) -> np.ndarray:
    """`answer_transfer`: (n_query, N) = clip(g_query @ weights.T (+ each new LLM's mean residual
    on its answered representative prompts when `centred`), 0, 1). g_* (n, R) the reference
    LLMs' lhat, val_loss (n_val, N), weights (N, R)."""
    level = np.nanmean(val_loss - g_val @ weights.T, axis=0) if centred else 0.0
    return np.clip(g_query @ weights.T + level, 0.0, 1.0)


def ridge_gamma(g_query: np.ndarray, g_val: np.ndarray, val_loss: np.ndarray, weights: np.ndarray,
                alpha: float) -> np.ndarray:
    """`answer_prior_ridge`: a ridge regression of each new LLM's representative losses on the
    reference LLMs' lhat, its penalty alpha * ||w - weights_h||^2: transfer.py's identity-link
    fit of the residual after the prior's prediction, the prior added back."""
    prof = transfer.profiles_from_features(g_val, val_loss - g_val @ weights.T, alpha, "identity")
    return transfer.gamma_from_features(g_query, replace(prof, weights=prof.weights + weights))


def _gammas(g_query: np.ndarray, g_val: np.ndarray, val_loss: np.ndarray, sims: dict[str, np.ndarray],
            alphas: tuple[float, ...]) -> dict[tuple, np.ndarray]:
    """Every setting's gamma (n_query, N) but k, keyed (router, descriptor, tau, centred | alpha)."""
    out = {}
    for descriptor in DESCRIPTORS:
        for tau in TAUS:
            w = similarity_weights(sims[descriptor], tau)
            for centred in (False, True):
                out[("answer_transfer", descriptor, tau, centred)] = prior_gamma(g_query, g_val, val_loss, w, centred)
            for alpha in alphas:
                out[("answer_prior_ridge", descriptor, tau, alpha)] = ridge_gamma(g_query, g_val, val_loss, w, alpha)
    return out


def choose(emb: np.ndarray, loss: np.ndarray, score: np.ndarray, spend: np.ndarray, feats: AnswerFeatures,
           split: TrialSplit, cfg: EvalConfig, rng: np.random.Generator) -> dict[str, int | float | str | bool]:
    """Both routers' settings from the training LLMs only (see the module docstring)."""
    train_m, val_p = split.train_models, split.val_prompts
    _, folds = _two_folds(split.train_prompts, loss, train_m, rng)
    val_loss = loss[np.ix_(val_p, train_m)]
    route_cost = normalise_costs(np.nanmean(spend[np.ix_(val_p, train_m)], axis=0))
    m = train_m.size
    if m < 2:  # a training LLM playing the new LLM needs another to resemble
        raise ValueError(f"the answer-similarity routers need at least 2 training LLMs, the split has {m}")
    others = [np.delete(np.arange(m), j) for j in range(m)]
    # Each training LLM against the others, on the representative prompts: no fold or k in it.
    sims = [similarities(feats, val_p, train_m[[j]], train_m[o]) for j, o in enumerate(others)]
    totals: Counter = Counter()
    for fit, hold in folds:
        area = _hold_out_area(route_cost, score, spend, hold, train_m, cfg.n_lambdas)
        for k in cfg.transfer_k_grid:
            g_hold = knn_gamma(emb[hold], emb[fit], loss[np.ix_(fit, train_m)], k)
            g_val = knn_gamma(emb[val_p], emb[fit], loss[np.ix_(fit, train_m)], k)
            as_new: dict[tuple, np.ndarray] = {}
            for j, o in enumerate(others):
                for key, g in _gammas(g_hold[:, o], g_val[:, o], val_loss[:, [j]], sims[j],
                                      cfg.transfer_alpha_grid).items():
                    as_new.setdefault(key, np.empty((hold.size, m)))[:, j] = g[:, 0]
            for key, gamma in as_new.items():
                totals[(*key, k)] += area(gamma)
    chosen: dict[str, int | float | str | bool] = {}
    for name, last in zip(ROUTERS, ("centred", "alpha"), strict=True):
        scored = {key[1:]: v for key, v in totals.items() if key[0] == name}
        descriptor, tau, setting, k = max(scored, key=scored.get)
        chosen.update({f"{name}.k": k, f"{name}.descriptor": descriptor, f"{name}.tau": tau, f"{name}.{last}": setting})
    return chosen


def answer_routers(emb: np.ndarray, scores: np.ndarray, costs: np.ndarray, feats: AnswerFeatures, cfg: EvalConfig,
                   split: TrialSplit, rng: np.random.Generator,
                   ) -> tuple[dict[str, np.ndarray], dict[str, int | float | str | bool]]:
    """The two routers' gamma of the test LLMs on the test prompts, and their settings: the
    `extra` routers of `evaluate`. Reads the test LLMs' labels and answers on the
    representative prompts only."""
    loss = 1.0 - scores
    chosen = choose(emb, loss, scores, costs, feats, split, cfg, rng)
    tr_m, val_p = split.train_models, split.val_prompts
    fit_loss = loss[np.ix_(split.train_prompts, tr_m)]
    val_loss = loss[np.ix_(val_p, split.test_models)]
    sims = similarities(feats, val_p, split.test_models, tr_m)
    gammas = {}
    for name in ROUTERS:
        k, descriptor, tau = int(chosen[f"{name}.k"]), str(chosen[f"{name}.descriptor"]), float(chosen[f"{name}.tau"])
        g_query, g_val = (knn_gamma(emb[rows], emb[split.train_prompts], fit_loss, k)
                          for rows in (split.test_prompts, val_p))
        w = similarity_weights(sims[descriptor], tau)
        gammas[name] = (prior_gamma(g_query, g_val, val_loss, w, bool(chosen[f"{name}.centred"]))
                        if name == "answer_transfer" else
                        ridge_gamma(g_query, g_val, val_loss, w, float(chosen[f"{name}.alpha"])))
    return gammas, chosen


# ---------------------------------------------------------------- the study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(p)
    p.set_defaults(trials=20)
    p.add_argument("--seed", type=int, default=0, help="the trials' seed (`uniroute eval`'s default: 0)")
    p.add_argument("--json", dest="json_out", required=True, help="write the result as JSON to FILE, or '-' for stdout")
    args = p.parse_args(argv)
    started, cpu = time.perf_counter(), time.process_time()
    data = load_data(args)
    name, _, emb, scores, costs = load_embedded(args, data)
    answers = recorded_answers(data, args.data, args.format)
    feats = AnswerFeatures.embed(load_embedder(args.embedder, args.cache_dir), answers)
    print(f"{int(feats.answered.sum())} of {feats.answered.size} answers embedded", file=sys.stderr, flush=True)
    # The learned map is left out, as in the size study; no other router draws differently without it.
    cfg = EvalConfig(trials=args.trials, seed=args.seed, learned_map=None)
    trials_started, trials_cpu = time.perf_counter(), time.process_time()
    report = evaluate(emb, scores, costs, cfg, lambda i: print(f"trial {i}/{cfg.trials}", file=sys.stderr, flush=True),
                      extra=partial(answer_routers, emb, scores, costs, feats, cfg), extra_pairs=PAIRS)
    result = {
        "dataset": name, "n_prompts": int(scores.shape[0]), "n_models": int(scores.shape[1]), "trials": cfg.trials,
        "methods": report.summary, "paired": report.paired, "settings": report.settings,
        "config": {"embedder": args.embedder, "seed": cfg.seed, "max_prompts": args.max_prompts,
                   "test_models_fraction": cfg.test_models_fraction},
        "seconds_per_trial": round((time.perf_counter() - trials_started) / cfg.trials, 2),
        "cpu_seconds_per_trial": round((time.process_time() - trials_cpu) / cfg.trials, 2),
        "elapsed_s": round(time.perf_counter() - started, 1), "cpu_s": round(time.process_time() - cpu, 1),
    }
    print(format_table(result), file=sys.stderr if args.json_out == "-" else sys.stdout)
    if args.json_out == "-":
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
