"""`uniroute models add|list|show|rm`: the admin API from the shell, for ops.

Talks to a running gateway (`--url`, default http://127.0.0.1:8000) with the admin key
(`--admin-key` or UNIROUTE_ADMIN_KEY). `add` follows the profiling job with a progress bar.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tqdm import tqdm

from app.cli import AdminError, admin_call, one_line_errors


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="register, list, show and remove models through the admin API")
    p.add_argument("--url", default=os.environ.get("UNIROUTE_URL", "http://127.0.0.1:8000"))
    p.add_argument("--admin-key", default=os.environ.get("UNIROUTE_ADMIN_KEY"))
    verbs = p.add_subparsers(dest="verb", required=True)

    add = verbs.add_parser("add", help="register a model and follow its profiling job")
    add.add_argument("name")
    add.add_argument("--base-url", required=True, help="OpenAI-style base URL, e.g. http://host:8000/v1")
    add.add_argument("--upstream-model", help="the model name the upstream expects (default: name)")
    add.add_argument("--api-key-env", help="NAME of the environment variable holding the upstream key")
    add.add_argument("--input-per-mtok", type=float)
    add.add_argument("--output-per-mtok", type=float)
    add.add_argument("--per-request", type=float)
    add.add_argument("--scores", help="JSON file {prompt_id: score}: profile from it, calling nothing")
    add.add_argument("--no-wait", action="store_true", help="return once the job has started")
    add.set_defaults(func=cmd_add)

    verbs.add_parser("list", help="list registered models").set_defaults(func=cmd_list)
    show = verbs.add_parser("show", help="one model's record and profile")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)
    rm = verbs.add_parser("rm", help="remove a model")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_rm)


def call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> dict:
    """One admin API call with the command's --url and --admin-key."""
    return admin_call(args.url, args.admin_key, method, path, body)


def follow(args: argparse.Namespace, job_id: str) -> dict:
    """Poll a job until it ends, showing its progress."""
    job = call(args, "GET", f"/jobs/{job_id}")
    with tqdm(total=job["total"], desc=f"profiling {job['model']}", unit="prompt", file=sys.stderr) as bar:
        while True:
            bar.n = job["done"]
            bar.set_postfix(errors=job["errors"], spend=f"{job['spend']:.4g}",
                            eta=f"{job['eta_s']:.0f}s" if job.get("eta_s") is not None else "?")
            bar.refresh()
            if job["state"] != "running":
                return job
            time.sleep(0.5)
            job = call(args, "GET", f"/jobs/{job_id}")


# Admin API errors are reported as one line, exit status 1.
run_safely = one_line_errors("models", AdminError, 1)


@run_safely
def cmd_add(args: argparse.Namespace) -> int:
    cost = {k: v for k, v in (("input_per_mtok", args.input_per_mtok), ("output_per_mtok", args.output_per_mtok),
                              ("per_request", args.per_request)) if v is not None}
    body: dict = {"name": args.name, "base_url": args.base_url, "cost": cost}
    if args.upstream_model:
        body["upstream_model"] = args.upstream_model
    if args.api_key_env:
        body["api_key_env"] = args.api_key_env
    if args.scores:
        with open(args.scores) as f:
            body["scores"] = json.load(f)
    started = call(args, "POST", "/models", body)
    if started["job_id"] is None or args.no_wait:
        print(json.dumps(started))
        return 0
    job = follow(args, started["job_id"])
    print(json.dumps(job))
    return 0 if job["state"] == "done" else 1


@run_safely
def cmd_list(args: argparse.Namespace) -> int:
    rows = call(args, "GET", "/models")["data"]
    print(f"{'name':40} {'state':10} {'enabled':7} {'accuracy':>8}  cost")
    for m in rows:
        acc = f"{m['accuracy']:.3f}" if m.get("accuracy") is not None else "-"
        cost = ", ".join(f"{k}={v:g}" for k, v in m["cost"].items() if v)
        print(f"{m['name']:40} {m['state']:10} {str(m['enabled']):7} {acc:>8}  {cost}")
    return 0


@run_safely
def cmd_show(args: argparse.Namespace) -> int:
    print(json.dumps(call(args, "GET", f"/models/{args.name}"), indent=2))
    return 0


@run_safely
def cmd_rm(args: argparse.Namespace) -> int:
    print(json.dumps(call(args, "DELETE", f"/models/{args.name}")))
    return 0
