"""uniroute against a peer gateway: `python -m benchmarks.peer [--write-docs] [--json FILE|-]`.

In one run, against one upstream stub (5 ms an answer, its own process), three targets:
- direct: the stub itself;
- uniroute: the gateway (`python -m app.cli.main serve`, its own process) with three models
  registered on the stub, every request routed with model `uniroute`;
- litellm: the LiteLLM proxy (`litellm --config`, its own process) with three deployments of one
  model group on the stub, its default routing (a shuffle), when LiteLLM is installed
  (`make bench-peer` puts it in .venv-peer; `--litellm PATH` names another executable).

Non-streamed chat requests, each with a prompt no other request has (so uniroute embeds every
one), are sent by wrk (`benchmarks/wrk_chat.lua` numbers them) or, where wrk is not installed,
by the project's Python load generator (`benchmarks.loadgen`); at 1, 10 and 50 clients, each
sending its next request when its last is answered. Streamed chat requests are sent by the
Python load generator (wrk cannot time a stream's first event). The runs are interleaved:
`--rounds` rounds (default 3), each running every client count against every target in turn
(the targets' order rotating from round to round); every figure is the median over the rounds.

Figures per client count: latency p50 and p99 (request sent to last byte) and successful
requests/s of each target; uniroute's and LiteLLM's overhead p50 (their p50 minus the direct
p50, per round); uniroute's requests/s over LiteLLM's; CPU per request of each target (the user
+ system CPU time of its process and its workers, from psutil, over the requests it served in
the run). Streams: each target's time to the first event p50, and the gateways' minus direct.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml

from benchmarks import report
from benchmarks.gateway import ROUTED_MODEL, UsageError, resolve_state, stub_models
from benchmarks.loadgen import LoadResult, run, run_load
from benchmarks.services import (
    DEFAULT_CACHE_DIR,
    ROOT,
    Service,
    StubModel,
    cpu_seconds,
    free_port,
    log,
    start_gateway,
    start_stub,
    write_config,
)
from benchmarks.workload import (
    CHAT_PATH,
    MAX_TOKENS,
    PROMPT_TOKENS,
    chat_request,
    prompt_window,
)

CLIENTS = (1, 10, 50)
STREAM_CLIENTS = (1, 10)
ROUNDS = 3
DIRECT_MODEL = "stub-direct"
PEER_GROUP = "stub-group"  # LiteLLM's model group of the three deployments
PEER_VENV = ROOT / ".venv-peer"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_chat.lua"
WINDOWS = 1000  # prompt texts the wrk script takes in turn (each request still ends with its own number)
RUN_NUMBERS = 10_000_000  # prompt numbers set aside for each run: none is sent twice in a benchmark
LITELLM_READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Target:
    """Where a run sends its requests, the model it asks for, and the process whose CPU it counts."""

    name: str
    url: str
    model: str
    pid: int


@dataclass(frozen=True)
class Sample:
    """One run against one target: what was served, how fast, and the target's CPU meanwhile."""

    requests: int  # answered, successfully or not
    ok: int
    errors: int  # failed answers, and failures with no answer (connection errors, timeouts)
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_s: float

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1e3 * self.cpu_s / self.requests if self.requests else float("nan")


Driver = Callable[[Target, int, float, int], Sample]
"""Runs load: (target, clients, seconds, first prompt number) -> a Sample (its cpu_s left at 0)."""


def _sample(result: LoadResult) -> Sample:
    p = result.percentiles_ms((50, 99))
    ok = sum(o.ok for o in result.outcomes)
    return Sample(len(result.outcomes), ok, len(result.outcomes) - ok, result.wall_s, p["p50"], p["p99"], 0.0)


class LoadgenDriver:
    """The Python load generator: closed-loop clients for a time."""

    name = "Python load generator"

    def __init__(self, size: str) -> None:
        self.size = size

    def __call__(self, target: Target, clients: int, seconds: float, first: int) -> Sample:
        result = run(run_load(target.url, lambda i: chat_request(target.model, self.size, first + i),
                              concurrency=clients, max_requests=RUN_NUMBERS, max_seconds=seconds))
        return _sample(result)


