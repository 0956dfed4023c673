"""`uniroute serve`: run the gateway with uvicorn."""
from __future__ import annotations

import argparse
import importlib.util
import logging

import uvicorn

from app.api.main import create_app
from app.runtime.config import Settings, load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the routing gateway")
    p.add_argument("--config", help="YAML config file (also UNIROUTE_CONFIG)")
    p.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default from config: 8000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(args.config, **overrides)
    serve(settings)
    return 0


def fast_server() -> dict[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools (both of uvicorn[standard]),
    named outright where installed, asyncio and h11 elsewhere."""
    def installed(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {"loop": "uvloop" if installed("uvloop") else "asyncio",
            "http": "httptools" if installed("httptools") else "h11"}


def serve(settings: Settings) -> None:
    """Serve the gateway until interrupted."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **fast_server(),
                log_level=settings.log_level, access_log=False, timeout_keep_alive=settings.keep_alive_s)
