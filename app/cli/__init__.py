"""The `uniroute` command line (app/cli/main.py) and what its subcommands share: one-line
errors, the embedding cache's default place, and the admin API client."""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

Command = Callable[[argparse.Namespace], int]

DEFAULT_CACHE = Path.home() / ".cache" / "uniroute" / "embeddings"


def gateway_options(command: argparse.ArgumentParser) -> None:
    """`--url` and `--admin-key` (UNIROUTE_URL, UNIROUTE_ADMIN_KEY) on a command whose verbs talk
    to a running gateway; `verbs_take_gateway_options` lets each verb take them after it too."""
    command.add_argument("--url", default=os.environ.get("UNIROUTE_URL", "http://127.0.0.1:8000"),
                         help="the gateway (default: UNIROUTE_URL, else http://127.0.0.1:8000)")
    command.add_argument("--admin-key", default=os.environ.get("UNIROUTE_ADMIN_KEY"),
                         help="the admin key (default: UNIROUTE_ADMIN_KEY)")


def verbs_take_gateway_options(verbs: argparse._SubParsersAction) -> None:
    """`uniroute models list --admin-key K` as well as `uniroute models --admin-key K list`: the
    verbs' own copies set nothing unless given (SUPPRESS), so the command's value stands."""
    for verb in verbs.choices.values():
        verb.add_argument("--url", default=argparse.SUPPRESS, help="the gateway (also before the verb)")
        verb.add_argument("--admin-key", default=argparse.SUPPRESS, help="the admin key (also before the verb)")


def finite_float(text: str) -> float:
    """An argparse `type` for a number option: "nan" and "inf" are refused as argparse refuses
    any other non-number (exit 2), since float() takes them and they would otherwise reach the
    admin API's JSON (a traceback in the encoder) or a written state (a NaN prior)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def port_number(text: str) -> int:
    """An argparse `type` for a TCP port: 1-65535 (a larger number was wrapped modulo 65536 by
    the socket layer, so a server said it listened on a port it did not, or bind() raised)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value}")
    return value


class UsageError(Exception):
    """A mistake in the command's input: reported in one line, exit status 2."""


def prepare_output(path: str, option: str) -> None:
    """Make the folder an output file (`--plot`, `--json`) goes into, as `dataset convert` does
    for its --out, before the command's work: a path that cannot be written is a UsageError
    then, not a traceback once an evaluation of many minutes has run."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create its folder: {exc.strerror or exc}") from None
    if Path(path).is_dir():
        raise UsageError(f"{option} {path}: is a folder, not a file")


def prepare_plot(path: str) -> None:
    """`prepare_output` for a `--plot` file, which must be a .png: matplotlib reads the format
    from the suffix (another is a traceback after the work; none writes FILE.png, not FILE)."""
    if not path.endswith(".png"):
        raise UsageError("--plot must name a .png file")
    prepare_output(path, "--plot")


class AdminError(Exception):
    """The admin API answered with an error, or could not be reached."""


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


def admin_call(url: str, admin_key: str | None, method: str, path: str, body: dict | None = None,
               params: dict | None = None, timeout: float = 30.0) -> dict:
    """One call to a running gateway's admin API (`path` under /admin); AdminError with the
    gateway's own message when it answers an error."""
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        r = httpx.request(method, url.rstrip("/") + "/admin" + path, json=body, params=params, headers=headers,
                          timeout=timeout)
    except httpx.TransportError as exc:
        raise AdminError(f"cannot reach the gateway at {url}: {exc}") from None
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text
        raise AdminError(f"HTTP {r.status_code}: {message}")
    return r.json()
