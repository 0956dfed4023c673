"""Time-to-routable: `python -m benchmarks.time_to_routable [--latency-ms 1000] [--concurrency 8 32]`.

How long a new LLM takes from `POST /admin/models` to `ready` (profiled on the default
representative set, routable), against an upstream stub answering every request after a fixed
latency (1 s by default), at each profiling concurrency (`UNIROUTE_PROFILE_CONCURRENCY`, one
gateway process each), and what its profiling cost at the stated prices (the newcomer's answers
and the judge's verdicts on `llm_judge` items: the stub judges too, as `stub-judge`). The bound is
calls x latency / concurrency for the run's upstream calls (the set's N prompts, plus a judge's
verdict for each `llm_judge` item, which holds its prompt's slot for a second latency; the stub
counts them): the time the calls take in flight, nothing else; the ratio measured / bound says
what the rest costs (grading, registry writes, Ψ). Requests go in whole waves, so
ceil(calls / concurrency) x latency (`waves_bound_s`) is about the least any run can take.
"""
from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from benchmarks import report
from benchmarks.services import (
    DEFAULT_CACHE_DIR,
    Service,
    log,
    repset_ids,
    start_gateway,
    start_stub,
)
from benchmarks.stub_upstream import JUDGE_MODEL

MODEL = "newcomer"
POLL_S = 0.05


# Stated prices per million input/output tokens: the newcomer's like gpt-3.5-turbo-1106's, the
# judge's like GPT-4's (arena-bench-v1's judge), as in app/demo/data/arena_bench_v1/prices.json.
NEWCOMER_PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
JUDGE_PRICE = {"input_per_mtok": 30.0, "output_per_mtok": 60.0}


def judge_config(workdir: Path, stub_url: str) -> Path:
    """A gateway config registering the stub judge (scored 0 everywhere: never routed to)."""
    scores = workdir / "judge-scores.json"
    scores.write_text(json.dumps(dict.fromkeys(repset_ids(), 0.0)))
    path = workdir / "judge.yaml"
    path.write_text(yaml.safe_dump({"judge_model": JUDGE_MODEL, "models": [
        {"name": JUDGE_MODEL, "base_url": stub_url + "/v1", "cost": JUDGE_PRICE, "scores_file": str(scores)}]}))
    return path


