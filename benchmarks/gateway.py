"""Gateway overhead and throughput: `python -m benchmarks.gateway [--embedder fast|accurate] [--json -]`.

In one run, side by side, the same requests go straight to an upstream stub (5 ms, answering at
once otherwise) and through the gateway in front of it (`python -m app.cli.main serve`, its own
process, three models registered on the stub, every request routed with model `uniroute`), at
1, 10 and 50 concurrent clients, for short (~30 tokens), medium (~250) and long (~2,000)
prompts. No two requests share a prompt, so every routed request is embedded (no cache hit).

Figures per case:
- latency p50/p95/p99 direct and through the gateway (request sent to last byte received);
- overhead p50/p95/p99 = gateway latency minus direct latency AT THE SAME PERCENTILE, as a
  client sees it: routing (embedding included), the extra loopback hop, the gateway's HTTP
  parsing and forwarding, and its queueing when clients outnumber what it serves. (A difference
  of percentiles, not a percentile of per-request differences: requests are not paired.)
- the gateway's own `uniroute_overhead_seconds` histogram over the case (from /metrics): time
  from the handler's start to the upstream's answer in hand, minus the upstream's time; it
  leaves out uvicorn's request parsing and the response's writing, and is interpolated inside
  its buckets (0.5 ms ... 1 s; beyond 1 s it is "off scale", null in the JSON);
- requests/s (successful, per wall second) direct and routed, and routed as a share of the
  embedder's standalone batch-64 throughput on the same prompts; the mean prompts per embedding
  call (`uniroute_embed_batch_size`: how much micro-batching happened);
- the gateway process's CPU (% of one core; 200% = both cores) and peak RSS (sampled).

The embedder's standalone throughput is measured first, in this process, with the gateway's
own embedder (the router state's) on the same kind of prompts: batch 1 (its single-prompt time)
and batch 64.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import prom, report
from benchmarks.loadgen import LoadResult, RequestSpec, run, run_load
from benchmarks.services import (
    DEFAULT_CACHE_DIR,
    ProcessWatcher,
    Service,
    StubModel,
    log,
    peak_rss_bytes,
    start_gateway,
    start_stub,
    write_config,
)
from benchmarks.workload import PROMPT_TOKENS, chat_request, make_prompt

CONCURRENCY = (1, 10, 50)
SIZES = ("short", "medium", "long")
HEADLINE = (50, "short")  # the case the JSON's top-level figures describe
QUICK_CONCURRENCY = (1, 50)
QUICK_SIZES = ("short",)
BATCHES = (1, 64)
ROUTED_MODEL = "uniroute"
DIRECT_MODEL = "stub-direct"
OVERHEAD_METRIC = "uniroute_overhead_seconds"
BATCH_METRIC = "uniroute_embed_batch_size"  # prompts per embedding call (micro-batching)
PCTS = ("p50", "p95", "p99")
# The shipped state's training prompts: what `build-state` is given to make a state like it.
BUILD_HINT = ("uniroute build-state --embedder fast --data app/demo/data/routerbench_zs/arc_challenge_train.csv "
              "--data app/demo/data/routerbench_zs/winograde_train.csv "
              "--data app/demo/data/routerbench_zs/mbpp_train.csv --clusters 10 --out DIR")


class UsageError(Exception):
    """A command line that cannot be run, with what to do instead."""


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    embedder: str
    concurrency: tuple[int, ...]
    sizes: tuple[str, ...]
    requests_per_client: int
    min_requests: int
    max_seconds: float
    embed_seconds: float
    embed_min_calls: int
    delay_ms: float
    stream: bool
    quick: bool

    def requests(self, concurrency: int) -> int:
        return max(self.min_requests, self.requests_per_client * concurrency)


def stub_models(stub_url: str) -> list[StubModel]:
    """Three models on the stub, cheap-and-weak to dear-and-strong, so decisions differ by prompt."""
    return [StubModel("stub-small", stub_url, 0.1, 0.55), StubModel("stub-medium", stub_url, 0.5, 0.7),
            StubModel("stub-large", stub_url, 2.0, 0.85)]


def resolve_state(embedder: str, state_dir: str | None) -> Path:
    """The router state directory to serve: the shipped state of `embedder` unless `state_dir` is
    given; UsageError if that is missing or was built with another embedder."""
    from router_core.shipped import SHIPPED_STATES
    from router_core.state import RouterState

    if state_dir is None:
        return SHIPPED_STATES[embedder]
    path = Path(state_dir).resolve()  # the gateway runs from the repository's root
    if not (path / "state.json").is_file():
        raise UsageError(f"no router state in {path}; build one with:\n  "
                         f"{BUILD_HINT.replace('fast', embedder, 1).replace('DIR', str(path))}")
    built_with = RouterState.load(path).embedder
    if built_with != embedder:
        raise UsageError(f"the router state in {path} was built with embedder {built_with!r}, "
                         f"not {embedder!r}")
    return path


def embedder_throughput(state_dir: Path, sizes: tuple[str, ...], min_seconds: float,
                        min_calls: int) -> dict[str, dict]:
    """Per prompt size: the gateway's embedder alone, batch 1 (prompts/s and per-call p50 ms)
    and batch 64 (prompts/s), through `embed_for_routing` like the gateway, on fresh prompts."""
    import torch

    from app.runtime.config import Settings
    from router_core.embedding import embed_for_routing
    from router_core.state import RouterState, state_embedder

    state = RouterState.load(state_dir)
    # As the gateway runs it (its default `embed_threads`), so both figures are comparable.
    torch.set_num_threads(Settings().embed_threads)
    embedder = state_embedder(state, state_dir)
    out: dict[str, dict] = {}
    index = 10_000_000  # prompts unlike any the load generator sends
    for size in sizes:
        figures: dict = {}
        for batch in BATCHES:
            embed_for_routing(embedder, [make_prompt(size, index + i) for i in range(batch)], state.max_chars)
            index += batch  # the call above warmed the model up; what follows is timed
            times: list[float] = []
            started = time.perf_counter()
            while time.perf_counter() - started < min_seconds or len(times) < min_calls:
                texts = [make_prompt(size, index + i) for i in range(batch)]
                index += batch
                t0 = time.perf_counter()
                embed_for_routing(embedder, texts, state.max_chars)
                times.append(time.perf_counter() - t0)
            figures[f"batch_{batch}_rps"] = batch * len(times) / sum(times)
            if batch == 1:
                figures["single_ms_p50"] = statistics.median(times) * 1e3
        log(f"embedder {state.embedder} on {size} prompts: batch 1 {figures['batch_1_rps']:.0f}/s "
            f"(p50 {figures['single_ms_p50']:.2f} ms), batch 64 {figures['batch_64_rps']:.0f}/s")
        out[size] = figures
    return out


class Runner:
    """Runs the cases against one stub and one gateway, numbering every request uniquely."""

    def __init__(self, plan: Plan, stub: Service, gateway: Service) -> None:
        self.plan = plan
        self.stub = stub
        self.gateway = gateway
        self._next = 0

    def _load(self, url: str, model: str, size: str, concurrency: int, n: int) -> LoadResult:
        base = self._next

        def make(i: int) -> RequestSpec:
            return chat_request(model, size, base + i, self.plan.stream)

        result = run(run_load(url, make, concurrency=concurrency, max_requests=n, max_seconds=self.plan.max_seconds))
        self._next = base + len(result.outcomes)
        return result

    def case(self, concurrency: int, size: str) -> dict:
        """Direct, then through the gateway (with its CPU, memory and overhead histogram)."""
        n = self.plan.requests(concurrency)
        warm = 2 * concurrency
        self._load(self.stub.url, DIRECT_MODEL, size, concurrency, warm)
        direct = self._load(self.stub.url, DIRECT_MODEL, size, concurrency, n)
        self._load(self.gateway.url, ROUTED_MODEL, size, concurrency, warm)
        before = prom.scrape(self.gateway.url)
        with ProcessWatcher(self.gateway.pid) as watcher:
            routed = self._load(self.gateway.url, ROUTED_MODEL, size, concurrency, n)
        after = prom.scrape(self.gateway.url)
        inside = (prom.Histogram.from_samples(after, OVERHEAD_METRIC)
                  - prom.Histogram.from_samples(before, OVERHEAD_METRIC))
        calls = prom.total(after, f"{BATCH_METRIC}_count") - prom.total(before, f"{BATCH_METRIC}_count")
        embedded = prom.total(after, f"{BATCH_METRIC}_sum") - prom.total(before, f"{BATCH_METRIC}_sum")
        d, g = direct.percentiles_ms(), routed.percentiles_ms()
        usage = watcher.usage
        assert usage is not None
        return {
            "concurrency": concurrency, "prompt": size, "prompt_tokens": PROMPT_TOKENS[size],
            "direct": direct.summary(), "gateway": routed.summary(),
            "overhead_ms": {p: g[p] - d[p] for p in PCTS},
            "gateway_overhead_ms": dict(zip(PCTS, (1e3 * v for v in inside.quantiles((0.5, 0.95, 0.99))), strict=True)),
            "gateway_overhead_observed": inside.count,
            "embed_batch_mean": embedded / calls if calls else float("nan"),
            "rps": routed.rps, "direct_rps": direct.rps,
            "gateway_cpu_percent": usage.cpu_percent, "gateway_rss_peak_mb": usage.rss_peak_mb,
        }


def table(cases: list[dict], embed: dict[str, dict]) -> str:
    """The markdown table of all cases."""
    headers = ["clients", "prompt", "direct p50/p95/p99 ms", "gateway p50/p95/p99 ms",
               "overhead p50/p95/p99 ms", "in-gateway overhead p50/p95/p99 ms", "direct req/s",
               "routed req/s", "routed / embedder batch-64", "prompts per embedding call", "gateway CPU %",
               "gateway peak RSS MB", "errors"]
    def trio(figures: dict) -> str:
        return "/".join(report.fmt(figures[p]) for p in PCTS)

    rows = []
    for c in cases:
        errors = sum(c["gateway"]["errors"].values()) + sum(c["direct"]["errors"].values())
        rows.append([str(c["concurrency"]), f"{c['prompt']} (~{c['prompt_tokens']})",
                     trio(c["direct"]["latency_ms"]), trio(c["gateway"]["latency_ms"]), trio(c["overhead_ms"]),
                     trio(c["gateway_overhead_ms"]), report.fmt(c["direct_rps"], 0), report.fmt(c["rps"], 0),
                     f"{100 * c['rps'] / embed[c['prompt']]['batch_64_rps']:.0f}%", report.fmt(c["embed_batch_mean"]),
                     report.fmt(c["gateway_cpu_percent"], 0), report.fmt(c["gateway_rss_peak_mb"], 0), str(errors)])
    return report.markdown_table(headers, rows)


def embed_table(embed: dict[str, dict]) -> str:
    """The markdown table of the embedder's standalone throughput."""
    rows = [[f"{size} (~{PROMPT_TOKENS[size]})", report.fmt(f["single_ms_p50"], 2), report.fmt(f["batch_1_rps"], 0),
             report.fmt(f["batch_64_rps"], 0)] for size, f in embed.items()]
    return report.markdown_table(["prompt", "batch 1 p50 ms", "batch 1 prompts/s", "batch 64 prompts/s"], rows)


