"""`uniroute demo`: the gateway in front of the replay upstream's recorded LLMs, no keys needed.

The replay upstream answers from the LLMs' recorded RouterBench and arena-bench-v1 answers (17
LLMs). Each LLM the representative set has recorded labels for is registered with its profile
computed from them, and priced from the recorded data (app.demo.models), so a first request
from the openai SDK is routed for real.

The replay upstream is a child process, stopped with the demo however the demo is stopped
(Ctrl-C, SIGINT or SIGTERM). A port already taken by another process is refused up front: the
demo never routes to an upstream it did not start (an old demo's, say), and does not start its
upstream only to fail binding its gateway.
"""
from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.cli import UsageError, one_line_errors, port_number
from app.cli.serve import serve
from app.demo import ROUTERBENCH_DIR
from app.demo.arena import load_arena
from app.demo.models import demo_configs, judge_config
from app.runtime.config import ConfigError, load_settings
from router_core.datasets import load_routerbench
from router_core.repset import load_repset

DEMO_PROFILE_MAX_TOKENS = 2048


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve the gateway in front of the replay upstream (demo, no API keys)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--upstream-port", type=port_number, default=8001)
    p.add_argument("--latency-scale", type=float, default=1.0,
                   help="replay upstream latency multiplier (0 = instant)")
    p.add_argument("--workdir", default=".uniroute/demo", help="where the demo keeps its registry")
    p.set_defaults(func=run)


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on host:port already (binding as the servers do, with
    SO_REUSEADDR, so a port a stopped server left in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Block until `url`, served by `process`, answers 200; UsageError if the process exits
    first, RuntimeError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UsageError(f"the replay upstream exited with status {process.returncode} before serving {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout_s:.0f} s")


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Terminate a child process and wait for it; kill it if it does not end in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@one_line_errors("demo", UsageError, 2, "error: ")
def run(args: argparse.Namespace) -> int:
    if port_taken("127.0.0.1", args.upstream_port):
        raise UsageError(f"port {args.upstream_port} (the replay upstream's) is in use by another process, "
                         f"perhaps an earlier demo's replay upstream: stop it or pass --upstream-port")
    if port_taken(args.host, args.port):
        raise UsageError(f"port {args.port} (the gateway's) is in use by another process, perhaps an earlier "
                         f"demo: stop it or pass --port")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # One worker: a trial on one machine, whose one child process is its replay upstream.
    # Room for the recorded open-ended answers (99th percentile about 1,100 tokens): a cut
    # answer is not the recorded one, and the replay judge has no rating for it.
    try:
        settings = load_settings(host=args.host, port=args.port, sqlite_path=str(workdir / "registry.db"),
                                 profile_max_tokens=DEMO_PROFILE_MAX_TOKENS, workers=1)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    # SIGTERM stops the demo as Ctrl-C does: uvicorn shuts down on either, then re-raises the
    # signal, which by default would end this process before it stops its child.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    upstream = subprocess.Popen([
        sys.executable, "-m", "app.cli.main", "replay-upstream", "--host", "127.0.0.1",
        "--port", str(args.upstream_port), "--latency-scale", str(args.latency_scale),
    ])
    try:
        base_url = f"http://127.0.0.1:{args.upstream_port}/v1"
        wait_until_up(f"{base_url}/models", upstream)
        repset, arena = load_repset(settings.repset_path), load_arena()
        settings.models = demo_configs(load_routerbench(ROUTERBENCH_DIR), arena, repset.items, base_url, workdir)
        judge = judge_config(arena, repset.items, base_url)
        if judge is not None:  # the set has llm_judge items: the replay judge grades them
            settings.models.append(judge)
            settings.judge_model = judge.name
        print(f"uniroute demo: replay upstream at {base_url}, gateway at http://{args.host}:{args.port}/v1 "
              f"(model 'uniroute' or 'uniroute:<cost weight>')", file=sys.stderr)
        serve(settings)  # returns on SIGINT or SIGTERM
    except KeyboardInterrupt:
        pass  # stopped before the gateway served
    finally:
        stop(upstream)
        signal.signal(signal.SIGTERM, previous)
    return 0
