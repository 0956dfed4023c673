"""Run any ASGI app on a real socket for a test: `serve(app)` gives its base URL.

    with serve(app) as base_url:            # sync tests and fixtures
        httpx.get(base_url + "/v1/models")

    async with serve(app) as base_url:      # async tests: start and stop do not block the loop
        ...

Each server runs uvicorn in its own daemon thread with its own event loop, on a socket bound
to a free port before uvicorn starts (no fixed ports, no race for the port), so any number can
run at once. The URL is returned only once uvicorn has run the app's lifespan startup and
accepts connections; a startup failure is raised in the test. Leaving the block stops the
server, closing its connections (requests still running are cancelled after
`graceful_timeout_s`), and runs the app's lifespan shutdown.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from app.runtime.workers import bind


class ServerStartError(RuntimeError):
    """The app could not be served (its startup failed or took too long)."""


class serve:  # noqa: N801 - used like a function: `with serve(app) as url`
    """A context manager (sync or async) serving `app` on `host` at a free port; yields the base URL."""

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        *,
        startup_timeout_s: float = 20.0,
        graceful_timeout_s: float = 2.0,
    ) -> None:
        self.app = app
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.graceful_timeout_s = graceful_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> str:
        """Start the server; returns its base URL once it accepts connections."""
        ipv6 = ":" in self.host
        sock = bind(self.host, 0)  # as the gateway's workers bind theirs (TCP_NODELAY on each connection)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=port,
            # The plain asyncio loop: no process-wide event loop policy is touched.
            loop="asyncio",
            lifespan="auto",
            log_level="warning",
            timeout_graceful_shutdown=self.graceful_timeout_s,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, args=(sock,), name=f"serve:{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                sock.close()
                raise ServerStartError(f"the app did not start: {self._error!r}") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"the app did not start within {self.startup_timeout_s} s")
            time.sleep(0.01)
        return f"http://[{self.host}]:{port}" if ipv6 else f"http://{self.host}:{port}"

    def _run(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - uvicorn exits startup failures with SystemExit
            self._error = exc

    def stop(self) -> None:
        """Stop the server and wait for its thread; safe to call twice."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(self.graceful_timeout_s + 5.0)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5.0)
        self._server = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> str:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
