"""The processes a benchmark runs against: the upstream stub and the gateway, each started as its
own process on a free loopback port, and a watcher of a process's CPU time and memory.

The gateway is `python -m app.cli.main serve`, configured only as a user would: `UNIROUTE_*`
environment variables (none inherited from the caller's environment) and a YAML config file
whose models point at the stub, each with precomputed scores on the representative set, so it
is routable as soon as the gateway is ready.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The gateway's on-disk embedding cache holds only the representative set's vectors (request
# prompts are never written): shared by every run, so only the first embeds it.
DEFAULT_CACHE_DIR = ROOT / ".uniroute" / "cache"
GATEWAY_READY_TIMEOUT_S = 600.0


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_STARTED = time.monotonic()


def log(message: str) -> None:
    """Progress goes to stderr, so stdout stays for results; each line says when since the start."""
    print(f"[{time.monotonic() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


class Service:
    """A process this benchmark started, its base URL and its log file; stopped by its own pid."""

    def __init__(self, name: str, argv: Sequence[str], url: str, log_path: Path,
                 env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.name = name
        self.url = url
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(list(argv), cwd=cwd, env=dict(env) if env is not None else None,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's output, for error messages."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_until(self, path: str, timeout_s: float) -> None:
        """Block until GET `path` answers 200; raise with the process's log if it dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(self.url + path, timeout=2.0)
                if response.status_code == 200:
                    return
                # A gateway whose start-up failed says so and stays up: waiting on is pointless.
                if response.headers.get("content-type", "").startswith("application/json") \
                        and response.json().get("status") == "failed":
                    raise RuntimeError(f"{self.name} failed to start: {response.json().get('error')}")
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not up within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the process (kill it if it does not end in 10 s); safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_stub(workdir: Path, *, delay_ms: float = 5.0, fail_rate: float = 0.0, cut_rate: float = 0.0,
               name: str = "stub") -> Service:
    """The upstream stub (benchmarks.stub_upstream) in its own process, up and answering."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.stub_upstream", "--port", str(port), "--delay-ms", str(delay_ms),
            "--fail-rate", str(fail_rate), "--cut-rate", str(cut_rate)]
    service = Service(name, argv, f"http://127.0.0.1:{port}", workdir / f"{name}.log")
    try:
        service.wait_until("/v1/models", 60.0)
    except BaseException:
        service.stop()
        raise
    return service


@dataclass(frozen=True)
class StubModel:
    """A model registered in the gateway, answered by a stub: its price and its mean score on the
    representative set (per-prompt scores are drawn around it, so its error differs by cluster)."""

    name: str
    base_url: str
    per_request: float
    mean_score: float


def repset_ids() -> list[str]:
    """Ids of the gateway's default representative set."""
    from app.runtime.config import Settings
    from router_core.repset import load_repset

    return [item.id for item in load_repset(Settings().repset_path).items]


def write_config(workdir: Path, models: Sequence[StubModel], seed: int = 0) -> Path:
    """A gateway config file registering `models`, each with per-prompt 0/1 scores drawn with
    probability `mean_score` (seeded): routable at start, no profiling needed."""
    rng = np.random.default_rng(seed)
    ids = repset_ids()
    entries = []
    for m in models:
        scores_path = workdir / f"scores-{m.name}.json"
        scores = (rng.uniform(size=len(ids)) < m.mean_score).astype(float)
        scores_path.write_text(json.dumps(dict(zip(ids, scores.tolist(), strict=True))))
        entries.append({"name": m.name, "base_url": m.base_url + "/v1", "upstream_model": m.name,
                        "cost": {"per_request": m.per_request}, "scores_file": str(scores_path)})
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


