"""`uniroute state show|apply|commit|abandon`: the router state of a running gateway.

Talks to the gateway (`--url`, default http://127.0.0.1:8000) with the admin key (`--admin-key`
or UNIROUTE_ADMIN_KEY). `apply` starts a live switch to another state and representative set
(app/runtime/migration.py) and, unless `--no-wait`, follows it until it is committed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from app.cli import (
    AdminError,
    admin_call,
    finite_float,
    gateway_options,
    one_line_errors,
    verbs_take_gateway_options,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("state", help="show or switch a running gateway's router state")
    gateway_options(p)
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("show", help="the active state, its clusters and the pending migration").set_defaults(func=cmd_show)
    apply = verbs.add_parser("apply", help="switch to another state and representative set, live")
    apply.add_argument("--state-dir", required=True, help="state folder, as the gateway's machine sees it")
    apply.add_argument("--repset", required=True, help="representative set file, as the gateway's machine sees it")
    apply.add_argument("--spend-cap", type=finite_float, help="total spend for asking the models the new items")
    apply.add_argument("--manual", action="store_true", help="do not switch by itself once every model is ready")
    apply.add_argument("--no-wait", action="store_true", help="return once the migration has started")
    apply.set_defaults(func=cmd_apply)
    commit = verbs.add_parser("commit", help="switch to the pending state now")
    commit.add_argument("--force", action="store_true", help="even if some model is not ready")
    commit.set_defaults(func=cmd_commit)
    verbs.add_parser("abandon", help="abandon the pending migration").set_defaults(func=cmd_abandon)
    verbs_take_gateway_options(verbs)


def _print(doc: dict) -> int:
    print(json.dumps(doc, indent=2))
    return 0


@one_line_errors("state", AdminError, 1)
def cmd_show(args: argparse.Namespace) -> int:
    return _print(admin_call(args.url, args.admin_key, "GET", "/state"))


@one_line_errors("state", AdminError, 1)
def cmd_apply(args: argparse.Namespace) -> int:
    body = {"state_dir": args.state_dir, "repset_path": args.repset, "auto_commit": not args.manual}
    if args.spend_cap is not None:
        body["spend_cap"] = args.spend_cap
    pending = admin_call(args.url, args.admin_key, "POST", "/state", body)
    print(f"migration {pending['id']} started: state {pending['state_version']} (K={pending['k']}), "
          f"{pending['repset_items']} representative items", file=sys.stderr)
    if args.no_wait:
        return _print(pending)
    while True:
        time.sleep(1.0)
        view = admin_call(args.url, args.admin_key, "GET", "/state")
        current = view["pending"]
        if current is None or current["id"] != pending["id"]:
            if view["state"]["version"] == pending["state_version"]:
                print("switched", file=sys.stderr)
                return _print(view["state"])
            raise AdminError("the migration was abandoned")
        p = current["progress"]
        declined = f" ({p['declined']} declined)" if p.get("declined") else ""
        print(f"{current['status']}: {p['done']}/{p['total']} items graded{declined}, {p['ready_models']}/{p['models']} "
              f"models ready, spend {current['spend']:.4g}", file=sys.stderr)
        if current["status"] in ("ready", "stopped", "failed") and (args.manual or current["status"] != "ready"):
            print(f"not switched: {current.get('error') or 'commit it with `uniroute state commit`'}", file=sys.stderr)
            return _print(current) if current["status"] == "ready" else 1


@one_line_errors("state", AdminError, 1)
def cmd_commit(args: argparse.Namespace) -> int:
    return _print(admin_call(args.url, args.admin_key, "POST", "/state/pending/commit", {"force": args.force}))


@one_line_errors("state", AdminError, 1)
def cmd_abandon(args: argparse.Namespace) -> int:
    return _print(admin_call(args.url, args.admin_key, "DELETE", "/state/pending"))
