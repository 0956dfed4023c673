"""`uniroute dataset convert`: read a routing dataset (RouterBench CSV, RouterDC JSON or
canonical JSONL) and write it as canonical JSONL with costs, saying what it holds on stderr."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from router_core.datasets import (
    FORMATS,
    DatasetError,
    load_dataset,
    read_model_costs,
    write_jsonl,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="routing datasets: convert to canonical JSONL")
    actions = p.add_subparsers(dest="dataset_command", required=True)
    c = actions.add_parser("convert", help="write a dataset as canonical JSONL (one prompt a line)")
    c.add_argument("--data", required=True, help="a RouterBench CSV or directory of them, a RouterDC JSON "
                                                 "or directory of them, or a canonical JSONL file")
    c.add_argument("--format", choices=FORMATS, default=None, help="the input format (default: from the path)")
    c.add_argument("--model-costs", metavar="FILE", default=None,
                   help="JSON or YAML {model: cost per request}; replaces per-prompt costs of the models it names. "
                        "Required when the data has no costs (RouterDC)")
    c.add_argument("--out", required=True, metavar="FILE.jsonl", help="where to write the canonical JSONL")
    c.set_defaults(func=convert)


def convert(args: argparse.Namespace) -> int:
    """Run `dataset convert`; exit 2 on bad input (including data without any costs)."""
    try:
        table = read_model_costs(args.model_costs) if args.model_costs else None
        ds = load_dataset(args.data, args.format).priced(table)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(ds, out)
    except DatasetError as exc:
        print(f"uniroute dataset convert: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"uniroute dataset convert: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    tasks = ", ".join(f"{t or '(none)'} {n}" for t, n in Counter(ds.tasks).most_common())
    labelled = float(np.mean(~np.isnan(ds.scores)))
    print(f"wrote {out}: {len(ds)} prompts, {len(ds.models)} models, {labelled:.1%} of (prompt, model) "
          f"pairs labelled; tasks: {tasks}", file=sys.stderr)
    return 0
