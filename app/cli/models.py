"""`uniroute models add|list|show|rm|jobs|cancel|pause|resume|reprofile|enable|disable|answers`:
the admin API from the shell, for ops.

Talks to a running gateway (`--url`, default http://127.0.0.1:8000) with the admin key
(`--admin-key` or UNIROUTE_ADMIN_KEY). `add` and `reprofile` follow the profiling job with a
progress bar; Ctrl-C stops following, not the job, and says how to follow or cancel it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import quote

from tqdm import tqdm

from app.cli import (
    AdminError,
    UsageError,
    admin_call,
    finite_float,
    gateway_options,
    one_line_errors,
    verbs_take_gateway_options,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="register, list, show, remove, reprofile and audit models, follow their jobs")
    gateway_options(p)
    verbs = p.add_subparsers(dest="verb", required=True)

    add = verbs.add_parser("add", help="register a model and follow its profiling job")
    add.add_argument("name")
    upstream_options(add, required=True)
    add.add_argument("--scores", help="JSON file {prompt_id: score}: profile from it, calling nothing")
    job_options(add)
    add.set_defaults(func=cmd_add)

    change = verbs.add_parser("set", help="change where a model is reached (server, name, key variable) or "
                                          "its price; it keeps its profile")
    change.add_argument("name")
    upstream_options(change, required=False)
    change.add_argument("--no-api-key", action="store_true", help="send no key to its upstream")
    change.set_defaults(func=cmd_set)

    verbs.add_parser("list", help="list registered models").set_defaults(func=cmd_list)
    show = verbs.add_parser("show", help="one model's record and profile")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)
    rm = verbs.add_parser("rm", help="remove a model")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_rm)

    jobs = verbs.add_parser("jobs", help="list profiling jobs (of one model)")
    jobs.add_argument("name", nargs="?")
    jobs.add_argument("--state", choices=["running", "paused", "done", "failed", "cancelled"])
    jobs.set_defaults(func=cmd_jobs)
    for verb, what in (("cancel", "stop a running or paused job (the model keeps its earlier profile)"),
                       ("pause", "pause a running job until it is resumed"),
                       ("resume", "resume a paused job now")):
        p_job = verbs.add_parser(verb, help=what)
        p_job.add_argument("job_id")
        p_job.set_defaults(func=cmd_job_action, action=verb)
    again = verbs.add_parser("reprofile", help="profile a model again; it routes on its old profile meanwhile")
    again.add_argument("name")
    job_options(again)
    again.set_defaults(func=cmd_reprofile)
    for verb, enabled in (("enable", True), ("disable", False)):
        p_model = verbs.add_parser(verb, help=f"{verb} routing to a model")
        p_model.add_argument("name")
        p_model.set_defaults(func=cmd_enable, enabled=enabled)
    answers = verbs.add_parser("answers", help="a model's graded answers, to audit its profile")
    answers.add_argument("name")
    answers.add_argument("--filter", choices=["all", "wrong", "correct", "ungraded", "declined"], default="all")
    answers.add_argument("--cluster", type=int)
    answers.add_argument("--limit", type=int, default=20)
    answers.add_argument("--offset", type=int, default=0)
    answers.set_defaults(func=cmd_answers)
    verbs_take_gateway_options(verbs)


def read_scores(path: str) -> dict:
    """The {prompt_id: score} JSON file `--scores` names; UsageError when it cannot be read."""
    try:
        with open(path) as f:
            scores = json.load(f)
    except OSError as exc:
        raise UsageError(f"--scores {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"--scores {path}: not JSON: {exc}") from None
    if not isinstance(scores, dict):
        raise UsageError(f"--scores {path}: must be a JSON object {{prompt_id: score}}, not a {type(scores).__name__}")
    return scores


def upstream_options(parser: argparse.ArgumentParser, required: bool) -> None:
    """Where a model is reached and its price, as `add` (which needs --base-url) and `set` take them."""
    parser.add_argument("--base-url", required=required, help="OpenAI-style base URL, e.g. http://host:8000/v1")
    parser.add_argument("--upstream-model", help="the model name the upstream expects (default: name)")
    parser.add_argument("--api-key-env", help="NAME of the environment variable holding the upstream key")
    parser.add_argument("--input-per-mtok", type=finite_float)
    parser.add_argument("--output-per-mtok", type=finite_float)
    parser.add_argument("--per-request", type=finite_float)


def upstream_body(args: argparse.Namespace) -> dict:
    """The upstream options given on the command line, as the admin API takes them."""
    body = {name: getattr(args, name) for name in ("base_url", "upstream_model", "api_key_env")
            if getattr(args, name)}
    cost = {name: getattr(args, name) for name in ("input_per_mtok", "output_per_mtok", "per_request")
            if getattr(args, name) is not None}
    if cost:
        body["cost"] = cost
    return body


def job_options(parser: argparse.ArgumentParser) -> None:
    """The per-job options (the gateway's settings where left out) and --no-wait."""
    parser.add_argument("--limit", type=int, help="ask only this many representative prompts, drawn with --seed")
    parser.add_argument("--seed", type=int, help="the draw of --limit prompts (default 0)")
    parser.add_argument("--max-tokens", type=int, help="max_tokens sent with each prompt")
    parser.add_argument("--concurrency", type=int, help="prompts in flight")
    parser.add_argument("--spend-cap", type=finite_float, help="stop the job once it has spent this much")
    parser.add_argument("--no-wait", action="store_true", help="return once the job has started")


def job_body(args: argparse.Namespace) -> dict:
    """The job options given on the command line, as the admin API takes them."""
    names = ("limit", "seed", "max_tokens", "concurrency", "spend_cap")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def model_path(name: str, action: str = "") -> str:
    """The admin API path of a model (and one of its actions): a name may hold any printable
    character, and one holding `?`, `#` or `%` sent as it is named another model, so that
    `rm 'q?s'` removed the model `q`. Its slashes stay: the API takes them in the path."""
    return f"/models/{quote(name, safe='/')}{action}"


def call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> dict:
    """One admin API call with the command's --url and --admin-key."""
    return admin_call(args.url, args.admin_key, method, path, body)


def follow(args: argparse.Namespace, job_id: str) -> dict:
    """Poll a job until it stops running (ends or pauses), showing its progress."""
    job = call(args, "GET", f"/jobs/{job_id}")
    with tqdm(total=job["total"], desc=f"profiling {job['model']}", unit="prompt", file=sys.stderr) as bar:
        while True:
            # declined prompts are settled too: a bar of graded ones alone would stop short
            bar.n = job["done"] + job["declined"]
            bar.set_postfix(declined=job["declined"], errors=job["errors"], spend=f"{job['spend']:.4g}",
                            eta=f"{job['eta_s']:.0f}s" if job.get("eta_s") is not None else "?")
            bar.refresh()
            if job["state"] != "running":
                return job
            time.sleep(0.5)
            job = call(args, "GET", f"/jobs/{job_id}")


# Admin API errors are reported as one line, exit status 1.
run_safely = one_line_errors("models", AdminError, 1)


@one_line_errors("models", UsageError, 2, "error: ")
@run_safely
def cmd_add(args: argparse.Namespace) -> int:
    body: dict = {"name": args.name, "cost": {}, **upstream_body(args)}
    if args.scores:
        body["scores"] = read_scores(args.scores)
    if job_body(args):
        body["job"] = job_body(args)
    try:
        started = call(args, "POST", "/models", body)
    except KeyboardInterrupt:
        print(f"\nuniroute models: interrupted while registering; check with `uniroute models show {args.name}`.",
              file=sys.stderr)
        return 130
    return started_job(args, started)


def started_job(args: argparse.Namespace, started: dict) -> int:
    """Print the started job, or follow it to its end (exit 1 unless it is done)."""
    if started["job_id"] is None or args.no_wait:
        print(json.dumps(started))
        return 0
    try:
        job = follow(args, started["job_id"])
    except KeyboardInterrupt:
        job_id = started["job_id"]
        print(f"\nuniroute models: stopped following; job {job_id} goes on in the gateway. Follow it with "
              f"`uniroute models jobs {started['model']}`, cancel it with `uniroute models cancel {job_id}`.",
              file=sys.stderr)
        return 130
    print(json.dumps(job))
    if job.get("warning"):
        print(f"uniroute models: warning: {job['warning']}", file=sys.stderr)
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
    print(json.dumps(call(args, "GET", model_path(args.name)), indent=2))
    return 0


@run_safely
def cmd_rm(args: argparse.Namespace) -> int:
    return printed(call(args, "DELETE", model_path(args.name)))


@run_safely
def cmd_jobs(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("model", args.name), ("state", args.state)) if v}
    rows = admin_call(args.url, args.admin_key, "GET", "/jobs", params=params)["data"]
    print(f"{'job':16} {'model':32} {'state':9} {'done':>11} {'declined':>8} {'errors':>6} {'spend':>9}  reason")
    for j in rows:
        print(f"{j['id']:16} {j['model']:32} {j['state']:9} {j['done']:>5}/{j['total']:<5} {j['declined']:>8} "
              f"{j['errors']:>6} {j['spend']:>9.4g}  {j['error'] or ''}")
    return 0


