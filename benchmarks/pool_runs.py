"""Paired differences pooled over several `uniroute eval` runs of one dataset:
`python -m benchmarks.pool_runs RUN.json [RUN.json ...]`.

Runs with different `--seed`s draw independent trials, so their trials can be pooled: each run's
JSON holds, per pair of routers, the mean difference in area, its 95% Student-t interval and the
number of trials, from which each run's spread of per-trial differences is recovered. The pooled
interval counts the spread within runs and between their means, so runs that disagree widen it.
Prints a table (and writes JSON with --json) of every pair the runs share, e.g. to check a
ship rule on all the trials a dataset has, not on the one run that happened to pass.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from scipy.stats import t


def pooled(runs: list[tuple[int, float, float, float]]) -> tuple[int, float, float, float]:
    """(trials, mean, low, high) of the per-trial differences of all `runs`, each given as
    (trials, mean, low, high) with a two-sided 95% Student-t interval."""
    n_all = sum(n for n, *_ in runs)
    mean = sum(n * m for n, m, _, _ in runs) / n_all
    squares = 0.0
    for n, m, lo, hi in runs:
        sd = (hi - lo) / 2 / t.ppf(0.975, n - 1) * math.sqrt(n) if n > 1 else 0.0
        squares += (n - 1) * sd ** 2 + n * (m - mean) ** 2
    half = t.ppf(0.975, n_all - 1) * math.sqrt(squares / (n_all - 1)) / math.sqrt(n_all)
    return n_all, mean, mean - half, mean + half


def pool_files(paths: list[str]) -> dict:
    """Every pair the runs share, pooled; ValueError for runs of different datasets."""
    results = [json.loads(Path(p).read_text()) for p in paths]
    datasets = {r["dataset"] for r in results}
    if len(datasets) != 1:
        raise ValueError(f"the runs are of different datasets: {sorted(datasets)}")
    seeds = [r["config"]["seed"] for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two runs share a seed, so their trials repeat: seeds {seeds}")
    pairs = [k for k in results[0]["paired"] if all(k in r["paired"] for r in results)]
    out = {}
    for pair in pairs:
        n, mean, lo, hi = pooled([(r["trials"], r["paired"][pair]["area_diff"], *r["paired"][pair]["ci"])
                                  for r in results])
        out[pair] = {"trials": n, "area_diff": mean, "ci": [lo, hi],
                     "per_run": [r["paired"][pair]["area_diff"] for r in results]}
    return {"dataset": datasets.pop(), "seeds": seeds, "pairs": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="`uniroute eval --json` files of one dataset, each with its own seed")
    p.add_argument("--json", dest="json_out", help="write the pooled pairs as JSON to FILE")
    args = p.parse_args(argv)
    try:
        result = pool_files(args.runs)
    except (OSError, KeyError, ValueError) as exc:
        p.error(str(exc))
    print(f"{result['dataset']}: seeds {result['seeds']}")
    for pair, d in result["pairs"].items():
        per_run = ", ".join(f"{x:+.4f}" for x in d["per_run"])
        print(f"  {pair:<48} {d['area_diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]  "
              f"{d['trials']} trials (runs: {per_run})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