def start_gateway(workdir: Path, *, config: Path | None = None, env: Mapping[str, str] | None = None,
                  state_dir: str | None = None, cache_dir: str | Path = DEFAULT_CACHE_DIR,
                  name: str = "gateway", root: Path = ROOT, launcher: Sequence[str] = ()) -> Service:
    """`python -m app.cli.main serve` on a free port with a fresh SQLite registry in `workdir`, ready.
    `root` is the source tree it runs from (another checkout, to compare two versions);
    `launcher` a command it runs under (valgrind, for benchmarks.instructions).

    `env` adds `UNIROUTE_*` settings; none of the caller's own `UNIROUTE_*` variables is passed on.
    """
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("UNIROUTE_")}
    child_env.update({
        "UNIROUTE_SQLITE_PATH": str(workdir / f"{name}-registry.db"),
        "UNIROUTE_CACHE_DIR": str(Path(cache_dir).resolve()),
        "UNIROUTE_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    if state_dir is not None:
        child_env["UNIROUTE_STATE_DIR"] = str(Path(state_dir).resolve())
    # One process unless `env` asks for workers: the figures describe one gateway process.
    child_env["UNIROUTE_WORKERS"] = "1"
    child_env.update(env or {})
    argv = [*launcher, sys.executable, "-m", "app.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if config is not None:
        argv += ["--config", str(config)]
    service = Service(name, argv, f"http://127.0.0.1:{port}", workdir / f"{name}.log", child_env, root)
    try:
        service.wait_until("/readyz", GATEWAY_READY_TIMEOUT_S)
        wait_workers_ready(service, int(child_env["UNIROUTE_WORKERS"]), GATEWAY_READY_TIMEOUT_S)
    except BaseException:
        service.stop()
        raise
    return service


def wait_workers_ready(service: Service, workers: int, timeout_s: float) -> None:
    """Block until `workers` distinct worker processes have answered /readyz 200 (each new
    connection goes to one worker, which says its process id at /healthz)."""
    ready: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(ready) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service.name}: {len(ready)} of {workers} workers ready:\n{service.log_tail()}")
        try:
            with httpx.Client(base_url=service.url, timeout=5.0) as client:
                pid = client.get("/healthz").json()["worker"]
                if client.get("/readyz").status_code == 200:
                    ready.add(pid)
        except httpx.TransportError:
            pass
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    """A process's resident memory now, in MB."""
    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live descendants (a server's worker
    processes, when it runs several)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += _process_cpu_seconds(proc)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return total


def _process_cpu_seconds(proc: psutil.Process) -> float:
    # psutil reads /proc/PID/stat, counted in clock ticks (10 ms here): a short run of a 0.5 ms
    # request read 0 or 1 tick. Linux's per-process CPU clock counts nanoseconds; its clock id is
    # the kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED).
    if sys.platform == "linux":
        try:
            return time.clock_gettime((~proc.pid << 3) | 2)
        except OSError as exc:
            raise ProcessLookupError(proc.pid) from exc
    times = proc.cpu_times()
    return times.user + times.system


def peak_rss_bytes(pid: int) -> int | None:
    """The process's lifetime peak resident memory (Linux VmHWM), or None where not available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class ProcessUsage:
    """A process's CPU and memory over a watched interval."""

    cpu_percent: float  # CPU time / wall time x 100: 200 = both cores of this machine busy
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float  # the highest RSS sampled (every `interval_s`) in the interval

    def to_dict(self) -> dict:
        return {"cpu_percent": self.cpu_percent, "rss_start_mb": self.rss_start_mb,
                "rss_end_mb": self.rss_end_mb, "rss_peak_mb": self.rss_peak_mb}


class ProcessWatcher:
    """`with ProcessWatcher(pid) as w: ...; w.usage`: CPU time and sampled RSS of a process and its
    children (a gateway's workers), threads included, while the block runs. Samples from a
    thread, so any event loop may run."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.usage: ProcessUsage | None = None
        self._stop = threading.Event()
        self._peak = 0
        self._thread = threading.Thread(target=self._sample, name=f"watch:{pid}", daemon=True)

    def _tree(self) -> list[psutil.Process]:
        return [self.process, *self.process.children(recursive=True)]

    def _rss(self) -> int:
        rss = 0
        for process in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                rss += process.memory_info().rss
        self._peak = max(self._peak, rss)
        return rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._rss()
            except psutil.Error:
                return

    def __enter__(self) -> ProcessWatcher:
        # The nanosecond clock of `cpu_seconds`: a quick run's 20 requests spend about one 10 ms
        # tick of /proc/PID/stat, and read 0% CPU there.
        self._cpu0, self._t0 = cpu_seconds(self.process.pid), time.perf_counter()
        self._rss0 = self._rss()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        cpu = cpu_seconds(self.process.pid)
        wall = time.perf_counter() - self._t0
        rss_end = self._rss()
        mb = 1024 * 1024
        self.usage = ProcessUsage(
            cpu_percent=100.0 * (cpu - self._cpu0) / wall if wall > 0 else 0.0,
            rss_start_mb=self._rss0 / mb, rss_end_mb=rss_end / mb, rss_peak_mb=self._peak / mb)

