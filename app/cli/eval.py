"""`uniroute eval`: the paper's protocol on a labelled routing dataset (router_core.evaluation).

Embeds every prompt once (cached on disk), runs N seeded trials of unseen-LLM routing, prints a
table, and optionally writes the full result as one JSON object and a plot of the mean
deferral curves. Progress goes to stderr, so `--json -` leaves stdout pure JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.cli import (
    DEFAULT_CACHE,
    UsageError,
    one_line_errors,
    prepare_output,
    prepare_plot,
)
from router_core.datasets import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate routers on unseen LLMs (deferral curves, area, QNC)")
    p.add_argument("--data", required=True, help="dataset file or directory")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="dataset format (default: guessed from the path)")
    p.add_argument("--embedder", default="accurate", help="accurate | fast | sentence-transformers name or path")
    p.add_argument("--max-chars", type=int, default=None, help="characters of each prompt's tail to embed")
    p.add_argument("--model-costs", help="JSON/YAML {model: cost per request}; required if the data has no costs")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--test-models-fraction", type=float, default=1 / 3)
    p.add_argument("--clusters", type=int, default=None, help="fix K instead of choosing it on validation data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--costs-by-cluster", action="store_true",
                   help="price each test prompt as the gateway does with a state's output scale: the routers "
                        "but zero_router and oracle see each test LLM's mean cost times the prompt's "
                        "cluster's relative cost among the training LLMs (default: the mean alone)")
    p.add_argument("--max-prompts", type=int, default=None,
                   help="evaluate on a random subsample of this many prompts (fixed seed 0), to bound trial time")
    p.add_argument("--compare-states", nargs="+", metavar="STATE",
                   help="instead of the protocol: compare these router states (shipped names or folders, the "
                        "active one first) on the data's graded prompts, every model known to each")
    p.add_argument("--json", dest="json_out", help="write the result as JSON to FILE, or '-' for stdout")
    p.add_argument("--plot", help="draw the mean deferral curves to FILE.png")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return one_line_errors("eval", UsageError, 2, "error: ")(_run)(args)


def _check_args(args: argparse.Namespace) -> None:
    if args.trials < 1:
        raise UsageError("--trials must be at least 1")
    if not 0 < args.test_models_fraction < 1:
        raise UsageError("--test-models-fraction must be strictly between 0 and 1")
    if args.clusters is not None and args.clusters < 1:
        raise UsageError("--clusters must be at least 1")
    if args.max_prompts is not None and args.max_prompts < 10:
        raise UsageError("--max-prompts must be at least 10")
    if args.max_chars is not None and args.max_chars < 1:
        raise UsageError("--max-chars must be at least 1")
    if args.plot:
        prepare_plot(args.plot)
    if args.json_out and args.json_out != "-":
        prepare_output(args.json_out, "--json")


def _run(args: argparse.Namespace) -> int:
    from router_core.datasets import DatasetError, load_dataset, read_model_costs
    from router_core.embedding import embed_for_routing, load_embedder
    from router_core.evaluation import METHODS, EvalConfig, evaluate
    from router_core.text import DEFAULT_MAX_CHARS

    _check_args(args)
    started = time.perf_counter()
    try:
        data = load_dataset(args.data, args.format)
        data = data.priced(read_model_costs(args.model_costs) if args.model_costs else None)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    if args.compare_states:
        return _compare_states(args, data, started)
    if args.max_prompts is not None and args.max_prompts < len(data.prompts):
        data = data.subset(np.sort(np.random.default_rng(0).choice(len(data.prompts), args.max_prompts, replace=False)))
    n, m = data.scores.shape
    if m < 3:
        raise UsageError(f"need at least 3 models, the dataset has {m}")
    costs = data.costs

    max_chars = args.max_chars or DEFAULT_MAX_CHARS
    try:
        embedder = load_embedder(args.embedder, args.cache_dir)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load embedder {args.embedder!r}: {exc}") from None
    print(f"embedding {n} prompts with {args.embedder} (last {max_chars} chars)", file=sys.stderr)
    emb = embed_for_routing(embedder, list(data.prompts), max_chars)

    cfg = EvalConfig(trials=args.trials, test_models_fraction=args.test_models_fraction,
                     seed=args.seed, clusters=args.clusters, costs_by_cluster=args.costs_by_cluster)
    with tqdm(total=cfg.trials, desc="trials", unit="trial", file=sys.stderr) as bar:
        try:
            report = evaluate(emb, data.scores, costs, cfg, progress=lambda i: bar.update(1))
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    result = {
        "dataset": data.name or Path(args.data).name,
        "n_prompts": int(n),
        "n_models": int(m),
        "trials": cfg.trials,
        "methods": {name: report.summary[name] for name in METHODS},
        "paired": report.paired,
        "settings": report.settings,
        "config": {"embedder": args.embedder, "max_chars": max_chars, "seed": cfg.seed,
                   "test_models_fraction": cfg.test_models_fraction, "clusters": cfg.clusters,
                   "max_prompts": args.max_prompts,
                   "costs": "model-costs file" if args.model_costs else "dataset",
                   "costs_by_cluster": cfg.costs_by_cluster},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    table_out = sys.stderr if args.json_out == "-" else sys.stdout
    print(format_table(result), file=table_out)
    if args.plot:
        plot_curves(report, args.plot, result["dataset"])
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json_out == "-":
        sys.stdout.write(json.dumps(result) + "\n")
    elif args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def format_table(result: dict) -> str:
    """The methods' metrics and the paired differences as aligned text."""
    w = max(map(len, result["methods"]))  # the longest method name sets the first column
    wp = max(map(len, result["paired"]), default=0)
    lines = [f"{result['dataset']}: {result['n_prompts']} prompts, {result['n_models']} models, "
             f"{result['trials']} trials (mean, 95% CI)",
             f"{'method':<{w}} {'area':>7} {'95% CI':>17} {'closure (95% CI)':>22} {'- zero_router (95% CI)':>27} "
             f"{'area50':>7} {'QNC':>6} {'peak':>6}"]
    for name, s in result["methods"].items():
        qnc = "-" if s["qnc"] is None else f"{s['qnc']:.3f}"
        closure = "-" if s["closure"] is None else f"{100 * s['closure']:.1f}%"
        if s["closure_ci"] is not None:
            closure += f" [{100 * s['closure_ci'][0]:.1f}, {100 * s['closure_ci'][1]:.1f}]"
        d = result["paired"].get(f"{name} - zero_router")
        vs_zero = "" if d is None else f"{d['area_diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
        lines.append(f"{name:<{w}} {s['area']:7.4f} [{s['area_ci'][0]:.4f}, {s['area_ci'][1]:.4f}] "
                     f"{closure:>22} {vs_zero:>27} {s['area50']:7.4f} {qnc:>6} {s['peak']:6.3f}")
    lines.append("paired area differences")
    for name, d in result["paired"].items():
        lines.append(f"  {name:<{wp}} {d['area_diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
                     f"  wins {d['wins']}/{result['trials']}")
    return "\n".join(lines)


