"""SIGKILL a real gateway process while it writes to its SQLite registry, restart it on the same
file: the registry opens and holds every model and graded answer acknowledged before the kill,
and the interrupted profiling job resumes.

(test_profiling_resume.py stops the gateway in-process and cleanly; here the process dies with
no chance to close anything, mid-write, holding the job's lock.)
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import ROUTERBENCH_SETTINGS
from tests.app.test_admin import ADMIN, AUTH, admin, wait_job

REPO = Path(__file__).resolve().parents[2]
CONCURRENCY = 4
SLOW = "slow:delay=0.05"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gateway_process(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m app.cli.main serve` on a free port; yields (process, base URL) once it is ready.
    Leaving the block kills the process if it still runs."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"the gateway exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the gateway was not ready:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def scores_of(i: int, repset_ids: list[str]) -> dict[str, float]:
    """Model i's scores: right on every (i+2)-th prompt, so each model has its own accuracy."""
    return {pid: float(k % (i + 2) == 0) for k, pid in enumerate(repset_ids)}


class Registrar(threading.Thread):
    """Registers models with precomputed scores, one after another, until stopped or the gateway
    dies; `acknowledged` holds those the gateway answered 202 for."""

    def __init__(self, base: str, upstream_url: str, repset_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.base, self.upstream_url, self.repset_ids = base, upstream_url, repset_ids
        self.acknowledged: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            body = {"name": f"scored-{i}", "base_url": self.upstream_url, "cost": {"per_request": i + 1},
                    "scores": scores_of(i, self.repset_ids)}
            try:
                r = httpx.post(self.base + "/admin/models", json=body, headers=AUTH, timeout=30)
            except httpx.TransportError:
                return  # killed mid-request: this registration may or may not have landed
            assert r.status_code == 202, r.text
            self.acknowledged.append(i)
            i += 1


def test_sigkill_mid_write_loses_nothing_acknowledged_and_the_job_resumes(tmp_path, shared_cache, fault_upstream,
                                                                         repset_ids):
    upstream, upstream_url = fault_upstream
    db = tmp_path / "registry.db"
    log = tmp_path / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIROUTE_")}
    env.update(UNIROUTE_SQLITE_PATH=str(db), UNIROUTE_CACHE_DIR=shared_cache, UNIROUTE_ADMIN_KEY=ADMIN,
               UNIROUTE_PROFILE_CONCURRENCY=str(CONCURRENCY), UNIROUTE_LOG_LEVEL="warning",
               UNIROUTE_STATE_DIR=ROUTERBENCH_SETTINGS["state_dir"],
               UNIROUTE_REPSET_PATH=ROUTERBENCH_SETTINGS["repset_path"],
               UNIROUTE_WORKERS="1",  # the process killed is the one writing (test_workers.py: several)
               UNIROUTE_LOCK_TTL_S="3")  # the dead process's job lock expires in 3 s, not the default 30

    with gateway_process(env, log) as (proc, gw):
        r = admin(gw, "POST", "/models", json={"name": "slow", "base_url": upstream_url, "upstream_model": SLOW,
                                                "cost": {"per_request": 1}})
        job_id = r.json()["job_id"]
        registrar = Registrar(gw, upstream_url, repset_ids)
        registrar.start()
        # Kill while the job stores answers and the registrar stores models, both mid-stream.
        deadline = time.monotonic() + 120
        while admin(gw, "GET", f"/jobs/{job_id}").json()["done"] < 40 or len(registrar.acknowledged) < 5:
            assert time.monotonic() < deadline and registrar.is_alive(), "no progress before the kill"
            time.sleep(0.05)
        done_before = admin(gw, "GET", f"/jobs/{job_id}").json()["done"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        registrar.stop.set()
        registrar.join(30)
    acknowledged = list(registrar.acknowledged)
    asked_before = len(upstream.received)

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    with gateway_process(env, log) as (_, gw):
        models = {m["name"]: m for m in admin(gw, "GET", "/models").json()["data"]}
        for i in acknowledged:
            model = models[f"scored-{i}"]
            scores = scores_of(i, repset_ids)
            assert model["state"] == "ready" and model["cost"]["per_request"] == i + 1
            assert model["accuracy"] == pytest.approx(sum(scores.values()) / len(scores))
        # The registration in flight at the kill landed whole or not at all.
        in_flight = set(models) - {f"scored-{i}" for i in acknowledged} - {"slow"}
        assert in_flight <= {f"scored-{len(acknowledged)}"}
        assert all(models[name]["state"] == "ready" and models[name]["profile"] for name in in_flight)

        job = admin(gw, "GET", f"/jobs/{job_id}").json()
        assert job["state"] == "running" and job["done"] >= done_before
        assert models["slow"]["state"] == "profiling"
        # The dead process still holds the job's lock: it resumes once that lock expires.
        job = wait_job(gw, job_id, timeout_s=180)
        assert job["state"] == "done" and job["done"] == job["total"]
        assert admin(gw, "GET", "/models/slow").json()["state"] == "ready"

    asked = Counter(req.body["messages"][0]["content"] for req in upstream.received if req.model == SLOW)
    assert len(asked) == job["total"] and done_before <= asked_before < sum(asked.values())
    # Only answers in flight at the kill (at most the job's concurrency) were asked twice.
    assert sum(n - 1 for n in asked.values()) <= CONCURRENCY