def docs_section(result: dict) -> str:
    """The section of docs/benchmarks.md this run writes."""
    h = result
    return "\n\n".join([
        f"## Gateway overhead and throughput, embedder `{h['embedder']}`",
        f"`{h['command']}`. {report.machine_line(h['machine'])}",
        f"Upstream: the stub (`benchmarks/stub_upstream.py`), {h['settings']['delay_ms']:g} ms per answer, in "
        f"its own process; the gateway in its own process with its default settings; "
        f"{'streamed' if h['settings']['stream'] else 'non-streamed'} chat requests, every prompt unique "
        f"(no cache hit). Overhead = gateway latency minus direct latency at the same percentile, as a "
        f"client sees it; in-gateway overhead = the gateway's `uniroute_overhead_seconds` histogram "
        f"(handler start to upstream answer in hand, minus the upstream's time; bucket-interpolated, "
        f"\"off scale\" beyond its top bucket of 1 s). "
        f"CPU is % of one core (200% = both cores). The load generator, the stub and the gateway share "
        f"the machine's cores.",
        f"**{h['concurrency']} clients, {h['prompt']} prompts:** "
        f"overhead p50 {report.fmt(h['overhead_ms']['p50'])} ms, "
        f"p95 {report.fmt(h['overhead_ms']['p95'])} ms, p99 {report.fmt(h['overhead_ms']['p99'])} ms; "
        f"{report.fmt(h['rps'], 0)} routed req/s = {100 * h['routed_fraction']:.0f}% of the embedder's "
        f"batch-64 throughput ({report.fmt(h['embedder_batch_rps'], 0)} prompts/s); embedder single-prompt "
        f"p50 {report.fmt(h['embedder_single_ms'], 2)} ms. Gateway peak RSS over the run "
        f"{report.fmt(h['gateway_peak_rss_mb'], 0)} MB.",
        "Embedder alone (the gateway's, same prompts):",
        embed_table(h["embedder_throughput"]),
        "Through the gateway:",
        table(h["cases"], h["embedder_throughput"]),
    ])


