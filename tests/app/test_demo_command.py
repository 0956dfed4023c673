"""`uniroute demo` (what `make run` starts) serves the routed demo on its own, takes the admin
key from the environment, and stops cleanly with its replay upstream."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from openai import OpenAI

from tests.app.conftest import wait_ready
from tests.support.redis_server import free_port


def test_demo_serves_routed_answers_and_the_admin_api(tmp_path, shared_cache):
    port, upstream_port = free_port(), free_port()
    env = {**os.environ, "UNIROUTE_ADMIN_KEY": "demo-admin", "UNIROUTE_CACHE_DIR": shared_cache}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli.main", "demo", "--port", str(port), "--upstream-port",
                             str(upstream_port), "--latency-scale", "0", "--workdir", str(tmp_path / "demo")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_listening(base)
        wait_ready(base, timeout_s=180)
        raw = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0).chat.completions.with_raw_response.create(
            model="uniroute", messages=[{"role": "user", "content": "Which gas do plants take in? A) O2 B) CO2"}])
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-uniroute-model"] == raw.parse().model
        models = httpx.get(base + "/admin/models", headers={"authorization": "Bearer demo-admin"}, timeout=10)
        assert models.status_code == 200 and len(models.json()["data"]) == 11
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"gateway at http://127.0.0.1:{port}/v1" in output
    with pytest.raises(httpx.ConnectError):  # the replay upstream stopped with the demo
        httpx.get(f"http://127.0.0.1:{upstream_port}/v1/models", timeout=2)


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
