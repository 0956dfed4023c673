"""`uniroute demo` (what `make run` starts) serves the routed demo on its own, takes the admin
key from the environment, and stops cleanly with its replay upstream."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from app.demo.replay_judge import JUDGE_MODEL
from tests.app.conftest import wait_ready
from tests.app.test_replay_arena import ARENA_ONLY, ROUTERBENCH_ONLY, SHARED
from tests.docs.test_readme import readme_block
from tests.support.redis_server import free_port

STAND_IN = "[uniroute replay"
ARENA_PROMPTS = ["How to explain RNA sequencing to a 4 year old?",
                 "solve the equation step by step: x + y = 30 and 2x+3y=80",
                 "Provide a proof of the Banach Fixed Point Theorem"]


def start_demo(tmp_path, shared_cache, port: int, upstream_port: int) -> subprocess.Popen:
    """`uniroute demo` in its own process, its output piped."""
    env = {**os.environ, "UNIROUTE_ADMIN_KEY": "demo-admin", "UNIROUTE_CACHE_DIR": shared_cache}
    return subprocess.Popen([sys.executable, "-m", "app.cli.main", "demo", "--port", str(port), "--upstream-port",
                             str(upstream_port), "--latency-scale", "0", "--workdir", str(tmp_path / "demo")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_demo_serves_routed_answers_and_the_admin_api(tmp_path, shared_cache):
    port, upstream_port = free_port(), free_port()
    proc = start_demo(tmp_path, shared_cache, port, upstream_port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_listening(base)
        wait_ready(base, timeout_s=180)
        raw = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0).chat.completions.with_raw_response.create(
            model="uniroute", messages=[{"role": "user", "content": "Which gas do plants take in? A) O2 B) CO2"}])
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-uniroute-model"] == raw.parse().model
        models = httpx.get(base + "/admin/models", headers={"authorization": "Bearer demo-admin"}, timeout=10)
        # the default set has recorded labels for all 17 LLMs, and llm_judge items: the replay judge too
        assert models.status_code == 200
        assert {m["name"] for m in models.json()["data"]} == ROUTERBENCH_ONLY | SHARED | ARENA_ONLY | {JUDGE_MODEL}
        # The README's first example, as written but for the port: a recorded answer, no stand-in.
        example = readme_block("Two commands on a fresh machine").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        run = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() and STAND_IN not in run.stdout
        # Open-ended prompts go to LLMs profiled on such prompts, which have answers to replay:
        # not to a RouterBench-only LLM whose error there is only its multiple-choice mean.
        client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        for prompt in ARENA_PROMPTS:
            answer = client.chat.completions.create(model="uniroute", messages=[{"role": "user", "content": prompt}])
            assert not answer.choices[0].message.content.startswith(STAND_IN), (prompt, answer.model)
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"gateway at http://127.0.0.1:{port}/v1" in output
    with pytest.raises(httpx.ConnectError):  # the replay upstream stopped with the demo
        httpx.get(f"http://127.0.0.1:{upstream_port}/v1/models", timeout=2)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from Linux /proc")
def test_sigterm_stops_the_demo_and_its_replay_upstream(tmp_path, shared_cache):
    port, upstream_port = free_port(), free_port()
    proc = start_demo(tmp_path, shared_cache, port, upstream_port)
    try:
        wait_listening(f"http://127.0.0.1:{port}")  # the gateway serves: uvicorn handles the signal
        (upstream,) = children(proc.pid)
        assert httpx.get(f"http://127.0.0.1:{upstream_port}/v1/models", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    deadline = time.monotonic() + 5  # the demo waited for it: it is gone, never reparented
    while alive(upstream) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(upstream), f"the replay upstream (pid {upstream}) outlived the demo"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{upstream_port}/v1/models", timeout=2)


@pytest.mark.parametrize("taken", ["upstream", "gateway"])
def test_a_demo_refuses_a_port_another_process_holds(tmp_path, shared_cache, taken):
    port, upstream_port = free_port(), free_port()
    held, option = (upstream_port, "--upstream-port") if taken == "upstream" else (port, "--port")
    with socket.create_server(("127.0.0.1", held)):  # say, an earlier demo's
        proc = start_demo(tmp_path, shared_cache, port, upstream_port)
        output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, output
    assert f"uniroute demo: error: port {held}" in output and option in output
    assert "Traceback" not in output
    free = port if taken == "upstream" else upstream_port
    with pytest.raises(httpx.ConnectError):  # nothing was served, not even the other server
        httpx.get(f"http://127.0.0.1:{free}/v1/models", timeout=2)


def wait_listening(base: str, timeout_s: float = 120.0) -> None:
    """Wait until the demo's gateway accepts connections (it starts after its replay upstream)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"the demo did not listen on {base} within {timeout_s:.0f} s")