@run_safely
def cmd_job_action(args: argparse.Namespace) -> int:
    return printed(call(args, "POST", f"/jobs/{args.job_id}/{args.action}"))


def printed(answer: dict) -> int:
    """Print an admin API answer as one JSON line; the command's exit status."""
    print(json.dumps(answer))
    return 0


@run_safely
def cmd_reprofile(args: argparse.Namespace) -> int:
    return started_job(args, call(args, "POST", model_path(args.name, "/reprofile"), job_body(args)))


@one_line_errors("models", UsageError, 2, "error: ")
@run_safely
def cmd_set(args: argparse.Namespace) -> int:
    body = upstream_body(args)
    if args.no_api_key:
        if args.api_key_env:
            raise UsageError("--no-api-key and --api-key-env contradict each other")
        body["api_key_env"] = None
    if not body:
        raise UsageError("nothing to change: give --base-url, --upstream-model, --api-key-env, --no-api-key or a price")
    if "cost" in body:
        # The API replaces a price whole; one price given here changes that one, not the others to 0.
        body["cost"] = {**call(args, "GET", model_path(args.name))["cost"], **body["cost"]}
    model = call(args, "PATCH", model_path(args.name), body)
    print(json.dumps({k: model[k] for k in ("name", "base_url", "upstream_model", "api_key_env", "cost", "state")}))
    return 0


@run_safely
def cmd_enable(args: argparse.Namespace) -> int:
    model = call(args, "PATCH", model_path(args.name), {"enabled": args.enabled})
    print(json.dumps({"name": model["name"], "state": model["state"], "enabled": model["enabled"],
                      "error": model["error"]}))
    return 0


@run_safely
def cmd_answers(args: argparse.Namespace) -> int:
    params = {"filter": args.filter, "limit": args.limit, "offset": args.offset}
    if args.cluster is not None:
        params["cluster"] = args.cluster
    print(json.dumps(admin_call(args.url, args.admin_key, "GET", model_path(args.name, "/answers"), params=params),
                     indent=2))
    return 0
