"""The gateway's CPU time per routed request: `python -m benchmarks.cpu_per_request [--json -]`.

Starts the upstream stub and a gateway (`python -m app.cli.main serve`, its own process, the
shipped state of `--embedder`, three models on the stub), warms it up, then sends `--requests`
routed chat requests (model `uniroute`, a unique short prompt each, so every one is embedded)
from `--clients` clients, non-streamed and then streamed, `--repeats` times each. Per run, the
figure is the gateway process's CPU time (user + system, all its threads: psutil) over the run,
divided by the requests it answered. CPU time counts only the gateway's own work, so it holds
up better than latency or throughput on a machine shared with other jobs (cache and frequency
effects remain): the load average before and after each mode is printed beside it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

from benchmarks import report
from benchmarks.gateway import ROUTED_MODEL, UsageError, resolve_state, stub_models
from benchmarks.loadgen import run, run_load
from benchmarks.services import DEFAULT_CACHE_DIR, Service, log, start_gateway, start_stub, write_config
from benchmarks.workload import chat_request

MODES = {"non_stream": False, "stream": True}


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system, every thread)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure_mode(gateway: Service, stream: bool, first: int, requests: int, clients: int,
                 repeats: int) -> dict:
    """CPU ms per request of `repeats` runs of `requests` requests (numbered from `first`)."""
    runs: list[float] = []
    errors: dict[str, int] = {}
    load = [os.getloadavg()[0]]
    for r in range(repeats):
        base = first + r * requests
        before = cpu_seconds(gateway.pid)
        result = run(run_load(gateway.url, lambda i, base=base: chat_request(ROUTED_MODEL, "short", base + i, stream),
                              concurrency=clients, max_requests=requests, max_seconds=600.0))
        spent = cpu_seconds(gateway.pid) - before
        for label, n in result.errors().items():
            errors[label] = errors.get(label, 0) + n
        runs.append(1e3 * spent / len(result.outcomes))
        log(f"  {'streamed' if stream else 'non-streamed'} run {r + 1}: {runs[-1]:.3f} ms CPU/request, "
            f"{result.rps:.0f} req/s")
    load.append(os.getloadavg()[0])
    return {"cpu_ms_per_request": statistics.median(runs), "runs_ms": runs, "requests_per_run": requests,
            "errors": errors, "load_average_1m": {"before": load[0], "after": load[1]}}


def measure(args: argparse.Namespace, state_dir: Path, workdir: Path) -> dict:
    """Both modes against one stub and one gateway."""
    host = report.machine()
    env = dict(kv.split("=", 1) for kv in args.env)
    with start_stub(workdir, delay_ms=args.delay_ms) as stub:
        config = write_config(workdir, stub_models(stub.url))
        log("starting the gateway ...")
        with start_gateway(workdir, config=config, state_dir=str(state_dir), cache_dir=args.cache_dir,
                           env=env) as gateway:
            modes: dict[str, dict] = {}
            first = 0
            for name, stream in MODES.items():
                log(f"{name}: warm-up, then {args.repeats} x {args.requests} requests at {args.clients} clients")
                run(run_load(gateway.url, lambda i, first=first: chat_request(ROUTED_MODEL, "short", first + i, stream),
                             concurrency=args.clients, max_requests=args.warmup, max_seconds=600.0))
                first += args.warmup
                modes[name] = measure_mode(gateway, stream, first, args.requests, args.clients, args.repeats)
                first += args.requests * args.repeats
    return {"benchmark": "cpu_per_request", "embedder": args.embedder, "clients": args.clients,
            "delay_ms": args.delay_ms, "gateway_env": env, "modes": modes, "machine": host,
            "cpu_ms_per_request": {name: m["cpu_ms_per_request"] for name, m in modes.items()}}


def text(result: dict) -> str:
    """The result as a markdown table."""
    rows = [[name, report.fmt(m["cpu_ms_per_request"], 3), " / ".join(f"{v:.3f}" for v in m["runs_ms"]),
             str(m["requests_per_run"]), f"{m['load_average_1m']['before']:.1f} -> {m['load_average_1m']['after']:.1f}",
             str(sum(m["errors"].values()))] for name, m in result["modes"].items()]
    return report.markdown_table(["mode", "CPU ms/request (median)", "runs", "requests per run",
                                  "load average 1m", "errors"], rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_per_request", description=__doc__.splitlines()[0])
    p.add_argument("--embedder", default="fast", choices=["accurate", "fast"])
    p.add_argument("--requests", type=int, default=2000, help="requests per run (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs per mode; the median is reported (default %(default)s)")
    p.add_argument("--warmup", type=int, default=300, help="requests before each mode's runs (default %(default)s)")
    p.add_argument("--clients", type=int, default=10, help="concurrent clients (default %(default)s)")
    p.add_argument("--delay-ms", type=float, default=5.0, help="the stub's delay per answer (default %(default)s)")
    p.add_argument("--env", action="append", default=[], metavar="UNIROUTE_X=V",
                   help="a setting for the gateway (repeatable)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help="the gateway's embedding cache (representative set only; default %(default)s)")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON; '-' prints one object on stdout")
    args = p.parse_args(argv)
    if min(args.requests, args.repeats, args.clients) < 1 or args.warmup < 0:
        p.error("--requests, --repeats and --clients must be >= 1, --warmup >= 0")
    if any("=" not in kv or not kv.startswith("UNIROUTE_") for kv in args.env):
        p.error("--env takes UNIROUTE_NAME=VALUE")
    try:
        state_dir = resolve_state(args.embedder, None)
    except UsageError as exc:
        print(f"benchmarks.cpu_per_request: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="uniroute-cpu-") as tmp:
        result = measure(args, state_dir, Path(tmp))
    report.publish(result, "cpu_per_request", argv, args.json, text, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
