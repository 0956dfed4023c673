"""Routed throughput by worker count: `python -m benchmarks.workers [--workers 1 2] [--clients 10] [--json -]`.

For each worker count, a fresh gateway (`uniroute serve --workers N`, embedder `fast`) in front
of the upstream stub (5 ms per answer, its own process), measured as `benchmarks.gateway`
measures a case: the same requests straight to the stub, then routed through the gateway (model
`uniroute`, short prompts, every prompt unique), at `--clients` concurrent clients. Figures:
routed requests/s and latency p50/p99, the overhead p50/p99 against the direct calls, the
gateway's CPU over all its processes (% of one core), and the throughput against one worker's.
The load generator, the stub and every worker share the machine's cores: on a machine with no
more cores than workers, the workers compete with the load generator.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks import report
from benchmarks.gateway import Plan, Runner, resolve_state, stub_models
from benchmarks.services import (
    DEFAULT_CACHE_DIR,
    log,
    start_gateway,
    start_stub,
    write_config,
)

SIZE = "short"


def measure(workers: tuple[int, ...], clients: int, seconds: float, workdir: Path, cache_dir: str) -> dict:
    """One case per worker count, each against a fresh gateway, one stub for all."""
    host = report.machine()
    state_dir = resolve_state("fast", None)
    plan = Plan(embedder="fast", concurrency=(clients,), sizes=(SIZE,), requests_per_client=30, min_requests=300,
                max_seconds=seconds, embed_seconds=0.0, embed_min_calls=0, delay_ms=5.0, stream=False, quick=False)
    cases = []
    with start_stub(workdir, delay_ms=plan.delay_ms) as stub:
        config = write_config(workdir, stub_models(stub.url))
        for n in workers:
            log(f"starting a gateway with {n} worker(s) ...")
            with start_gateway(workdir, config=config, state_dir=str(state_dir), cache_dir=cache_dir,
                               env={"UNIROUTE_WORKERS": str(n)}, name=f"gateway-{n}") as gateway:
                case = Runner(plan, stub, gateway).case(clients, SIZE)
            case["workers"] = n
            log(f"  {n} worker(s): {case['rps']:.0f} routed req/s, p50 {case['gateway']['latency_ms']['p50']:.1f} ms, "
                f"CPU {case['gateway_cpu_percent']:.0f}%, errors {case['gateway']['errors'] or 'none'}")
            cases.append(case)
    base = cases[0]["rps"]
    for case in cases:
        case["speedup"] = case["rps"] / base if base else None
    return {"benchmark": "workers", "clients": clients, "prompt": SIZE, "cases": cases, "machine": host,
            "settings": {"delay_ms": plan.delay_ms, "max_seconds_per_case": seconds, "state_dir": str(state_dir)}}


def table(result: dict) -> str:
    rows = [[str(c["workers"]), report.fmt(c["rps"], 0), report.fmt(c["speedup"], 2),
             report.fmt(c["gateway"]["latency_ms"]["p50"]), report.fmt(c["gateway"]["latency_ms"]["p99"]),
             report.fmt(c["overhead_ms"]["p50"]), report.fmt(c["overhead_ms"]["p99"]),
             report.fmt(c["direct_rps"], 0), report.fmt(c["gateway_cpu_percent"], 0),
             str(c["gateway"]["errors"] or "none")]
            for c in result["cases"]]
    return report.markdown_table(["workers", "routed req/s", "x one worker", "latency p50 ms", "p99 ms",
                                  "overhead p50 ms", "p99 ms", "direct req/s", "gateway CPU %", "errors"], rows)


def docs_section(result: dict) -> str:
    return (f"## Workers\n\n`{result['command']}`. {report.machine_line(result['machine'])}\n\n"
            f"Routed throughput at {result['clients']} clients, short prompts, embedder `fast`, against the "
            "upstream stub (5 ms); one fresh gateway per worker count; CPU is % of one core over all the "
            "gateway's processes. The load generator, the stub and the workers share the machine's cores.\n\n"
            f"{table(result)}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    p.add_argument("--clients", type=int, default=10, help="concurrent clients (default %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="time bound per phase (default %(default)s)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="the gateways' embedding cache")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON; '-' prints one object on stdout")
    p.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = p.parse_args(argv)
    if min(args.workers) < 1 or args.clients < 1:
        p.error("--workers and --clients must be >= 1")
    with tempfile.TemporaryDirectory(prefix="uniroute-bench-") as tmp:
        result = measure(tuple(args.workers), args.clients, args.seconds, Path(tmp), args.cache_dir)
    report.publish(result, "workers", argv, args.json, table, ("benchmarks.workers", docs_section)
                   if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
