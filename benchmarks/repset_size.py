"""Closure as a function of the representative set's size: `python -m benchmarks.repset_size`.

For each size and each way of choosing the representative prompts (at random, or where the
training LLMs disagree most), runs the `uniroute eval` protocol (router_core.evaluation with
`validation_size`; the learned map is left out to keep the runs short) and records each
router's closure: the share of the zero router -> oracle gap in area it captures. The test
prompts of a trial are the same for every size and selection, so the points are paired.
Writes the numbers as JSON and one PNG with a line per (router, selection).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from router_core.datasets import RoutingDataset
from router_core.evaluation import VALIDATION_SELECTIONS, EvalConfig, evaluate

PLOTTED = ("knn", "uniroute_kmeans", "transfer", "transfer_irt")


def data_arguments(p: argparse.ArgumentParser) -> None:
    """The dataset options `uniroute eval` has, for the studies built on its protocol."""
    p.add_argument("--data", required=True)
    p.add_argument("--format", default=None)
    p.add_argument("--model-costs", default=None)
    p.add_argument("--embedder", default="fast")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--max-prompts", type=int, default=None, help="random subsample of the prompts (seed 0, as eval)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "uniroute" / "embeddings"))
    p.add_argument("--name", default=None, help="dataset name for the output (default: the data's own)")


def load_data(args: argparse.Namespace) -> RoutingDataset:
    """The priced dataset, subsampled as `uniroute eval --max-prompts`."""
    from router_core.datasets import load_dataset, read_model_costs

    data = load_dataset(args.data, args.format).priced(read_model_costs(args.model_costs) if args.model_costs else None)
    if args.max_prompts and args.max_prompts < len(data.prompts):
        data = data.subset(np.sort(np.random.default_rng(0).choice(len(data.prompts), args.max_prompts, replace=False)))
    return data


def load_embedded(args: argparse.Namespace, data: RoutingDataset | None = None,
                  ) -> tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(name, prompts, embeddings, scores, costs) of the dataset (`load_data`'s, unless given)."""
    from router_core.embedding import embed_for_routing, load_embedder

    data = load_data(args) if data is None else data
    prompts = list(data.prompts)
    emb = embed_for_routing(load_embedder(args.embedder, args.cache_dir), prompts)
    return args.name or data.name or Path(args.data).name, prompts, emb, data.scores, data.costs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(p)
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400, 800])
    p.add_argument("--selections", nargs="+", choices=VALIDATION_SELECTIONS, default=list(VALIDATION_SELECTIONS),
                   help="ways of choosing the representative prompts to run (default: all)")
    p.add_argument("--seed", type=int, default=0,
                   help="the trials' seed: another value draws other splits, e.g. to confirm a finding on fresh data")
    p.add_argument("--json", dest="json_out", required=True)
    p.add_argument("--plot", required=True)
    args = p.parse_args(argv)

    name, _, emb, scores, costs = load_embedded(args)
    base = EvalConfig(trials=args.trials, seed=args.seed, learned_map=None)
    rows = []
    for selection in args.selections:
        for size in args.sizes:
            started = time.perf_counter()
            report = evaluate(emb, scores, costs, replace(base, validation_size=size, validation_selection=selection))
            rows.append({"selection": selection, "size": size,
                         "seconds_per_trial": round((time.perf_counter() - started) / args.trials, 1),
                         "methods": {m: {k: s[k] for k in ("area", "closure", "closure_ci")} for m, s in report.summary.items()},
                         "paired": report.paired})
            shown = ", ".join(f"{m} {rows[-1]['methods'][m]['closure']:+.3f}" for m in PLOTTED)
            print(f"{selection:>12} {size:>5}: closure {shown}", file=sys.stderr, flush=True)
    result = {"dataset": name, "n_prompts": int(scores.shape[0]),
              "trials": args.trials, "seed": args.seed, "embedder": args.embedder, "rows": rows}
    Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, args.plot)
    return 0


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, method in enumerate(PLOTTED):
        for selection, style in zip(VALIDATION_SELECTIONS, ("-", "--")):
            pts = [(r["size"], r["methods"][method]["closure"]) for r in result["rows"] if r["selection"] == selection]
            if not pts:
                continue
            ax.plot(*zip(*pts), style, marker="o", color=f"C{i}", label=f"{method}, {selection}")
    ax.set_xscale("log")
    sizes = sorted({r["size"] for r in result["rows"]})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("representative prompts")
    ax.set_ylabel("closure (share of zero router -> oracle gap)")
    ax.set_title(f"{result['dataset']}: closure vs representative set, {result['trials']} trials")
    ax.axhline(0, color="grey", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
