"""`uniroute calibrate`: what each cost weight λ buys, as a table (and a PNG with `--plot`).

The curve (router_core.calibration) comes from a running gateway (`--url`, admin key: its own
models, state and representative set), or is computed here from a dataset's models the way
`uniroute demo` registers them (app.demo.models: their recorded labels on the representative
prompts as profiles, priced from the recorded data; with the default data, the demo's 17
recorded LLMs) with the router state and representative set given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from app.cli import (
    DEFAULT_CACHE,
    AdminError,
    UsageError,
    admin_call,
    one_line_errors,
    prepare_plot,
)
from app.demo import ROUTERBENCH_DIR
from app.demo.arena import load_arena
from app.demo.models import add_demo_models
from app.runtime.config import load_settings
from router_core.datasets import FORMATS, load_dataset
from router_core.router import UniRouter

# Models listed per point in the table: the rest of the traffic is summed as "others".
_SHARES_SHOWN = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="the λ curve: expected score, cost and traffic shares per cost weight")
    p.add_argument("--url", help="a running gateway: print its own curve (needs the admin key)")
    p.add_argument("--admin-key", default=os.environ.get("UNIROUTE_ADMIN_KEY"))
    p.add_argument("--models", help="comma-separated subset of the models (with --url)")
    p.add_argument("--data", default=str(ROUTERBENCH_DIR),
                   help="dataset whose models to calibrate (default: the shipped RouterBench subset)")
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--state-dir", help="router state (default: the gateway's configured one)")
    p.add_argument("--repset", help="representative set, JSONL (default: the gateway's configured one)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache directory")
    p.add_argument("--plot", help="also draw the curve into this PNG file")
    p.add_argument("--json", action="store_true", help="print the curve as JSON instead of a table")
    p.set_defaults(func=run)


def fetch_curve(url: str, admin_key: str | None, models: str | None) -> dict:
    """A running gateway's curve from GET /admin/calibration."""
    return admin_call(url, admin_key, "GET", "/calibration", params={"models": models} if models else None,
                      timeout=60)


def local_curve(args: argparse.Namespace) -> dict:
    """The curve of a dataset's models under the given state and representative set."""
    try:  # a ConfigError is a ValueError: reported in one line as the dataset's errors are
        settings = load_settings()
        dataset = load_dataset(args.data, args.format)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if dataset.costs is None:
        raise UsageError(f"{args.data} has no costs: the curve needs the models' prices")
    try:
        router = UniRouter.load(args.state_dir or settings.state_dir, args.repset or settings.repset_path,
                                cache_dir=args.cache_dir, cost_scale=settings.cost_scale,
                                min_support=settings.min_support)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    # the default data is the demo's: RouterBench's LLMs and arena-bench-v1's
    arena = load_arena() if Path(args.data) == ROUTERBENCH_DIR else None
    if add_demo_models(router, dataset, arena) == 0:
        raise UsageError(f"{args.data} labels none of the representative prompts")
    curve = router.calibration()
    if curve is None:
        raise UsageError("no model could be profiled")
    return curve.to_dict()


def format_table(curve: dict) -> str:
    """One line per point: λ range, expected score (and its fraction of the best model's),
    expected cost per request, and the largest traffic shares."""
    best = curve["best_score"]
    lines = [f"best single model: {curve['best_model']} (expected score {best:.4f}); "
             f"measured on {curve['n_prompts']} representative prompts",
             f"{'cost_weight':>11} {'λ from':>9} {'λ to':>9} {'score':>7} {'of best':>7} {'cost/request':>12}  traffic"]
    for p in curve["points"]:
        shares = sorted(p["shares"].items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {share:.0%}" for name, share in shares[:_SHARES_SHOWN])
        rest = sum(share for _, share in shares[_SHARES_SHOWN:])
        if rest > 0:
            shown += f", others {rest:.0%}"
        upper = "inf" if p["upper"] is None else f"{p['upper']:.4g}"
        lines.append(f"{p['cost_weight']:>11.4g} {p['lower']:>9.4g} {upper:>9} {p['expected_score']:>7.4f} "
                     f"{p['expected_score'] / best:>7.1%} {p['expected_cost']:>12.6g}  {shown}")
    return "\n".join(lines)


def plot(curve: dict, path: str) -> None:
    """Expected score against expected cost per request (each point labelled with its λ), and
    the traffic share of each model along the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = curve["points"]
    cost = [p["expected_cost"] for p in points]
    score = [p["expected_score"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    left.plot(cost, score, marker="o", markersize=4, color="tab:blue")
    left.axhline(curve["best_score"], color="grey", linestyle="--", linewidth=1,
                 label=f"best single model ({curve['best_model']})")
    for p in points[:: max(1, len(points) // 8)]:
        left.annotate(f"λ={p['cost_weight']:.3g}", (p["expected_cost"], p["expected_score"]), fontsize=7,
                      textcoords="offset points", xytext=(4, -10))
    left.set_xscale("log")
    left.set_xlabel("expected cost per request")
    left.set_ylabel("expected score")
    left.set_title("what each cost weight buys")
    left.legend(loc="lower right", fontsize=8)
    models = [m for m in curve["models"] if any(p["shares"].get(m, 0) > 0 for p in points)]
    index = range(len(points))
    right.stackplot(index, [[p["shares"].get(m, 0.0) for p in points] for m in models], labels=models, step="post")
    right.set_xlabel("point (cost weight grows →)")
    right.set_ylabel("share of traffic")
    right.set_ylim(0, 1)
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    right.set_title("who answers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@one_line_errors("calibrate", AdminError, 1)
@one_line_errors("calibrate", UsageError, 2, "error: ")
def run(args: argparse.Namespace) -> int:
    # the local curve is of every model the data has: a subset asked for there was ignored
    if args.models and not args.url:
        raise UsageError("--models needs --url: without it the curve is of all the data's models")
    if args.plot:
        prepare_plot(args.plot)
    curve = fetch_curve(args.url, args.admin_key, args.models) if args.url else local_curve(args)
    print(json.dumps(curve, indent=2) if args.json else format_table(curve))
    if args.plot:
        plot(curve, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