def measure(plan: Plan, state_dir: Path, cache_dir: str, workdir: Path) -> dict:
    """The whole run: embedder alone, then every case against a fresh stub and gateway."""
    host = report.machine()
    embed = embedder_throughput(state_dir, plan.sizes, plan.embed_seconds, plan.embed_min_calls)
    with start_stub(workdir, delay_ms=plan.delay_ms) as stub:
        config = write_config(workdir, stub_models(stub.url))
        log("starting the gateway (loads the embedding model and embeds the representative set) ...")
        with start_gateway(workdir, config=config, state_dir=str(state_dir),
                           cache_dir=cache_dir) as gateway:
            runner = Runner(plan, stub, gateway)
            cases = []
            for size in plan.sizes:
                for concurrency in plan.concurrency:
                    log(f"case: {concurrency} clients, {size} prompts ({plan.requests(concurrency)} requests) ...")
                    c = runner.case(concurrency, size)
                    log(f"  direct p50 {c['direct']['latency_ms']['p50']:.1f} ms, gateway p50 "
                        f"{c['gateway']['latency_ms']['p50']:.1f} ms, overhead p50/p99 {c['overhead_ms']['p50']:.1f}/"
                        f"{c['overhead_ms']['p99']:.1f} ms, {c['rps']:.0f} routed req/s, "
                        f"CPU {c['gateway_cpu_percent']:.0f}%, errors {c['gateway']['errors'] or 'none'}")
                    cases.append(c)
            peak = peak_rss_bytes(gateway.pid)
    head = next((c for c in cases if (c["concurrency"], c["prompt"]) == HEADLINE), cases[-1])
    head_embed = embed[head["prompt"]]
    return {
        "benchmark": "gateway", "embedder": plan.embedder,
        "concurrency": head["concurrency"], "prompt": head["prompt"],
        "overhead_ms": head["overhead_ms"], "gateway_overhead_ms": head["gateway_overhead_ms"],
        "rps": head["rps"], "direct_rps": head["direct_rps"],
        "embedder_batch_rps": head_embed["batch_64_rps"], "embedder_single_rps": head_embed["batch_1_rps"],
        "embedder_single_ms": head_embed["single_ms_p50"],
        "routed_fraction": head["rps"] / head_embed["batch_64_rps"],
        "gateway_peak_rss_mb": peak / 2**20 if peak else max(c["gateway_rss_peak_mb"] for c in cases),
        "embedder_throughput": embed, "cases": cases,
        "machine": host,
        "settings": {"delay_ms": plan.delay_ms, "stream": plan.stream, "state_dir": str(state_dir),
                     "max_seconds_per_case": plan.max_seconds, "quick": plan.quick},
    }