class WrkDriver:
    """wrk with `benchmarks/wrk_chat.lua`: unique prompts made of `WINDOWS` real-text windows."""

    name = "wrk"

    def __init__(self, wrk: str, size: str, workdir: Path, threads: int) -> None:
        self.wrk = wrk
        self.threads = threads
        self.windows = workdir / f"windows-{size}.txt"
        # JSON-escaped without the quotes: the script puts each inside a JSON string as it is.
        self.windows.write_text("".join(json.dumps(prompt_window(size, i))[1:-1] + "\n" for i in range(WINDOWS)))

    def __call__(self, target: Target, clients: int, seconds: float, first: int) -> Sample:
        argv = [self.wrk, f"-t{min(self.threads, clients)}", f"-c{clients}", f"-d{max(1, round(seconds))}s",
                "--timeout", "60s", "-s", str(WRK_SCRIPT), target.url + CHAT_PATH,
                "--", str(self.windows), target.model, str(first), str(MAX_TOKENS), str(RUN_NUMBERS // self.threads)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
        line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        r = json.loads(line.removeprefix("WRK_RESULT "))
        # wrk's requests are its answers, of any status; its other errors had no answer.
        return Sample(r["requests"], r["requests"] - r["errors"]["status"], sum(r["errors"].values()),
                      r["duration_us"] / 1e6, r["p50_us"] / 1e3, r["p99_us"] / 1e3, 0.0)


def wrk_version(wrk: str) -> str:
    """wrk's version as it prints it (`wrk -v`'s first line, e.g. "wrk debian/4.1.0-3+b2 [epoll]")."""
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0].strip()


def find_litellm(choice: str) -> str | None:
    """The `litellm` executable: `choice` when a path, none for "none", else (auto) .venv-peer's
    or the one on PATH."""
    if choice == "none":
        return None
    if choice != "auto":
        if not os.access(choice, os.X_OK):
            raise UsageError(f"no litellm executable at {choice}")
        return choice
    own = PEER_VENV / "bin" / "litellm"
    return str(own) if own.exists() else shutil.which("litellm")


def litellm_version(litellm: str) -> str:
    """The version of LiteLLM installed beside its executable (in the same environment)."""
    python = Path(litellm).parent / "python"
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def litellm_config(workdir: Path, models: Sequence[StubModel]) -> Path:
    """A LiteLLM proxy config: the stub's models as deployments of one model group, routed by
    LiteLLM's default (simple shuffle); no database, no callbacks, and, like the gateway here, no
    client keys (LiteLLM refuses to start without a master key unless told it may)."""
    deployments = [{"model_name": PEER_GROUP,
                    "litellm_params": {"model": f"openai/{m.name}", "api_base": m.base_url + "/v1",
                                       "api_key": "sk-stub"}} for m in models]
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump({"model_list": deployments,
                                    "litellm_settings": {"telemetry": False, "drop_params": True},
                                    "general_settings": {"dangerously_permit_weak_or_unset_master_key": True}}))
    return path


