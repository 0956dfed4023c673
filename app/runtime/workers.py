"""Several worker processes serving the gateway on one listening socket (`uniroute serve` with
`workers` > 1; README: Workers).

The supervisor binds the socket, then starts each worker as a fresh interpreter (multiprocessing
`spawn`: no fork of a process holding threads or torch state) that inherits the socket, builds
its own app and serves it with uvicorn; the kernel hands each new connection to one of them.
Prometheus metrics go to files in one directory (`PROMETHEUS_MULTIPROC_DIR`) that every worker's
/metrics sums (app/runtime/metrics.py). A worker that exits is reported and replaced; one that
keeps dying at start stops the whole server rather than spin. SIGTERM or SIGINT stop every
worker gracefully (uvicorn finishes the requests in flight for up to `drain_s`); a worker whose
supervisor died stops by itself.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from app.runtime.config import Settings

log = logging.getLogger("uniroute.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A worker that exits sooner than this after its start failed to start; this many such exits in a
# row stop the server (a bad config or an unreadable registry would otherwise restart forever).
QUICK_EXIT_S = 15.0
QUICK_EXITS_TO_GIVE_UP = 5
# How long a stopping worker may take for its own shutdown once its drain (`drain_s`) is over,
# before it is killed: the app's shutdown lets go of its profiling jobs and writes what it holds
# (the capture waits up to 5 s for its writes).
SHUTDOWN_S = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (bound as uvicorn binds its own)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Named TCP, not left as protocol 0: asyncio's loop (serve's fallback without uvloop, which
    # does this itself) turns Nagle's algorithm off (TCP_NODELAY) only on connections from sockets
    # that say so. With it on, the body uvicorn writes after a response's head waits for the
    # client's delayed ACK, 40 ms on Linux, on every kept-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def metrics_dir() -> tuple[Path, bool]:
    """The directory the workers' metric files go to, emptied, and whether this server made it
    (and removes it at the end): `PROMETHEUS_MULTIPROC_DIR` when set, else a new temporary one."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's counts must not add to this one's
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="uniroute-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)  # the spawned workers inherit it before importing prometheus_client
    return path, True


def _worker(settings_data: dict, sock: socket.socket, options: dict) -> None:
    """One worker: its own app on the shared socket, until SIGTERM/SIGINT or the supervisor's death."""
    import uvicorn

    from app.api.main import create_app

    settings = Settings(**settings_data)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    # Said on every stopped profiling job; the scrape drops such series itself (metrics.exposition).
    warnings.filterwarnings("ignore", "Removal of labels has not been implemented", UserWarning)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_stop_with, args=(parent.sentinel,), daemon=True, name="uniroute-parent").start()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
    server.run(sockets=[sock])


def _stop_with(parent_sentinel: int) -> None:
    """Stop this worker gracefully once the supervisor is gone (even killed outright)."""
    wait([parent_sentinel])
    log.warning("the supervisor is gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Starts `count` workers on `sock` and keeps that many running until told to stop."""

    def __init__(self, settings: Settings, count: int, sock: socket.socket, options: dict) -> None:
        self.count = count
        self.sock = sock
        self.options = options
        # Settings travel to each worker through multiprocessing's pipe (not the environment).
        self.settings_data = settings.model_copy(update={"workers": count}).model_dump(mode="json")
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, tuple[BaseProcess, float]] = {}  # sentinel -> (process, started at)
        self._stopping = threading.Event()
        self._stop_wait_s = settings.drain_s + SHUTDOWN_S

    def stop(self, *_: object) -> None:
        """Ask the supervisor to stop (a signal handler)."""
        self._stopping.set()

    def _start_one(self) -> None:
        process = self._context.Process(target=_worker, args=(self.settings_data, self.sock, self.options),
                                        name="uniroute-worker")
        process.start()
        self._workers[process.sentinel] = (process, time.monotonic())
        log.info("started worker %d", process.pid)

    def run(self) -> int:
        """Serve until stopped; 0 once stopped, 1 when workers kept dying at start."""
        from prometheus_client import multiprocess

        for _ in range(self.count):
            self._start_one()
        quick_exits = 0
        try:
            while not self._stopping.is_set():
                for sentinel in wait(list(self._workers), timeout=0.5):
                    process, started = self._workers.pop(sentinel)
                    process.join()
                    multiprocess.mark_process_dead(process.pid)  # its live gauges go; its counters stay
                    if self._stopping.is_set():
                        continue
                    lived = time.monotonic() - started
                    quick_exits = quick_exits + 1 if lived < QUICK_EXIT_S else 0
                    log.error("worker %d exited with code %s after %.0f s", process.pid, process.exitcode, lived)
                    if quick_exits >= QUICK_EXITS_TO_GIVE_UP:
                        log.error("%d workers in a row exited within %.0f s of starting: stopping the server",
                                  quick_exits, QUICK_EXIT_S)
                        return 1
                    self._start_one()
            return 0
        finally:
            self._stop_all()

    def _stop_all(self) -> None:
        # The workers close their copies of the socket as they begin to drain; with this one open
        # the kernel would still queue new connections that nobody accepts (each waits for its
        # client's timeout) instead of refusing them, which sends the client to another replica.
        self.sock.close()
        processes = [p for p, _ in self._workers.values()]
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        deadline = time.monotonic() + self._stop_wait_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker %d did not stop within %.0f s: killing it", process.pid, self._stop_wait_s)
                process.kill()
                process.join()
        self._workers.clear()


def run_workers(settings: Settings, count: int, options: dict) -> int:
    """Serve the gateway from `count` worker processes on one socket, with uvicorn `options`
    (picklable) for each; returns when stopped by SIGTERM or SIGINT (0), or 1 when workers kept
    dying at start."""
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:  # as uvicorn says it for one process
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    path, made = metrics_dir()
    supervisor = Supervisor(settings, count, sock, options)
    previous = {sig: signal.signal(sig, supervisor.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info("serving on http://%s:%d with %d workers", settings.host, settings.port, count)
    try:
        return supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        if made:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(path, ignore_errors=True)
