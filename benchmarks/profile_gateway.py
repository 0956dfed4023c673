"""Where the gateway's time goes under load: `python -m benchmarks.profile_gateway [--clients N]`.

Starts the stub and a gateway (the shipped state of `--embedder`), drives routed short-prompt
requests at N clients, and samples the gateway process with py-spy (`pip install py-spy`) while
it serves. Prints the share of samples per function (inclusive: the function or what it called),
for the gateway's own modules and the libraries they spend in, so a figure that misses its target
can be explained by what bounds it.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks import report
from benchmarks.gateway import resolve_state, stub_models
from benchmarks.loadgen import run, run_load
from benchmarks.services import log, start_gateway, start_stub, write_config
from benchmarks.workload import chat_request

# Frames worth naming: the gateway's code and the layers a request crosses.
WATCHED = ("app/", "router_core/", "models_registry/", "fastapi/", "starlette/", "uvicorn/", "httpx/",
           "httpcore/", "pydantic/", "prometheus_client/", "numpy/", "model2vec/", "sentence_transformers/",
           "torch/", "asyncio/", "uvloop/", "h11/", "httptools/")


def py_spy() -> str:
    """py-spy beside this interpreter (a venv's bin is often not on PATH), else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def fold(raw: str) -> tuple[int, Counter[str]]:
    """Total samples and inclusive samples per watched function, from py-spy's collapsed stacks."""
    total = 0
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            path = where.rsplit(":", 1)[0]
            layer = next((w for w in WATCHED if w in path), None)
            if layer is None:
                continue
            key = f"{layer}{name}"
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
    return total, inclusive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_gateway", description=__doc__)
    p.add_argument("--embedder", default="fast", choices=["accurate", "fast"])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seconds", type=float, default=20.0, help="sampling time (default %(default)s)")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    state_dir = resolve_state(args.embedder, None)
    with tempfile.TemporaryDirectory(prefix="uniroute-profile-") as tmp:
        workdir = Path(tmp)
        with start_stub(workdir, delay_ms=5.0) as stub:
            config = write_config(workdir, stub_models(stub.url))
            with start_gateway(workdir, config=config, state_dir=str(state_dir)) as gateway:
                out = workdir / "profile.txt"
                spy = [py_spy(), "record", "--format", "raw", "--rate", "200", "--duration",
                       str(int(args.seconds)), "--pid", str(gateway.pid), "--output", str(out)]
                log(f"sampling the gateway (pid {gateway.pid}) for {args.seconds:.0f} s at {args.clients} clients ...")
                sampler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                result = run(run_load(gateway.url, lambda i: chat_request("uniroute", "short", i),
                                      concurrency=args.clients, max_requests=10**9, max_seconds=args.seconds + 2))
                _, err = sampler.communicate()
                if sampler.returncode != 0:
                    print(f"py-spy failed: {err.strip()}", file=sys.stderr)
                    return 1
                raw = out.read_text()
    total, inclusive = fold(raw)
    ok = sum(o.ok for o in result.outcomes)
    print(f"{ok} routed requests in {result.wall_s:.1f} s ({ok / result.wall_s:.0f}/s) at {args.clients} "
          f"clients; {total} samples of the gateway process. {report.machine_line(report.machine())}")
    print(report.markdown_table(["function (layer/name)", "share of samples"],
                                [[k, f"{100 * n / total:.1f}%"] for k, n in inclusive.most_common(args.top)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