def time_one(gateway: Service, admin_key: str, stub_url: str, timeout_s: float) -> dict:
    """Register a model on the stub; seconds until the admin API shows it `ready`, and its job's
    figures (its spend: the newcomer's answers and the judge's verdicts)."""
    headers = {"authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30.0) as client:
        started = time.perf_counter()
        r = client.post("/admin/models", json={"name": MODEL, "base_url": stub_url + "/v1", "cost": NEWCOMER_PRICE})
        if r.status_code != 202:
            raise RuntimeError(f"POST /admin/models answered {r.status_code}: {r.text}")
        while True:
            shown = client.get(f"/admin/models/{MODEL}").json()
            elapsed = time.perf_counter() - started
            if shown["state"] == "ready":
                break
            if shown["state"] == "failed" or elapsed > timeout_s:
                raise RuntimeError(f"{MODEL} is {shown['state']} after {elapsed:.1f} s: {shown.get('error')}")
            time.sleep(POLL_S)
    job = shown["jobs"][-1]
    return {"measured_s": elapsed, "prompts": job["total"], "errors": job["errors"], "spend": job["spend"]}


def stub_calls(stub_url: str) -> int:
    """The requests the stub has answered so far."""
    return int(httpx.get(stub_url + "/_stats", timeout=10.0).json()["requests"])


def measure(latency_ms: float, concurrencies: list[int], cache_dir: str, workdir: Path) -> dict:
    """Every concurrency against one stub, each with a fresh gateway and registry."""
    host = report.machine()
    n = len(repset_ids())
    runs = []
    with start_stub(workdir, delay_ms=latency_ms) as stub:
        for c in concurrencies:
            admin_key = secrets.token_urlsafe(16)
            log(f"concurrency {c}: starting a gateway, then profiling {n} prompts ...")
            with start_gateway(workdir, env={"UNIROUTE_PROFILE_CONCURRENCY": str(c), "UNIROUTE_ADMIN_KEY": admin_key},
                               config=judge_config(workdir, stub.url), cache_dir=cache_dir,
                               name=f"gateway-c{c}") as gateway:
                before = stub_calls(stub.url)
                run = time_one(gateway, admin_key, stub.url, timeout_s=max(60.0, 10 * n * latency_ms / 1000 / c))
                calls = stub_calls(stub.url) - before
            bound = calls * latency_ms / 1000 / c
            run.update(concurrency=c, calls=calls, bound_s=bound, ratio=run["measured_s"] / bound,
                       waves_bound_s=math.ceil(calls / c) * latency_ms / 1000)
            log(f"  ready in {run['measured_s']:.2f} s; bound {bound:.2f} s; ratio {run['ratio']:.3f}; "
                f"{run['errors']} failed prompts")
            runs.append(run)
    return {"benchmark": "time_to_routable", "latency_ms": latency_ms, "prompts": n, "runs": runs,
            "machine": host}


def table(result: dict) -> str:
    """The markdown table of the runs."""
    rows = [[str(r["concurrency"]), str(r["prompts"]), str(r["calls"]), report.fmt(r["bound_s"], 2),
             report.fmt(r["waves_bound_s"], 2),
             report.fmt(r["measured_s"], 2), report.fmt(r["ratio"], 3), str(r["errors"]),
             f"{r['spend']:.4f}"] for r in result["runs"]]
    return report.markdown_table(
        ["profile concurrency", "prompts N", "upstream calls (answers and verdicts)",
         "bound calls x latency / concurrency (s)", "whole waves ceil(calls / concurrency) x latency (s)", "measured (s)", "ratio measured / bound",
         "failed prompts", "spend (USD)"], rows)


def docs_section(result: dict) -> str:
    """The section of docs/benchmarks.md this run writes."""
    return "\n\n".join([
        "## Time-to-routable",
        f"`{result['command']}`. {report.machine_line(result['machine'])}",
        f"`POST /admin/models` until the model shows `ready`, profiled on the default representative set "
        f"({result['prompts']} prompts), against the stub answering after {result['latency_ms']:g} ms, each "
        f"concurrency with a fresh gateway process. Spend at the stated prices: the newcomer at "
        f"${NEWCOMER_PRICE['input_per_mtok']:g}/${NEWCOMER_PRICE['output_per_mtok']:g} per million input/output "
        f"tokens, the judge of the `llm_judge` items at ${JUDGE_PRICE['input_per_mtok']:g}/"
        f"${JUDGE_PRICE['output_per_mtok']:g}; the stub's answers are short, so a real model's answers "
        f"cost more.",
        table(result),
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.time_to_routable", description=__doc__.splitlines()[0])
    p.add_argument("--latency-ms", type=float, help="the stub's latency per answer (default 1000; quick 200)")
    p.add_argument("--concurrency", type=int, nargs="+", help="profiling concurrencies (default 8 32; quick 32)")
    p.add_argument("--quick", action="store_true", help="a short run for sanity checks")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="the gateway's embedding cache")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON; '-' prints one object on stdout")
    p.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = p.parse_args(argv)
    latency_ms = args.latency_ms or (200.0 if args.quick else 1000.0)
    concurrencies = args.concurrency or ([32] if args.quick else [8, 32])
    if latency_ms <= 0 or min(concurrencies) < 1:
        p.error("--latency-ms must be > 0 and --concurrency >= 1")
    with tempfile.TemporaryDirectory(prefix="uniroute-ttr-") as tmp:
        result = measure(latency_ms, concurrencies, args.cache_dir, Path(tmp))
    report.publish(result, "time_to_routable", argv, args.json, table,
                   ("benchmarks.time_to_routable", docs_section) if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