def plot_curves(report, path: str, title: str) -> None:
    """Each method's deferral curve averaged over trials on a common cost grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from router_core.evaluation import METHODS, mean_curve

    grid = np.linspace(0.0, 1.0, 201)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name in METHODS:
        y = mean_curve([t.curves[name] for t in report.trials], grid)
        ax.plot(grid, y, label=f"{name} ({report.summary[name]['area']:.3f})",
                linestyle="--" if name == "oracle" else "-")
    ax.set_xlabel("mean cost / cost of the dearest test LLM")
    ax.set_ylabel("mean score")
    ax.set_title(f"{title}: deferral curves, {len(report.trials)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _compare_states(args: argparse.Namespace, data, started: float) -> int:
    """`--compare-states`: what each state's clusters buy on the same graded prompts."""
    from router_core.embedding import CachedEmbedder, embed_for_routing
    from router_core.shipped import state_path
    from router_core.state import RouterState, state_embedder
    from router_core.state_compare import compare_states

    if len(args.compare_states) < 2:
        raise UsageError("--compare-states needs at least two states (the active one first)")
    weights, profiling, priors = {}, {}, {}
    for name in args.compare_states:
        directory = state_path(name)
        try:
            state = RouterState.load(directory)
            embedder = CachedEmbedder(state_embedder(state, directory), args.cache_dir)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        print(f"embedding {len(data.prompts)} prompts for state {name} (K={state.k}, {state.embedder})",
              file=sys.stderr)
        emb = embed_for_routing(embedder, list(data.prompts), state.max_chars)
        weights[name], profiling[name] = state.cluster_weights(emb), state.profile_weights(emb)
        priors[name] = state.prior
    with tqdm(total=args.trials, desc="trials", unit="trial", file=sys.stderr) as bar:
        try:
            result = compare_states(weights, priors, data.scores, data.costs, args.trials, args.seed,
                                    progress=lambda: bar.update(1), profile_weights=profiling)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    result = {"dataset": data.name or Path(args.data).name, **result,
              "elapsed_s": round(time.perf_counter() - started, 1)}
    lines = [f"{result['dataset']}: {result['n_prompts']} prompts graded for all {result['n_models']} models, "
             f"{result['trials']} trials (mean area, 95% CI)"]
    lines += [f"  {name:<40} {s['area']:.4f} [{s['area_ci'][0]:.4f}, {s['area_ci'][1]:.4f}]"
              for name, s in result["states"].items()]
    lines += [f"  {name:<40} {d['area_diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]  wins {d['wins']}"
              f"/{result['trials']}" for name, d in result["paired"].items()]
    print("\n".join(lines), file=sys.stderr if args.json_out == "-" else sys.stdout)
    if args.json_out == "-":
        sys.stdout.write(json.dumps(result) + "\n")
    elif args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0
