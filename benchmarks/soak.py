"""Soak: `python -m benchmarks.soak [--clients 50] [--minutes 10]`.

N clients send routed chat requests (one in four streamed) through the gateway for T minutes
(or until `--max-requests`), in front of two upstream stubs, each its own process: `steady`
(healthy) and `flaky` (a share of its requests answered HTTP 500, another share cut mid-body).
`flaky` is the cheaper of two equally accurate models, so the router sends it nearly all the
traffic and the gateway's retries, fallbacks and cooldowns do the work (a model failing
`cooldown_failures` times in a row is left out for `cooldown_s`, 30 s by default: `steady` takes
the traffic meanwhile).

Every request that did not end well is counted and classified, and each class must be one the
gateway documents (README, Faults), with the reason printed beside it; a class that is not is
UNEXPLAINED and makes the run exit 1. The gateway's RSS is reported at the start (after a
warm-up), every segment, and at the end, with its growth; its /metrics counters of upstream
failures, fallbacks and cooldowns, and the stubs' own counts of injected faults, explain the rest.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from benchmarks import prom, report
from benchmarks.loadgen import LoadResult, RequestSpec, run, run_load
from benchmarks.services import (
    DEFAULT_CACHE_DIR,
    ProcessWatcher,
    Service,
    StubModel,
    log,
    rss_mb,
    start_gateway,
    start_stub,
    write_config,
)
from benchmarks.workload import chat_request

STREAM_EVERY = 4  # one request in four is streamed
SIZES = ("short", "medium")  # alternate: both are embedded in full

# Every way a request may fail that the gateway documents, and why it happens in this soak.
EXPECTED: dict[str, str] = {
    "stream_error:stream_cut": "the flaky upstream cut a stream after its first bytes had reached the client: "
                               "nothing can be retried then, so the gateway ends the stream with an "
                               "OpenAI-style error event (README, Faults)",
    "http_502:upstream_failed": "every attempt failed (the model, its retry and the fallbacks): "
                                "the gateway answers 502 (README, Faults)",
    "http_504:upstream_failed": "every attempt failed and the last one timed out: 504 (README, Faults)",
    "http_504:upstream_deadline": "the request's upstream work passed deadline_s: 504 (README, Faults)",
}


def request_for(i: int) -> RequestSpec:
    """The soak's i-th request: routed, sizes alternating, every STREAM_EVERY-th streamed."""
    return chat_request("uniroute", SIZES[i % len(SIZES)], i, stream=i % STREAM_EVERY == 0)


def classify(errors: Counter[str]) -> list[dict]:
    """Each failure class with its count, whether the gateway documents it, and why it happened."""
    return [{"label": label, "count": n, "expected": label in EXPECTED,
             "explanation": EXPECTED.get(label, "UNEXPLAINED: not a failure the gateway documents")}
            for label, n in errors.most_common()]


def soak(gateway: Service, clients: int, seconds: float, max_requests: int,
         segments: int) -> tuple[LoadResult, list[dict]]:
    """The load, in `segments` runs back to back (clients drain between them), with the gateway's
    RSS after each; requests are numbered across segments so no prompt repeats."""
    total = LoadResult()
    timeline: list[dict] = []
    started = time.perf_counter()
    for k in range(segments):
        left = max_requests - len(total.outcomes)
        remaining_s = seconds - (time.perf_counter() - started)
        if left <= 0 or remaining_s <= 0:
            break
        base = len(total.outcomes) + 10 * clients  # past the warm-up's numbers
        part = run(run_load(gateway.url, lambda i, base=base: request_for(base + i), concurrency=clients,
                            max_requests=left, max_seconds=min(remaining_s, seconds / segments)))
        total.outcomes += part.outcomes
        total.wall_s += part.wall_s
        rss = rss_mb(gateway.pid)
        timeline.append({"elapsed_s": time.perf_counter() - started, "requests": len(total.outcomes),
                         "rss_mb": rss, "segment_rps": part.rps, "segment_errors": sum(part.errors().values())})
        log(f"segment {k + 1}/{segments}: {len(part.outcomes)} requests, {part.rps:.0f} ok/s, "
            f"{sum(part.errors().values())} not ok; gateway RSS {rss:.0f} MB")
    return total, timeline


def gateway_counters(url: str) -> dict:
    """The gateway's own account of the faults: failed attempts by model and reason, fallbacks, cooldowns."""
    samples = prom.scrape(url)
    failures = {",".join(f"{k}={v}" for k, v in labels): value
                for labels, value in samples.get("uniroute_upstream_failures_total", {}).items()}
    return {"upstream_failures": failures,
            "fallbacks": prom.total(samples, "uniroute_fallbacks_total"),
            "cooldowns": prom.total(samples, "uniroute_model_cooldowns_total")}


