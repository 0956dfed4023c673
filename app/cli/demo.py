"""`uniroute demo`: the gateway in front of the replay upstream's 11 RouterBench LLMs, no keys needed.

The replay upstream answers from the LLMs' recorded RouterBench answers. Each LLM is registered
with its profile computed from its recorded labels on the representative set, and priced per
request at its mean RouterBench cost (USD), so a first request from the openai SDK is routed
for real.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.cli.serve import serve
from app.demo import ROUTERBENCH_DIR
from app.demo.models import demo_configs
from app.runtime.config import Settings
from router_core.datasets import load_routerbench
from router_core.repset import load_repset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve the gateway in front of the replay upstream (demo, no API keys)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--upstream-port", type=int, default=8001)
    p.add_argument("--latency-scale", type=float, default=1.0,
                   help="replay upstream latency multiplier (0 = instant)")
    p.add_argument("--workdir", default=".uniroute/demo", help="where the demo keeps its registry")
    p.set_defaults(func=run)


def wait_until_up(url: str, timeout_s: float = 60.0) -> None:
    """Block until `url` answers 200, or raise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout_s:.0f} s")


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    upstream = subprocess.Popen([
        sys.executable, "-m", "app.cli.main", "replay-upstream", "--host", "127.0.0.1",
        "--port", str(args.upstream_port), "--latency-scale", str(args.latency_scale),
    ])
    try:
        base_url = f"http://127.0.0.1:{args.upstream_port}/v1"
        wait_until_up(f"{base_url}/models")
        settings = Settings(host=args.host, port=args.port, sqlite_path=str(workdir / "registry.db"))
        dataset = load_routerbench(ROUTERBENCH_DIR)
        repset = load_repset(settings.repset_path)
        settings.models = demo_configs(dataset, [item.id for item in repset.items], base_url, workdir)
        print(f"uniroute demo: replay upstream at {base_url}, gateway at http://{args.host}:{args.port}/v1 "
              f"(model 'uniroute' or 'uniroute:<cost weight>')", file=sys.stderr)
        serve(settings)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    return 0
