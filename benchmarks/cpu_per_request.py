"""The gateway's CPU time per routed request: `python -m benchmarks.cpu_per_request [--json -]`.

Starts the upstream stub and a gateway (`python -m app.cli.main serve`, its own process, the
shipped state of `--embedder`, three models on the stub), warms it up, then sends `--requests`
routed chat requests (model `uniroute`, a unique short prompt each, so every one is embedded)
from `--clients` clients, non-streamed and then streamed, `--repeats` times each. Per run, the
figure is the gateway process's CPU time (user + system, all its threads, read from the
per-process CPU clock) over the run, divided by the requests it answered. CPU time counts only
the gateway's own work, so it holds up better than latency or throughput on a machine shared
with other jobs (cache and frequency effects remain): the load average before and after each
mode is printed beside it.

`--against DIR` (repeatable) compares this tree's gateway with other source trees' (e.g. `git
worktree add /tmp/base main`), all up at once on the same stub, their runs alternating (A B C,
C B A, ...), so a change in the machine's load weighs on all alike: it prints each one's median
and this tree's ratio to each.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from benchmarks import report
from benchmarks.gateway import ROUTED_MODEL, stub_models
from benchmarks.loadgen import run, run_load
from benchmarks.services import (
    Service,
    cpu_seconds,
    log,
    start_gateway,
    start_stub,
    write_config,
)
from benchmarks.trees import compare, comparison_arguments
from benchmarks.workload import chat_request

MODES = {"non_stream": False, "stream": True}


def one_run(gateway: Service, stream: bool, first: int, requests: int, clients: int) -> tuple[float, dict[str, int]]:
    """CPU ms per request over `requests` requests numbered from `first`, and failures by label."""
    before = cpu_seconds(gateway.pid)
    result = run(run_load(gateway.url, lambda i: chat_request(ROUTED_MODEL, "short", first + i, stream),
                          concurrency=clients, max_requests=requests, max_seconds=600.0))
    spent = cpu_seconds(gateway.pid) - before
    return 1e3 * spent / len(result.outcomes), dict(result.errors())


def measure_mode(gateways: dict[str, Service], stream: bool, first: int, args: argparse.Namespace) -> dict:
    """Per gateway: CPU ms per request of `repeats` runs, alternating between the gateways."""
    runs: dict[str, list[float]] = {name: [] for name in gateways}
    errors: dict[str, int] = {}
    load = [os.getloadavg()[0]]
    order = list(gateways)
    for r in range(args.repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            ms, failed = one_run(gateways[name], stream, first, args.requests, args.clients)
            first += args.requests
            runs[name].append(ms)
            for label, n in failed.items():
                errors[label] = errors.get(label, 0) + n
            log(f"  {name} {'streamed' if stream else 'non-streamed'} run {r + 1}: {ms:.3f} ms CPU/request")
    load.append(os.getloadavg()[0])
    return {"cpu_ms_per_request": {name: statistics.median(v) for name, v in runs.items()}, "runs_ms": runs,
            "requests_per_run": args.requests, "errors": errors,
            "load_average_1m": {"before": load[0], "after": load[1]}}


def measure(args: argparse.Namespace, trees: dict[str, Path], state_dir: Path, workdir: Path) -> dict:
    """Both modes against one stub and the gateway(s)."""
    host = report.machine()
    env = dict(kv.split("=", 1) for kv in args.env)
    with start_stub(workdir, delay_ms=args.delay_ms) as stub, ExitStack() as stack:
        config = write_config(workdir, stub_models(stub.url))
        gateways: dict[str, Service] = {}
        for name, root in trees.items():
            log(f"starting the gateway of {root} ...")
            gateways[name] = stack.enter_context(start_gateway(
                workdir, config=config, state_dir=str(state_dir), cache_dir=args.cache_dir, env=env,
                name=f"gateway-{name}", root=root))
        modes: dict[str, dict] = {}
        first = 0
        for mode, stream in MODES.items():
            log(f"{mode}: warm-up, then {args.repeats} x {args.requests} requests at {args.clients} clients")
            for gateway in gateways.values():
                run(run_load(gateway.url, lambda i, first=first: chat_request(ROUTED_MODEL, "short", first + i, stream),
                             concurrency=args.clients, max_requests=args.warmup, max_seconds=600.0))
                first += args.warmup
            modes[mode] = measure_mode(gateways, stream, first, args)
            first += args.requests * args.repeats * len(gateways)
    return {"benchmark": "cpu_per_request", "embedder": args.embedder, "clients": args.clients,
            "delay_ms": args.delay_ms, "gateway_env": env, "trees": {k: str(v) for k, v in trees.items()},
            "modes": modes, "machine": host,
            "cpu_ms_per_request": {mode: m["cpu_ms_per_request"]["this"] for mode, m in modes.items()}}


def text(result: dict) -> str:
    """The result as a markdown table."""
    trees = list(result["trees"])
    headers = ["mode", *(f"{t} CPU ms/request (median)" for t in trees), *(f"this / {t}" for t in trees[1:])]
    headers += ["runs (ms)", "requests per run", "load average 1m", "errors"]
    rows = []
    for mode, m in result["modes"].items():
        medians = m["cpu_ms_per_request"]
        row = [mode, *(report.fmt(medians[t], 3) for t in trees),
               *(f"{medians['this'] / medians[t]:.2f}" for t in trees[1:])]
        runs = "; ".join(f"{t}: " + " / ".join(f"{v:.3f}" for v in m["runs_ms"][t]) for t in trees)
        load = m["load_average_1m"]
        rows.append(row + [runs, str(m["requests_per_run"]), f"{load['before']:.1f} -> {load['after']:.1f}",
                           str(sum(m["errors"].values()))])
    return report.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_per_request", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000, help="requests per run (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs per mode; the median is reported (default %(default)s)")
    p.add_argument("--warmup", type=int, default=300, help="requests before each mode's runs (default %(default)s)")
    p.add_argument("--env", action="append", default=[], metavar="UNIROUTE_X=V",
                   help="a setting for the gateway (repeatable)")
    comparison_arguments(p, "another source tree whose gateway to compare with (repeatable)")
    args = p.parse_args(argv)
    if min(args.requests, args.repeats, args.clients) < 1 or args.warmup < 0:
        p.error("--requests, --repeats and --clients must be >= 1, --warmup >= 0")
    if any("=" not in kv or not kv.startswith("UNIROUTE_") for kv in args.env):
        p.error("--env takes UNIROUTE_NAME=VALUE")
    return compare("cpu_per_request", p, args, argv, measure, text)


if __name__ == "__main__":
    sys.exit(main())
