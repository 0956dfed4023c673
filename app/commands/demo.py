"""`uniroute demo`: the gateway in front of the replay upstream's 11 RouterBench LLMs, no keys needed.

The replay upstream answers from the LLMs' recorded RouterBench answers. Each LLM is registered
with its profile computed from its recorded labels on the representative set, and priced per
request at its mean RouterBench cost (USD), so a first request from the openai SDK is routed
for real.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from app.commands.serve import serve
from app.config import RESOURCES, CostConfig, ModelConfig, Settings
from models_registry.repset import load_repset
from router_core.datasets import RoutingDataset, load_routerbench

ROUTERBENCH_DIR = RESOURCES / "routerbench_zs"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve the gateway in front of the replay upstream (demo, no API keys)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--upstream-port", type=int, default=8001)
    p.add_argument("--latency-scale", type=float, default=1.0,
                   help="replay upstream latency multiplier (0 = instant)")
    p.add_argument("--workdir", default=".uniroute/demo", help="where the demo keeps its registry")
    p.set_defaults(func=run)


def demo_models(dataset: RoutingDataset, repset_ids: list[str], base_url: str, workdir: Path) -> list[ModelConfig]:
    """One ModelConfig per RouterBench LLM: recorded labels on the representative prompts as its
    scores, mean recorded cost as its per-request price."""
    row = {pid: i for i, pid in enumerate(dataset.ids)}
    rows = [row[pid] for pid in repset_ids if pid in row]
    scores_dir = workdir / "scores"
    scores_dir.mkdir(parents=True, exist_ok=True)
    models = []
    for j, name in enumerate(dataset.models):
        scores = {dataset.ids[i]: float(dataset.scores[i, j]) for i in rows if not np.isnan(dataset.scores[i, j])}
        path = scores_dir / f"{j:02d}.json"
        path.write_text(json.dumps(scores))
        price = float(np.nanmean(dataset.costs[:, j])) if dataset.costs is not None else 0.0
        models.append(ModelConfig(name=name, base_url=base_url, upstream_model=name,
                                  cost=CostConfig(per_request=price), scores_file=str(path)))
    return models


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
        sys.executable, "-m", "app.cli", "replay-upstream", "--host", "127.0.0.1",
        "--port", str(args.upstream_port), "--latency-scale", str(args.latency_scale),
    ])
    try:
        base_url = f"http://127.0.0.1:{args.upstream_port}/v1"
        wait_until_up(f"{base_url}/models")
        settings = Settings(host=args.host, port=args.port, sqlite_path=str(workdir / "registry.db"))
        dataset = load_routerbench(ROUTERBENCH_DIR)
        repset = load_repset(settings.repset_path)
        settings.models = demo_models(dataset, [item.id for item in repset.items], base_url, workdir)
        print(f"uniroute demo: replay upstream at {base_url}, gateway at http://{args.host}:{args.port}/v1 "
              f"(model 'uniroute' or 'uniroute:<cost weight>')", file=sys.stderr)
        serve(settings)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    return 0