def measure(args: argparse.Namespace, workdir: Path) -> dict:
    """Start the stubs and the gateway, warm up, soak, and gather every count."""
    host = report.machine()
    with start_stub(workdir, name="steady") as steady, \
            start_stub(workdir, name="flaky", fail_rate=args.fail_rate, cut_rate=args.cut_rate) as flaky:
        config = write_config(workdir, [StubModel("flaky", flaky.url, 0.1, 0.8),
                                        StubModel("steady", steady.url, 1.0, 0.8)])
        log("starting the gateway ...")
        with start_gateway(workdir, config=config, state_dir=args.state_dir, cache_dir=args.cache_dir) as gateway:
            run(run_load(gateway.url, request_for, concurrency=args.clients, max_requests=2 * args.clients,
                         max_seconds=60.0))
            log(f"soaking: {args.clients} clients for {args.minutes:g} min (at most {args.max_requests} requests)")
            with ProcessWatcher(gateway.pid) as watcher:
                result, timeline = soak(gateway, args.clients, args.minutes * 60, args.max_requests, args.segments)
            counters = gateway_counters(gateway.url)
            injected = {name: httpx.get(s.url + "/_stats", timeout=10).json() for name, s in
                        (("steady", steady), ("flaky", flaky))}
    usage = watcher.usage
    assert usage is not None
    errors = result.errors()
    classes = classify(errors)
    not_200 = Counter(o.status for o in result.outcomes if o.status != 200)
    return {
        "benchmark": "soak", "clients": args.clients, "minutes": args.minutes, "state_dir": args.state_dir,
        "fail_rate": args.fail_rate, "cut_rate": args.cut_rate,
        "requests": len(result.outcomes), "ok": len(result.outcomes) - sum(errors.values()),
        "rps": result.rps, "latency_ms": result.percentiles_ms(),
        "non_200": {str(k): v for k, v in sorted(not_200.items())},
        "failures": classes, "unexplained": sum(c["count"] for c in classes if not c["expected"]),
        "rss_mb": {"start": usage.rss_start_mb, "end": usage.rss_end_mb, "peak": usage.rss_peak_mb,
                   "growth": usage.rss_end_mb - usage.rss_start_mb,
                   "growth_percent": 100 * (usage.rss_end_mb - usage.rss_start_mb) / usage.rss_start_mb},
        "gateway_cpu_percent": usage.cpu_percent,
        "timeline": timeline, "gateway_metrics": counters, "injected": injected,
        "machine": host,
    }


def summary(result: dict) -> str:
    """The markdown summary of a soak."""
    rss = result["rss_mb"]
    rows = [[c["label"], str(c["count"]), c["explanation"]] for c in result["failures"]] or [["none", "0", ""]]
    m = result["gateway_metrics"]
    return "\n\n".join([
        f"{result['requests']} requests from {result['clients']} clients over {result['minutes']:g} min "
        f"({report.fmt(result['rps'], 0)} ok/s, p50/p99 {report.fmt(result['latency_ms']['p50'])}/"
        f"{report.fmt(result['latency_ms']['p99'])} ms); {result['ok']} ended well; HTTP statuses other than "
        f"200: {result['non_200'] or 'none'}; unexplained failures: {result['unexplained']}.",
        report.markdown_table(["failure", "count", "why"], rows),
        f"Injected by the stubs: {result['injected']}. The gateway's counters: failed upstream attempts "
        f"{m['upstream_failures'] or 'none'}; fallbacks {m['fallbacks']:.0f}; cooldowns {m['cooldowns']:.0f}.",
        f"Gateway RSS: start {rss['start']:.0f} MB, end {rss['end']:.0f} MB, peak {rss['peak']:.0f} MB, "
        f"growth {rss['growth']:+.1f} MB ({rss['growth_percent']:+.1f}%); CPU {result['gateway_cpu_percent']:.0f}% "
        f"of one core. RSS by segment (MB): " + ", ".join(f"{t['rss_mb']:.0f}" for t in result["timeline"]) + ".",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--max-requests", type=int, default=1_000_000, help="bound on requests (default %(default)s)")
    p.add_argument("--segments", type=int, default=10, help="RSS is read after each (default %(default)s)")
    p.add_argument("--fail-rate", type=float, default=0.1, help="flaky's share of HTTP 500s (default %(default)s)")
    p.add_argument("--cut-rate", type=float, default=0.05, help="flaky's share of cut responses (default %(default)s)")
    p.add_argument("--state-dir", help="router state for the gateway (default: the shipped one)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="the gateway's embedding cache")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON; '-' prints one object on stdout")
    p.add_argument("--write-docs", action="store_true", help="write the summary into docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.clients < 1 or args.minutes <= 0 or args.max_requests < 1 or args.segments < 1:
        p.error("--clients, --max-requests and --segments must be >= 1 and --minutes > 0")
    if min(args.fail_rate, args.cut_rate) < 0 or args.fail_rate + args.cut_rate > 1:
        p.error("--fail-rate and --cut-rate must be >= 0 and add up to at most 1")
    with tempfile.TemporaryDirectory(prefix="uniroute-soak-") as tmp:
        result = measure(args, Path(tmp))
    report.publish(result, "soak", argv, args.json, summary,
                   ("benchmarks.soak", docs_section) if args.write_docs else None)
    return 1 if result["unexplained"] else 0


def docs_section(result: dict) -> str:
    """The soak's section of docs/benchmarks.md."""
    return "\n\n".join(["## Soak", f"`{result['command']}`. {report.machine_line(result['machine'])}",
                         summary(result)])


if __name__ == "__main__":
    sys.exit(main())
