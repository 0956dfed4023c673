"""The `uniroute` subcommands, one module each (see app/cli.py)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

Command = Callable[[argparse.Namespace], int]


def one_line_errors(command: str, error: type[Exception], status: int,
                    label: str = "") -> Callable[[Command], Command]:
    """A decorator: `error` raised by the command is printed as one line on stderr,
    "uniroute <command>: <label><message>", and the command exits with `status`, not a traceback."""

    def decorate(func: Command) -> Command:
        def run(args: argparse.Namespace) -> int:
            try:
                return func(args)
            except error as exc:
                print(f"uniroute {command}: {label}{exc}", file=sys.stderr)
                return status

        return run

    return decorate
