"""What the benchmarks that compare this tree's gateway with other source trees' gateways
(`cpu_per_request`, `instructions`) share: their common options, the trees they compare, and the
run from the parsed options to the published result."""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import report
from benchmarks.gateway import UsageError, resolve_state
from benchmarks.services import DEFAULT_CACHE_DIR, ROOT

Measure = Callable[[argparse.Namespace, dict[str, Path], Path, Path], dict]


def comparison_arguments(p: argparse.ArgumentParser, against_help: str) -> None:
    """The options every tree-comparing benchmark has."""
    p.add_argument("--embedder", default="fast", choices=["accurate", "fast"])
    p.add_argument("--clients", type=int, default=10, help="concurrent clients (default %(default)s)")
    p.add_argument("--delay-ms", type=float, default=5.0, help="the stub's delay per answer (default %(default)s)")
    p.add_argument("--against", metavar="DIR", action="append", default=[], help=against_help)
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help="the gateway's embedding cache (representative set only; default %(default)s)")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON; '-' prints one object on stdout")


def source_trees(against: Sequence[str]) -> dict[str, Path]:
    """This source tree as "this" and each of `against` by its folder's name; ValueError for a
    folder that is no uniroute tree."""
    trees = {"this": ROOT}
    for folder in against:
        root = Path(folder).resolve()
        if not (root / "app" / "cli" / "main.py").is_file():
            raise ValueError(f"--against {folder}: not a uniroute source tree")
        trees[root.name] = root
    return trees


def compare(name: str, p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None,
        measure: Measure, text: Callable[[dict], str]) -> int:
    """Measure the trees of `args` in a scratch folder and publish the result as benchmark
    `name`; the exit status (2 when no shipped state fits `--embedder`)."""
    try:
        trees = source_trees(args.against)
    except ValueError as exc:
        p.error(str(exc))
    try:
        state_dir = resolve_state(args.embedder, None)
    except UsageError as exc:
        print(f"benchmarks.{name}: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix=f"uniroute-{name}-") as tmp:
        result = measure(args, trees, state_dir, Path(tmp))
    report.publish(result, name, argv, args.json, text, None)
    return 0