def parse_args(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__.splitlines()[0])
    p.add_argument("--embedder", default="fast", choices=["accurate", "fast"])
    p.add_argument("--state-dir", help="router state to serve (default: the shipped state of --embedder)")
    p.add_argument("--quick", action="store_true",
                   help="a small run (1 and 50 clients, short prompts) for sanity checks")
    p.add_argument("--concurrency", type=int, nargs="+", help=f"clients per case (default {CONCURRENCY})")
    p.add_argument("--sizes", nargs="+", choices=SIZES, help=f"prompt sizes (default {SIZES})")
    p.add_argument("--seconds", type=float, help="time bound per phase of a case (default 60, quick 15)")
    p.add_argument("--delay-ms", type=float, default=5.0, help="the stub's delay per answer (default %(default)s)")
    p.add_argument("--stream", action="store_true", help="streamed requests (latency to the last byte)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help="the gateway's embedding cache (representative set only; default %(default)s)")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON; '-' prints one object on stdout")
    p.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = p.parse_args(argv)
    quick = args.quick
    plan = Plan(
        embedder=args.embedder,
        concurrency=tuple(args.concurrency or (QUICK_CONCURRENCY if quick else CONCURRENCY)),
        sizes=tuple(args.sizes or (QUICK_SIZES if quick else SIZES)),
        requests_per_client=2 if quick else 30, min_requests=20 if quick else 300,
        max_seconds=args.seconds or (15.0 if quick else 60.0), embed_seconds=0.5 if quick else 3.0,
        embed_min_calls=1 if quick else 3,
        delay_ms=args.delay_ms, stream=args.stream, quick=quick)
    if min(plan.concurrency) < 1 or plan.max_seconds <= 0:
        p.error("--concurrency must be >= 1 and --seconds > 0")
    return plan, args


def main(argv: list[str] | None = None) -> int:
    plan, args = parse_args(argv)
    try:
        state_dir = resolve_state(plan.embedder, args.state_dir)
    except UsageError as exc:
        print(f"benchmarks.gateway: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="uniroute-bench-") as tmp:
        result = measure(plan, state_dir, args.cache_dir, Path(tmp))
    report.publish(result, "gateway", argv, args.json, lambda r: table(r["cases"], r["embedder_throughput"]),
                   (f"benchmarks.gateway.{plan.embedder}", docs_section) if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
