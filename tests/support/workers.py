"""`uniroute serve --workers N` as real processes on a real socket, and requests to each worker."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]


class Served:
    """A running `uniroute serve --workers N`: its supervisor process, base URL and log, and the
    headers sent with every request (the admin key)."""

    def __init__(self, proc: subprocess.Popen, base: str, log: Path, headers: dict[str, str]) -> None:
        self.proc, self.base, self.log, self.headers = proc, base, log, headers

    def on_new_connection(self, *requests: tuple[str, str, dict | None]) -> tuple[int, list[httpx.Response]]:
        """(worker pid, responses): `/healthz` then `requests` (method, path, JSON body) on one new
        connection, so one worker answers them all."""
        with httpx.Client(base_url=self.base, timeout=30) as client:
            pid = client.get("/healthz").json()["worker"]
            return pid, [client.request(method, path, json=body, headers=self.headers) for method, path, body in requests]

    def each_worker(self, count: int, *requests: tuple[str, str, dict | None], timeout_s: float = 60.0,
                    accept=lambda responses: True, sent: list | None = None) -> dict[int, list[httpx.Response]]:
        """Send `requests` on new connections until `count` workers have answered them in a way
        `accept` takes; {pid: responses}. Every answer goes to `sent` too, when given."""
        found: dict[int, list[httpx.Response]] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < count:
            assert self.proc.poll() is None, f"the server exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"only workers {sorted(found)} answered:\n{self.log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.TransportError):
                pid, responses = self.on_new_connection(*requests)
                if sent is not None:
                    sent.extend(responses)
                if pid not in found and accept(responses):
                    found[pid] = responses
        return found


@contextlib.contextmanager
def serve_workers(env: dict[str, str], log: Path, workers: int = 2, headers: dict[str, str] | None = None,
                  args: tuple[str, ...] = ()) -> Iterator[Served]:
    """`uniroute serve --workers N [args]` on a free port, once every worker is ready; stopped
    (SIGTERM, then killed) on leaving."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli.main", "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", str(workers), *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    served = Served(proc, f"http://127.0.0.1:{port}", log, headers or {})
    try:
        served.each_worker(workers, ("GET", "/readyz", None), timeout_s=300,
                           accept=lambda responses: responses[0].status_code == 200)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


