"""The `uniroute` command line: each subcommand lives in its own module under app/cli."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each module exposes register(subparsers); the parser it adds sets `func(args) -> int`.
COMMANDS = [
    "serve",
    "demo",
    "models",
    "replay_upstream",
    "dataset",
    "eval",
    "build_state",
    "calibrate",
    "repset",
    "state",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniroute", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"app.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`uniroute models list | head`): stop quietly, as a shell tool
        # does; stdout goes to /dev/null so the interpreter's own flush at exit cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what the shell reports for a tool the pipe stopped


if __name__ == "__main__":
    sys.exit(main())
