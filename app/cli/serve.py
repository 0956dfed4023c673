"""`uniroute serve`: run the gateway with uvicorn, in one process or several workers."""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import signal

import uvicorn

from app.api.main import create_app
from app.cli import one_line_errors
from app.runtime.config import ConfigError, Settings, load_settings, worker_count
from app.runtime.migration import check_startup_state
from app.runtime.workers import LOG_FORMAT, run_workers
from models_registry.base import RegistryUnavailable
from models_registry.factory import check_registry
from models_registry.records import RegistryValidationError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the routing gateway")
    p.add_argument("--config", help="YAML config file (also UNIROUTE_CONFIG)")
    p.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default from config: 8000)")
    p.add_argument("--workers", type=int, help="worker processes (default from config: one per usable CPU)")
    p.set_defaults(func=run)


@one_line_errors("serve", ConfigError, 2, "error: ")
def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
                 if v is not None}
    settings = load_settings(args.config, **overrides)
    # A registry the gateway cannot open fails every start: said here in one line, rather than as
    # each worker's start-up traceback while the workers are restarted into the same failure.
    try:
        asyncio.run(check_registry(settings.redis_url, settings.sqlite_path))
    except (RegistryUnavailable, RegistryValidationError) as exc:
        raise ConfigError(f"cannot use the registry: {exc}") from None
    # So is a router state that cannot load: each worker would log its traceback, then answer 503.
    try:
        asyncio.run(check_startup_state(settings))
    except RegistryUnavailable as exc:  # its state store, in the registry's file
        raise ConfigError(f"cannot use the registry: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"cannot load the router state: {exc}") from None
    return serve(settings)


def fast_server() -> dict[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools (both of uvicorn[standard]),
    named outright where installed, asyncio and h11 elsewhere."""
    def installed(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {"loop": "uvloop" if installed("uvloop") else "asyncio",
            "http": "httptools" if installed("httptools") else "h11"}


def server_options(settings: Settings) -> dict:
    """uvicorn's options, the same for the one process and for each worker."""
    return {**fast_server(), "log_level": settings.log_level, "access_log": False,
            "timeout_keep_alive": settings.keep_alive_s, "timeout_graceful_shutdown": settings.drain_s}


def serve(settings: Settings) -> int:
    """Serve the gateway until interrupted: in this process when `workers` is 1, else from that
    many worker processes on one socket. 0 once stopped."""
    count = worker_count(settings)
    if count > 1:
        logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
        return run_workers(settings, count, server_options(settings))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn raises the signal that stopped it again once it has shut down, and SIGTERM's default
    # action would then end a cleanly stopped process by the signal (exit 143). Taken as Ctrl-C
    # is (KeyboardInterrupt, which uvicorn.run absorbs), it exits 0, as the workers' supervisor does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **server_options(settings))
    return 0