def start_litellm(workdir: Path, litellm: str, config: Path, workers: int) -> Service:
    """The LiteLLM proxy on a free port, ready; offline (its model cost map read from the package)."""
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    argv = [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", str(workers)]
    service = Service("litellm", argv, f"http://127.0.0.1:{port}", workdir / "litellm.log", env)
    try:
        service.wait_until("/health/liveliness", LITELLM_READY_TIMEOUT_S)
    except BaseException:
        service.stop()
        raise
    return service


def uniroute_version() -> str:
    """The checkout's commit (`git describe --always --dirty`)."""
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or importlib.metadata.version("uniroute")


def rotated(targets: Sequence[Target], by: int) -> list[Target]:
    """The targets in turn, starting `by` places further (each round starts with another)."""
    k = by % len(targets)
    return [*targets[k:], *targets[:k]]


def stream_sample(target: Target, size: str, clients: int, seconds: float, first: int) -> float:
    """Streamed requests for `seconds`: the p50 of their time to the first event, in ms."""
    result = run(run_load(target.url, lambda i: chat_request(target.model, size, first + i, stream=True),
                          concurrency=clients, max_requests=RUN_NUMBERS, max_seconds=seconds))
    firsts = [o.first_event_s for o in result.outcomes if o.ok and o.first_event_s is not None]
    if result.errors():
        log(f"  {target.name} streams: errors {dict(result.errors())}")
    return float(np.percentile(firsts, 50) * 1e3) if firsts else float("nan")


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    clients: tuple[int, ...]
    stream_clients: tuple[int, ...]
    rounds: int
    seconds: float
    stream_seconds: float
    warm_seconds: float
    size: str
    delay_ms: float
    workers: int | None


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


def summarize(plan: Plan, samples: dict[tuple[int, str], list[Sample]], streams: dict[tuple[int, str], list[float]],
              names: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Medians over the rounds, per client count (and per stream client count)."""
    levels = []
    for c in plan.clients:
        per = {name: samples[(c, name)] for name in names}
        figures = {name: {"p50_ms": median([s.p50_ms for s in runs]), "p99_ms": median([s.p99_ms for s in runs]),
                          "rps": median([s.rps for s in runs]),
                          "cpu_ms_per_request": median([s.cpu_ms_per_request for s in runs]),
                          "requests": sum(s.requests for s in runs), "errors": sum(s.errors for s in runs)}
                   for name, runs in per.items()}
        # Paired within a round (the runs were side by side), then the median over the rounds.
        overhead = {name: median([g.p50_ms - d.p50_ms for g, d in zip(per[name], per["direct"], strict=True)])
                    for name in names if name != "direct"}
        ratio = (median([u.rps / p.rps if p.rps else float("nan")
                         for u, p in zip(per["uniroute"], per["litellm"], strict=True)])
                 if "litellm" in per else None)
        levels.append({"clients": c, "targets": figures, "overhead_p50_ms": overhead, "uniroute_vs_litellm_rps": ratio})
    stream_levels = []
    for c in plan.stream_clients:
        per_s = {name: streams[(c, name)] for name in names}
        stream_levels.append({
            "clients": c, "first_event_p50_ms": {name: median(v) for name, v in per_s.items()},
            "minus_direct_ms": {name: median([g - d for g, d in zip(per_s[name], per_s["direct"], strict=True)])
                                for name in names if name != "direct"}})
    return levels, stream_levels


def measure(plan: Plan, driver: Driver, state_dir: Path, cache_dir: str, litellm: str | None,
            workdir: Path) -> dict:
    """Start the stub, the gateway and the peer, then run the rounds and take their medians."""
    host = report.machine()
    samples: dict[tuple[int, str], list[Sample]] = {}
    streams: dict[tuple[int, str], list[float]] = {}
    number = 0

    def numbers() -> int:
        nonlocal number
        number += RUN_NUMBERS
        return number

    with start_stub(workdir, delay_ms=plan.delay_ms) as stub:
        models = stub_models(stub.url)
        env = {"UNIROUTE_WORKERS": str(plan.workers)} if plan.workers else None
        log("starting the gateway (loads the embedding model and embeds the representative set) ...")
        with start_gateway(workdir, config=write_config(workdir, models), state_dir=str(state_dir),
                           cache_dir=cache_dir, env=env) as gateway:
            targets = [Target("direct", stub.url, DIRECT_MODEL, stub.pid),
                       Target("uniroute", gateway.url, ROUTED_MODEL, gateway.pid)]
            peer = None
            if litellm is not None:
                log(f"starting the LiteLLM proxy ({litellm}) ...")
                peer = start_litellm(workdir, litellm, litellm_config(workdir, models), plan.workers or 1)
                targets.append(Target("litellm", peer.url, PEER_GROUP, peer.pid))
            try:
                for t in targets:  # first requests pay for lazy set-up (connections, imports)
                    driver(t, max(plan.clients), plan.warm_seconds, numbers())
                    stream_sample(t, plan.size, 1, plan.warm_seconds, numbers())
                for r in range(plan.rounds):
                    for c in plan.clients:
                        for t in rotated(targets, r):
                            cpu0 = cpu_seconds(t.pid)
                            s = driver(t, c, plan.seconds, numbers())
                            s = replace(s, cpu_s=cpu_seconds(t.pid) - cpu0)
                            samples.setdefault((c, t.name), []).append(s)
                            log(f"round {r + 1}, {c} clients, {t.name}: p50 {s.p50_ms:.2f} ms, {s.rps:.0f} req/s, "
                                f"CPU {s.cpu_ms_per_request:.2f} ms/request, errors {s.errors}")
                    for c in plan.stream_clients:
                        for t in rotated(targets, r):
                            first = stream_sample(t, plan.size, c, plan.stream_seconds, numbers())
                            streams.setdefault((c, t.name), []).append(first)
                            log(f"round {r + 1}, {c} stream clients, {t.name}: first event p50 {first:.2f} ms")
            finally:
                if peer is not None:
                    peer.stop()
    names = [t.name for t in targets]
    levels, stream_levels = summarize(plan, samples, streams, names)
    one = next((lv for lv in levels if lv["clients"] == 1), levels[0])
    return {
        "benchmark": "peer", "driver": getattr(driver, "name", "custom"), "targets": names,
        "overhead_p50_ms": one["overhead_p50_ms"], "overhead_clients": one["clients"],
        "levels": levels, "streams": stream_levels, "machine": host,
        "versions": {"uniroute": uniroute_version(),
                     "litellm": litellm_version(litellm) if litellm is not None else None,
                     "wrk": wrk_version(driver.wrk) if isinstance(driver, WrkDriver) else None},
        "settings": {"rounds": plan.rounds, "seconds": plan.seconds, "stream_seconds": plan.stream_seconds,
                     "prompt": plan.size, "prompt_tokens": PROMPT_TOKENS[plan.size], "delay_ms": plan.delay_ms,
                     "workers": plan.workers, "wrk_threads": getattr(driver, "threads", None),
                     "state_dir": str(state_dir)},
    }


def _trio(figures: dict, key: str, names: Sequence[str], digits: int = 1) -> str:
    return " / ".join(report.fmt(figures[n][key], digits) for n in names)


def table(result: dict) -> str:
    """The markdown table of the client counts: each cell lists the targets in the header's order."""
    names = result["targets"]
    who = " / ".join(names)
    rows = []
    for lv in result["levels"]:
        t = lv["targets"]
        ratio = lv["uniroute_vs_litellm_rps"]
        rows.append([str(lv["clients"]), _trio(t, "p50_ms", names, 2), _trio(t, "p99_ms", names, 2),
                     " / ".join(report.fmt(lv["overhead_p50_ms"][n], 2) for n in names if n != "direct"),
                     _trio(t, "rps", names, 0), "–" if ratio is None else f"{ratio:.2f}",
                     _trio(t, "cpu_ms_per_request", names, 2), _trio(t, "errors", names, 0)])
    gateways = " / ".join(n for n in names if n != "direct")
    return report.markdown_table(
        ["clients", f"p50 ms ({who})", f"p99 ms ({who})", f"overhead p50 ms ({gateways})", f"req/s ({who})",
         "uniroute / LiteLLM req/s", f"CPU ms per request ({who})", f"errors ({who})"], rows)


def stream_table(result: dict) -> str:
    """The markdown table of the streams' time to first event."""
    names = result["targets"]
    gateways = [n for n in names if n != "direct"]
    rows = [[str(s["clients"]), " / ".join(report.fmt(s["first_event_p50_ms"][n], 2) for n in names),
             " / ".join(report.fmt(s["minus_direct_ms"][n], 2) for n in gateways)] for s in result["streams"]]
    return report.markdown_table(["stream clients", f"first event p50 ms ({' / '.join(names)})",
                                  f"minus direct ms ({' / '.join(gateways)})"], rows)


def text(result: dict) -> str:
    """What the benchmark prints: both tables."""
    return "\n\n".join([table(result), stream_table(result)])


def docs_section(result: dict) -> str:
    """The section of docs/benchmarks.md this run writes."""
    v, s = result["versions"], result["settings"]
    versions = [f"uniroute `{v['uniroute']}`", f"LiteLLM {v['litellm'] or 'not installed (no peer column)'}",
                f"load from {result['driver']}" + (f" (`{v['wrk']}`, threads: {s['wrk_threads']})" if v["wrk"] else "")]
    overhead = ", ".join(f"{n} {report.fmt(ms, 2)} ms" for n, ms in result["overhead_p50_ms"].items())
    n_clients = result["overhead_clients"]
    return "\n\n".join([
        f"## Against a peer ({result['driver']})",
        f"`{result['command']}`. {report.machine_line(result['machine'])} Versions: {', '.join(versions)}.",
        f"One upstream stub ({s['delay_ms']:g} ms an answer) behind three targets: the stub directly, uniroute "
        f"routing every request with model `uniroute` over three models on the stub, and the LiteLLM proxy with "
        f"three deployments of one model group on the stub (its default shuffle; no client keys, like uniroute "
        f"here; its model cost map read from the package). Each gateway runs with its default settings. "
        f"{s['prompt'].capitalize()} prompts "
        f"(~{s['prompt_tokens']} tokens), each unique; every client sends its next request when its last is "
        f"answered. {s['rounds']} interleaved rounds of {s['seconds']:g} s a run, medians of the rounds; "
        f"overhead = a gateway's p50 minus the direct p50 in the same round; CPU per request = the target "
        f"process's (and its workers') user + system CPU time over the requests it served. "
        + (f"Gateways run {s['workers']} worker processes. " if s["workers"] else "")
        + "The load generator, the stub and the gateways share the machine's cores.",
        *([f"**Note:** {result['note'].rstrip('.')}."] if result.get("note") else []),
        f"**Overhead p50 at {n_clients} client{'' if n_clients == 1 else 's'}:** {overhead}.",
        "Each cell lists the targets in the order of its header:",
        table(result),
        f"Streamed requests (Python load generator, {s['stream_seconds']:g} s a run): time to the first event.",
        stream_table(result),
    ])


def parse_args(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="client counts (default %(default)s)")
    p.add_argument("--stream-clients", type=int, nargs="*", default=list(STREAM_CLIENTS),
                   help="client counts of the streamed runs (default %(default)s; none to skip)")
    p.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of a run (default %(default)s)")
    p.add_argument("--stream-seconds", type=float, default=5.0, help="length of a streamed run (default %(default)s)")
    p.add_argument("--warm-seconds", type=float, default=2.0, help="warm-up per target (default %(default)s)")
    p.add_argument("--prompt", choices=sorted(PROMPT_TOKENS), default="short", help="prompt size (default %(default)s)")
    p.add_argument("--delay-ms", type=float, default=5.0, help="the stub's delay per answer (default %(default)s)")
    p.add_argument("--driver", choices=["auto", "wrk", "loadgen"], default="auto",
                   help="what sends the non-streamed load: wrk, the Python load generator, or wrk when on PATH")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk's threads (default %(default)s: one core)")
    p.add_argument("--litellm", default="auto",
                   help="the litellm executable, or none (default: .venv-peer's, else the one on PATH)")
    p.add_argument("--workers", type=int, help="UNIROUTE_WORKERS for the gateway (and LiteLLM's --num_workers)")
    p.add_argument("--embedder", default="fast", choices=["accurate", "fast"])
    p.add_argument("--state-dir", help="router state to serve (default: the shipped state of --embedder)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help="the gateway's embedding cache (representative set only; default %(default)s)")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON; '-' prints one object on stdout")
    p.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    p.add_argument("--note", help="a sentence for the docs section (e.g. what else loaded the machine)")
    args = p.parse_args(argv)
    if min(args.clients) < 1 or min(args.stream_clients, default=1) < 1 or args.rounds < 1:
        p.error("--clients, --stream-clients and --rounds must be >= 1")
    if min(args.seconds, args.stream_seconds, args.warm_seconds) <= 0 or args.wrk_threads < 1:
        p.error("--seconds, --stream-seconds, --warm-seconds and --wrk-threads must be > 0")
    if args.workers is not None and args.workers < 1:
        p.error("--workers must be >= 1")
    plan = Plan(tuple(args.clients), tuple(args.stream_clients), args.rounds, args.seconds, args.stream_seconds,
                args.warm_seconds, args.prompt, args.delay_ms, args.workers)
    return plan, args


def make_driver(choice: str, size: str, workdir: Path, threads: int) -> Driver:
    """wrk when asked for (UsageError if missing) or, for auto, when on PATH; else the Python load generator."""
    wrk = shutil.which("wrk")
    if choice == "wrk" and wrk is None:
        raise UsageError("wrk is not on PATH: install it (`apt-get install wrk`, or `make bench`) or use --driver loadgen")
    if choice != "loadgen" and wrk is not None:
        return WrkDriver(wrk, size, workdir, threads)
    if choice == "auto":
        log("wrk is not on PATH: the Python load generator sends the load")
    return LoadgenDriver(size)


def main(argv: list[str] | None = None) -> int:
    plan, args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="uniroute-peer-") as tmp:
        try:
            state_dir = resolve_state(args.embedder, args.state_dir)
            litellm = find_litellm(args.litellm)
            driver = make_driver(args.driver, plan.size, Path(tmp), args.wrk_threads)
        except UsageError as exc:
            print(f"benchmarks.peer: error: {exc}", file=sys.stderr)
            return 2
        if litellm is None:
            log("LiteLLM is not installed (`make bench-peer`): no peer column")
        result = measure(plan, driver, state_dir, args.cache_dir, litellm, Path(tmp))
    result["note"] = args.note
    report.publish(result, "peer", argv, args.json, text, ("benchmarks.peer", docs_section) if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
